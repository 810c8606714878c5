"""VQA-RAD / PathVQA under the LLaVA-Med protocol, on hand-built cases with hand-computed answers."""

import json
from pathlib import Path

import pytest

from longllava.errors import InputError
from longllava.eval.llava_med import (closed_hit, open_scores, read_llava_med_ground_truth,
                                      score_llava_med_vqa)
from longllava.eval.predictions import Prediction, read_predictions

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


def _score(strict=False):
    return score_llava_med_vqa(read_llava_med_ground_truth(FIXTURES / "vqa_rad_test.json"),
                               read_predictions(FIXTURES / "vqa_rad_answers.jsonl"),
                               benchmark="vqa-rad", strict=strict)


def test_ground_truth_reads_both_spellings_of_conversations():
    questions = read_llava_med_ground_truth(FIXTURES / "vqa_rad_test.json")
    assert [q.answer_type for q in questions] == ["CLOSED"] * 4 + ["OPEN"] * 4
    assert questions[2].answer == "no"  # this record spells the key "conversatons"
    assert questions[0].id == "0"


def test_closed_no_matches_inside_nodule():
    assert closed_hit("there is nodule in right lung", "no") == (True, True)
    assert closed_hit("eyes are normal", "yes") == (True, True)  # "yes" inside "eyes"
    assert closed_hit("there is nodule in right lung", "no", strict=True) == (False, False)
    assert closed_hit("no nodule", "no", strict=True) == (True, True)
    assert closed_hit("yes", "no") == (False, True)


def test_open_scores_count_prediction_occurrences():
    # tp counts the prediction's 3 "lung"s: recall 3/(3+1), precision 3/3, "exact match" 1 word / 3
    scores = open_scores("lung lung lung", "left lung")
    assert scores["recall"] == pytest.approx(0.75)
    assert scores["precision"] == pytest.approx(1.0)
    assert scores["f1"] == pytest.approx(2 * 0.75 / 1.75)
    assert scores["exact_match"] == pytest.approx(1 / 3)
    assert open_scores("", "lung") == {"recall": 0.0, "precision": 0.0, "f1": 0.0,
                                       "exact_match": 0.0}


def test_open_metrics_normalise_a_second_time_like_the_original():
    once = "x" * 32 + "x." * 8  # what one normalize_word leaves of "x." * 40
    assert open_scores(once, "x" * 40)["recall"] == 1.0


def test_fixture_scores_substring_protocol():
    result = _score()
    assert result.protocol == "llava-med"
    # closed: hits on ids 0 ("Yes, there is a nodule.") and 1 ("no" inside "nodule") of 4
    assert result.metrics["closed_accuracy"] == pytest.approx(50.0)
    # run_eval.py drops id 2 (wrong "Yes"): 2 hits / (2 hits + 1 answer without yes/no)
    assert result.metrics["closed_accuracy_run_eval_py"] == pytest.approx(200 / 3)
    assert result.counts["closed_dropped_by_run_eval_py"] == 1
    # open recall: "zero"->"0" vs "None"->"0" = 1; "left lung lower lobe" vs "left lung" = 1;
    # "there are 3 lesions" vs "2" = 0; "" = 0
    assert result.metrics["open_recall"] == pytest.approx(50.0)
    assert result.metrics["precision"] == pytest.approx(100 * (1 + 0.5) / 4)
    assert result.metrics["f1"] == pytest.approx(100 * (1 + 2 / 3) / 4)
    assert result.metrics["exact_match"] == pytest.approx(100 * (1 + 0.5) / 4)
    assert result.counts == {"questions": 8, "closed": 4, "open": 4, "closed_hits": 2,
                             "closed_without_yes_no": 1, "empty_predictions": 1,
                             "closed_dropped_by_run_eval_py": 1}
    assert [item.correct for item in result.items] == [True, True, False, False,
                                                        True, True, False, False]
    assert result.per_category["closed"] == {"n": 4, "score": 50.0}


def test_fixture_scores_strict_protocol():
    result = _score(strict=True)
    assert result.protocol == "llava-med-strict"
    assert result.metrics["closed_accuracy"] == pytest.approx(25.0)  # only id 0 says "yes"
    assert "closed_accuracy_run_eval_py" not in result.metrics
    assert result.metrics["open_recall"] == pytest.approx(50.0)  # open scoring is word-based anyway


def _write(tmp_path, records, name="test.json"):
    path = tmp_path / name
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def _record(i, answer="yes", answer_type="CLOSED"):
    return {"id": i, "image": "x.jpg", "answer_type": answer_type,
            "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": answer}]}


def test_no_open_questions_gives_open_metrics_none(tmp_path):
    questions = read_llava_med_ground_truth(_write(tmp_path, [_record(1)]))
    result = score_llava_med_vqa(questions, [Prediction("1", "yes", "p:1")], benchmark="vqa-rad")
    assert result.metrics["closed_accuracy"] == 100.0
    assert result.metrics["open_recall"] is None


@pytest.mark.parametrize("records, message", [
    ([_record(1), _record(1)], "occurs twice"),
    ([{k: v for k, v in _record(1).items() if k != "answer_type"}], "answer_type"),
    ([_record(1, answer_type="FREE")], "answer_type"),
    ([{k: v for k, v in _record(1).items() if k != "id"}], "missing field 'id'"),
    ([_record(1) | {"conversations": [{"from": "human", "value": "q"}]}], "answer turn"),
])
def test_bad_ground_truth_is_rejected(tmp_path, records, message):
    with pytest.raises(InputError, match=message):
        read_llava_med_ground_truth(_write(tmp_path, records))


def test_missing_duplicate_and_unknown_ids_are_rejected(tmp_path):
    questions = read_llava_med_ground_truth(_write(tmp_path, [_record(1), _record(2)]))
    with pytest.raises(InputError, match="no prediction for 1 of 2"):
        score_llava_med_vqa(questions, [Prediction("1", "yes", "p:1")], benchmark="vqa-rad")
    with pytest.raises(InputError, match="more than once"):
        score_llava_med_vqa(questions, [Prediction("1", "yes", "p:1"), Prediction("1", "no", "p:2"),
                                        Prediction("2", "no", "p:3")], benchmark="vqa-rad")
    with pytest.raises(InputError, match="not in the ground truth"):
        score_llava_med_vqa(questions, [Prediction("1", "yes", "p:1"), Prediction("2", "no", "p:2"),
                                        Prediction("9", "no", "p:3")], benchmark="vqa-rad")
