"""FIT-RSFG-VQA exact match as SkySenseGPT scores it (hand-worked fixture)."""

import json
from pathlib import Path

import pytest

from longllava.errors import InputError
from longllava.eval.fit_rsfg import read_fit_rsfg_ground_truth, score_fit_rsfg
from longllava.eval.predictions import Prediction, read_predictions

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


def test_fixture_micro_accuracy_per_category():
    result = score_fit_rsfg(read_fit_rsfg_ground_truth(FIXTURES / "fitrs_vqa_eval.jsonl"),
                            read_predictions(FIXTURES / "fitrs_answers.jsonl"))
    # right: "white"/"White", "3"/"3", "yes"/"Yes"; wrong: "blue", "two" (no number words), "5."
    assert result.metrics["accuracy"] == pytest.approx(50.0)  # micro 3/6 (macro would be 61.1)
    assert result.metrics["per_category"] == {
        "object color": {"n": 2, "correct": 1, "accuracy": 50.0},
        "object count": {"n": 3, "correct": 1, "accuracy": pytest.approx(100 / 3)},
        "object existence": {"n": 1, "correct": 1, "accuracy": 100.0}}
    assert [item.correct for item in result.items] == [True, False, True, False, False, True]


def _ground_truth(tmp_path, records):
    path = tmp_path / "gt.jsonl"
    path.write_text("\n".join(json.dumps(record) for record in records) + "\n", encoding="utf-8")
    return read_fit_rsfg_ground_truth(path)


def test_answers_are_stripped_ground_truth_is_not_and_categories_lower_cased(tmp_path):
    questions = _ground_truth(tmp_path, [
        {"question_id": 1, "image": "a.png", "text": "q", "category": "Object Color",
         "ground_truth": "White"},
        {"question_id": 2, "image": "b.png", "text": "q", "category": "object color",
         "ground_truth": "Red "}])
    result = score_fit_rsfg(questions, [Prediction("1", " white\n", "p:1"),
                                        Prediction("2", "red ", "p:2")])
    assert [item.correct for item in result.items] == [True, False]
    assert result.counts["answers_with_surrounding_whitespace"] == 2
    assert list(result.per_category) == ["object color"]


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="missing field 'category'"):
        _ground_truth(tmp_path, [{"question_id": 1, "ground_truth": "x"}])
    with pytest.raises(InputError, match="occurs twice"):
        _ground_truth(tmp_path, [{"question_id": 1, "category": "c", "ground_truth": "x"}] * 2)
    questions = _ground_truth(tmp_path, [{"question_id": 1, "category": "c", "ground_truth": "x"}])
    with pytest.raises(InputError, match="differs from the ground-truth file"):
        score_fit_rsfg(questions, [Prediction("1", "x", "p:1", {"ground_truth": "y"})])
    with pytest.raises(InputError, match="not in the ground truth"):
        score_fit_rsfg(questions, [Prediction("1", "x", "p:1"), Prediction("2", "x", "p:2")])
