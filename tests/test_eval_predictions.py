"""Reading the official tools' prediction formats and ours."""

import json
from pathlib import Path

import pytest

from longllava.errors import InputError
from longllava.eval.predictions import match_predictions, read_predictions

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


def test_llava_med_answer_file():
    predictions = read_predictions(FIXTURES / "vqa_rad_answers.jsonl")
    assert [p.id for p in predictions] == [str(i) for i in range(8)]
    assert predictions[0].text == "Yes, there is a nodule."
    assert predictions[0].source.endswith("vqa_rad_answers.jsonl:1")


def test_huatuo_output_uses_test_id_and_model_output_not_the_gold_answer():
    predictions = read_predictions(FIXTURES / "huatuo_output.json")
    assert predictions[0].id == "1" and predictions[0].text == "B"
    assert predictions[0].fields["answer"] == "No"  # the gold option travels along
    assert predictions[-1].id == "1"  # padding repeat kept here; scorers decide


def test_skysensegpt_answers_file_reads_answer():
    predictions = read_predictions(FIXTURES / "fitrs_answers.jsonl")
    assert (predictions[1].id, predictions[1].text) == ("2", "blue")


def test_our_jsonl_with_id_and_answer(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"id": "a", "answer": "yes"}\n\n{"question_id": 7, "text": ""}\n',
                    encoding="utf-8")
    predictions = read_predictions(path)
    assert [(p.id, p.text) for p in predictions] == [("a", "yes"), ("7", "")]


@pytest.mark.parametrize("content, message", [
    ("", "is empty"),
    ('{"id": 1, "text": "x"}\n{"id": 2, "text": \n', r":2: not a JSON object"),
    ('{"id": 1, "text": null}\n', "must be a string"),
    ('{"text": "x"}\n', "no id"),
    ('{"id": 1, "prompt": "x"}\n', "no prediction text"),
    ('[1, 2]', "expected a JSON object"),
    ('{"a": 1}', "no id"),
])
def test_bad_prediction_files(tmp_path, content, message):
    path = tmp_path / "p.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError, match=message):
        read_predictions(path)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_predictions(tmp_path / "nope.jsonl")


def test_match_keeps_first_duplicate_when_asked(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps({"id": i, "text": t})
                              for i, t in [(1, "a"), (1, "b"), (2, "c"), (3, "ignored")]),
                    encoding="utf-8")
    matched, duplicates = match_predictions(read_predictions(path), ["1", "2"],
                                            keep_first_duplicate=True, ignored_ids=["3"])
    assert matched["1"].text == "a" and duplicates == 1
