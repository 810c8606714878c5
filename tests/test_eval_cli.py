"""``longllava score`` on each fixture, the written results, and clear errors for bad combinations."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from longllava.cli import main

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
CASES = {
    "llava-med": (["vqa-rad", "--pred", "vqa_rad_answers.jsonl", "--gt", "vqa_rad_test.json"],
                  {"closed_accuracy", "open_recall", "exact_match", "f1", "precision"}),
    "multiple-choice": (["vqa-rad", "--pred", "huatuo_output.json", "--gt",
                         "huatuo_evaluation_data.json", "--protocol", "multiple-choice"],
                        {"accuracy", "per_dataset"}),
    "ct-clip-threshold": (["ct-rate", "--pred", "ct_rate_pred_probabilities.csv", "--gt",
                           "ct_rate_labels.csv"],
                          {"accuracy", "precision", "recall", "f1_macro", "f1_of_means", "auroc",
                           "per_abnormality"}),
    "ct-rate-yes-no": (["ct-rate", "--pred", "ct_rate_answers.jsonl", "--gt", "ct_rate_labels.csv"],
                       {"accuracy", "precision", "recall", "f1_macro", "f1_of_means",
                        "per_abnormality"}),
    "skysensegpt-exact-match": (["fit-rsfg", "--pred", "fitrs_answers.jsonl", "--gt",
                                 "fitrs_vqa_eval.jsonl"], {"accuracy", "per_category"}),
}


def _argv(args):
    return [str(FIXTURES / a) if (FIXTURES / a).is_file() else a for a in args]


@pytest.mark.parametrize("protocol", CASES)
def test_score_json_on_each_fixture(protocol, capsys):
    args, keys = CASES[protocol]
    assert main(["score", *_argv(args), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert set(printed) == {"benchmark", "protocol", "metrics", "counts"}
    assert printed["protocol"] == protocol
    assert keys <= set(printed["metrics"])
    assert ("auroc" in printed["metrics"]) == (protocol == "ct-clip-threshold")


def test_score_writes_metrics_table_items_and_chart(tmp_path, capsys):
    args, _ = CASES["skysensegpt-exact-match"]
    assert main(["score", *_argv(args), "--out", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert "| accuracy | 50.00 |" in table and "| object count | 3 | 1 | 33.33 |" in table
    metrics = json.loads((tmp_path / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["metrics"]["accuracy"] == 50.0 and metrics["notes"]
    items = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert [item["correct"] for item in items] == [True, False, True, False, False, True]
    assert (tmp_path / "metrics.md").read_text(encoding="utf-8") == table.split("\nwrote")[0]
    assert (tmp_path / "per_category.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_score_strict_flag_is_reported_in_the_protocol(capsys):
    args, _ = CASES["llava-med"]
    assert main(["score", *_argv(args), "--strict", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["protocol"] == "llava-med-strict"
    assert printed["metrics"]["closed_accuracy"] == 25.0


@pytest.mark.parametrize("args, message", [
    (["vqa-rad", "--pred", "vqa_rad_answers.jsonl", "--gt", "vqa_rad_test.json",
      "--protocol", "multiple-choice"], "llava-med layout"),
    (["vqa-rad", "--pred", "huatuo_output.json", "--gt", "huatuo_evaluation_data.json",
      "--strict"], "--strict applies"),
    (["ct-rate", "--pred", "ct_rate_pred_binary.csv", "--gt", "ct_rate_labels.csv",
      "--protocol", "llava-med"], "--protocol applies"),
    (["fit-rsfg", "--pred", "fitrs_answers.jsonl", "--gt", "vqa_rad_test.json"], "not a JSON object"),
    (["ct-rate", "--pred", "ct_rate_pred_binary.csv", "--gt", "fitrs_vqa_eval.jsonl"],
     "VolumeName"),
    (["pathvqa", "--pred", "vqa_rad_answers.jsonl", "--gt", "huatuo_evaluation_data.json"],
     "not in the ground truth"),
])
def test_bad_combinations_exit_2_with_a_message(args, message, capsys):
    assert main(["score", *_argv(args)]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err


def test_score_as_a_subprocess():
    args, _ = CASES["skysensegpt-exact-match"]
    completed = subprocess.run([sys.executable, "-m", "longllava", "score", *_argv(args), "--json"],
                               capture_output=True, text=True, timeout=60, check=True)
    printed = json.loads(completed.stdout)
    assert printed["benchmark"] == "fit-rsfg" and printed["metrics"]["accuracy"] == 50.0
    assert printed["counts"]["questions"] == 6
