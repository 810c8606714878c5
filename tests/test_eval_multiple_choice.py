"""VQA-RAD / PathVQA under HuatuoGPT-Vision's multiple-choice protocol (hand-worked cascade cases)."""

import json
from pathlib import Path

import pytest

from longllava.errors import InputError
from longllava.eval.multiple_choice import (extract_choice, read_multiple_choice_ground_truth,
                                            score_multiple_choice)
from longllava.eval.predictions import Prediction, read_predictions

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
GROUND_TRUTH = FIXTURES / "huatuo_evaluation_data.json"


@pytest.mark.parametrize("output, options, expected", [
    ("B", ["Yes", "No"], ("B", "letter")),
    ("The answer is B.", ["CT", "MRI", "X-ray"], ("B", "letter")),
    ("(C) Normal", ["a", "b", "c"], ("C", "letter")),
    ("**B**", ["Yes", "No"], ("B", "letter")),
    ("答案是B", ["Yes", "No"], ("B", "letter")),  # 是 is a word character, listed explicitly
    ("A lesion, so C", ["x", "y", "z"], ("C", "letter")),  # "A " is an article, skipped
    ("b", ["Left", "Right"], ("b", "letter")),  # extracted lower-case: never equals "B"
    ("I think liver, not lung", ["Lung", "Liver"], ("I", "letter")),  # "I" is a standalone letter
    ("Adenocarcinoma", ["Pneumonia", "Adenocarcinoma"], ("B", "option text")),
    ("not the liver but the lung", ["Lung", "Liver"], ("A", "option text")),  # last occurrence
    ("lung mass", ["Lung", "Lung mass"], ("A", "option text")),  # same position: earlier option
    ("pneumothorx present", ["Pneumothorax", "Effusion"], ("A", "similarity")),
    ("", ["Axial", "Coronal"], ("B", "similarity")),  # all ratios 0: the later option
])
def test_letter_cascade(output, options, expected):
    assert extract_choice(output, options) == expected


def test_ground_truth_numbers_records_and_parses_option_strings():
    questions = read_multiple_choice_ground_truth(GROUND_TRUTH)
    assert [q.test_id for q in questions[:3]] == ["1", "2", "3"]
    assert questions[2].options == ("Left", "Right")  # given as "['Left', 'Right']"
    assert questions[7].question_type == "open"


def test_fixture_vqa_rad_from_huatuo_output():
    result = score_multiple_choice(read_multiple_choice_ground_truth(GROUND_TRUTH),
                                   read_predictions(FIXTURES / "huatuo_output.json"),
                                   benchmark="vqa-rad")
    # scored test_ids 1-7 and 11; right: 1 (B), 2 (B.), 4 (option text), 6 (similarity), 11
    assert result.metrics["accuracy"] == pytest.approx(62.5)
    assert result.metrics["per_dataset"]["VQA-RAD"] == {"n": 8, "correct": 5, "accuracy": 62.5}
    assert result.metrics["per_dataset"]["VQA-RAD_modality"] == {"n": 1, "correct": 1,
                                                                 "accuracy": 100.0}
    assert result.counts == {
        "records": 10, "scored": 8, "correct": 5, "skipped_open": 1, "skipped_no_options": 1,
        "duplicate_predictions": 1, "letter_answers": 4, "lowercase_letter_answers": 1,
        "option_text_fallback": 2, "similarity_fallback": 2, "official_scorer_would_crash": 4,
        "gold_unanswerable": 0, "empty_predictions": 1}
    assert [item.id for item in result.items if not item.correct] == ["3", "5", "7"]
    assert any("would crash" in note for note in result.notes)


def test_fixture_pathvqa_scores_only_its_records():
    result = score_multiple_choice(read_multiple_choice_ground_truth(GROUND_TRUTH),
                                   read_predictions(FIXTURES / "huatuo_output.json"),
                                   benchmark="pathvqa")
    assert result.metrics["accuracy"] == 100.0
    assert result.counts["scored"] == 1
    assert result.counts["official_scorer_would_crash"] == 0


def _ground_truth(tmp_path, records):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    return read_multiple_choice_ground_truth(path)


def _mc(answer="No", options=("Yes", "No"), **extra):
    return {"question": "q?", "options": list(options), "answer": answer, "image": ["images/x.jpg"],
            "dataset": "VQA-RAD"} | extra


def test_our_jsonl_with_question_marks_and_duplicates(tmp_path):
    questions = _ground_truth(tmp_path, [_mc(), _mc(answer="?")])
    predictions = [Prediction("1", "B", "p:1"), Prediction("1", "A", "p:2"),
                   Prediction("2", "A", "p:3")]
    result = score_multiple_choice(questions, predictions, benchmark="vqa-rad")
    assert result.metrics["accuracy"] == 50.0  # the first "B" counts; gold "?" is always wrong
    assert result.counts["duplicate_predictions"] == 1
    assert result.counts["gold_unanswerable"] == 1


def test_bad_inputs(tmp_path):
    with pytest.raises(InputError, match="not one of its options"):
        score_multiple_choice(_ground_truth(tmp_path, [_mc(answer="Maybe")]),
                              [Prediction("1", "A", "p:1")], benchmark="vqa-rad")
    with pytest.raises(InputError, match="holds no pathvqa records"):
        score_multiple_choice(_ground_truth(tmp_path, [_mc()]), [Prediction("1", "A", "p:1")],
                              benchmark="pathvqa")
    with pytest.raises(InputError, match="no prediction for 1"):
        score_multiple_choice(_ground_truth(tmp_path, [_mc(), _mc()]),
                              [Prediction("1", "A", "p:1")], benchmark="vqa-rad")
    with pytest.raises(InputError, match="question of test_id 1 differs"):
        score_multiple_choice(_ground_truth(tmp_path, [_mc()]),
                              [Prediction("1", "A", "p:1", {"question": "other?"})],
                              benchmark="vqa-rad")
    with pytest.raises(InputError, match="missing field 'answer'"):
        _ground_truth(tmp_path, [{"question": "q", "options": [], "dataset": "VQA-RAD"}])
    with pytest.raises(InputError, match="not a Python list literal"):
        _ground_truth(tmp_path, [_mc() | {"options": "[Yes, No"}])
