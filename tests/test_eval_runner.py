"""``longllava eval``: runs on each benchmark's real layout, resumes after SIGKILL, shards over two
processes, merges in ground-truth order, and rejects data in the wrong format."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from longllava.cli import main
from longllava.errors import InputError
from longllava.eval.runner import (PredictionWriter, RunConfig, check_run_config,
                                   merge_predictions, read_run_file, run_benchmark, trace_columns)

FIXTURES = Path(__file__).parent / "fixtures"
EVAL, RUNNER = FIXTURES / "eval", FIXTURES / "eval_runner"
REPO = Path(__file__).resolve().parents[1]
FAST = ["--model", "tiny-random", "--device", "cpu", "--max-new-tokens", "1"]


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _fit_rsfg_data(tmp_path: Path, count: int) -> Path:
    """A FIT-RSFG-Bench file of ``count`` questions over the fixture tiles."""
    tiles = sorted(p.name for p in (RUNNER / "fit_rsfg").iterdir())
    path = tmp_path / "test_FITRS_vqa_eval.jsonl"
    with path.open("w", encoding="utf-8") as handle:
        for k in range(count):
            handle.write(json.dumps({"question_id": k, "image": tiles[k % len(tiles)],
                                     "text": f"[vqa] How many ships are there? ({k})",
                                     "category": ["object quantity", "object color"][k % 2],
                                     "ground_truth": "2"}) + "\n")
    return path


CASES = {
    "llava-med": (["vqa-rad", "--data", EVAL / "vqa_rad_test.json", "--image-root",
                   RUNNER / "vqa_rad", "--limit", "2", "--batch-size", "2"], ["0", "1"]),
    # records 8 (open) and 9 (no options) are not asked; record 10 is PathVQA's
    "multiple-choice": (["vqa-rad", "--data", EVAL / "huatuo_evaluation_data.json", "--image-root",
                         RUNNER / "huatuo", "--protocol", "multiple-choice", "--limit", "2",
                         "--batch-size", "2"], ["1", "2"]),
    "ct-rate-yes-no": (["ct-rate", "--data", RUNNER / "ct_rate", "--limit", "1", "--max-slices", "1",
                        "--batch-size", "18"], None),
    "skysensegpt-exact-match": (["fit-rsfg", "--data", EVAL / "fitrs_vqa_eval.jsonl", "--image-root",
                                 RUNNER / "fit_rsfg", "--limit", "2", "--batch-size", "2"], ["1", "2"]),
}


@pytest.mark.parametrize("case", CASES)
def test_eval_cli_writes_predictions_and_metrics(case, tmp_path, capsys):
    args, expected_ids = CASES[case]
    out = tmp_path / "run"
    assert main(["eval", *map(str, args), "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    records = _lines(out / "predictions.jsonl")
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["protocol"] == case
    assert metrics["benchmark"] == args[0]
    assert f"## {args[0]} ({metrics['protocol']})" in printed
    for name in ("metrics.md", "items.jsonl", "per_category.png", "run.json"):
        assert (out / name).is_file()
    assert all(r["model_id"] == "tiny-random" and isinstance(r["text"], str) for r in records)
    if case == "ct-rate-yes-no":
        # one volume: its 18 questions, each over the same slice stack (here one slice, the first)
        assert len(records) == 18 and {r["volume"] for r in records} == {"valid_1_a_1.nii.gz"}
        assert [r["question_id"].split("::")[1] for r in records][:2] == [
            "Medical material", "Arterial wall calcification"]
        assert records[0]["num_images"] == 1
        assert records[0]["trace"] == {"kind": "frame", "frame": 0, "record": "valid_1_a_1.nii.gz",
                                       "slice_index": 0, "z_mm": records[0]["trace"]["z_mm"]}
        assert metrics["counts"]["volumes"] == 1 and metrics["counts"]["decisions"] == 18
        return
    assert [r["question_id"] for r in records] == expected_ids
    assert all(r["num_images"] == 1 for r in records)
    if case == "multiple-choice":
        assert records[1]["prompt"] == ("What modality is this?\nA. CT\nB. MRI\nC. X-ray\n"
                                        "Answer with the option's letter from the given choices "
                                        "directly.")
        counts = metrics["counts"]
        assert (counts["scored"], counts["skipped_open"], counts["skipped_no_options"]) == (2, 1, 1)
    if case == "skysensegpt-exact-match":
        assert [r["category"] for r in records] == ["object color", "object color"]
        assert metrics["counts"]["questions"] == 2


@pytest.mark.parametrize("bench, data, expected", [
    ("fit-rsfg", EVAL / "vqa_rad_test.json", "FIT-RSFG-Bench test_FITRS_vqa_eval.jsonl"),
    ("vqa-rad", EVAL / "fitrs_vqa_eval.jsonl", "LLaVA-Med test.json or HuatuoGPT-Vision"),
    ("ct-rate", EVAL / "ct_rate_labels.csv", "CT-RATE root folder"),
])
def test_data_in_the_wrong_format_is_a_clear_input_error(bench, data, expected, tmp_path):
    config = RunConfig(benchmark=bench, data=str(data), out=str(tmp_path / "run"))
    with pytest.raises(InputError, match=f"eval {bench} --data expects {expected}"):
        run_benchmark(config, load_model=lambda: pytest.fail("the model must not load"))
    assert not (tmp_path / "run").exists()


def test_wrong_protocol_for_the_data_is_refused(tmp_path, capsys):
    code = main(["eval", "vqa-rad", "--data", str(EVAL / "vqa_rad_test.json"), "--protocol",
                 "multiple-choice", "--out", str(tmp_path), *FAST])
    assert code == 2
    assert "--protocol multiple-choice was asked for" in capsys.readouterr().err


def test_a_torn_last_line_is_ignored_and_cut_before_the_next_append(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"question_id": "0", "text": "a"}\n{"question_id": "1", "te', encoding="utf-8")
    assert [r["question_id"] for r in read_run_file(path)] == ["0"]
    with PredictionWriter(path) as writer:
        writer.write({"question_id": "1", "text": "b"})
    assert _lines(path) == [{"question_id": "0", "text": "a"}, {"question_id": "1", "text": "b"}]


def test_a_restart_with_other_settings_is_refused(tmp_path):
    check_run_config(tmp_path, {"model": "tiny-random", "limit": 2}, ["model"])
    check_run_config(tmp_path, {"model": "tiny-random", "limit": 4}, ["model"])  # limit may change
    with pytest.raises(InputError, match="model: 'tiny-random' -> 'other'"):
        check_run_config(tmp_path, {"model": "other", "limit": 4}, ["model"])


def test_merge_orders_by_ground_truth_keeps_first_answer_and_removes_rank_files(tmp_path):
    for rank, ids in ((0, ["c", "a"]), (1, ["b", "a"])):
        with PredictionWriter(tmp_path / f"predictions.rank{rank}.jsonl") as writer:
            for item_id in ids:
                writer.write({"question_id": item_id, "text": f"rank {rank}"})
    merged, duplicates = merge_predictions(tmp_path, ["a", "b", "c"])
    assert [(r["question_id"], r["text"]) for r in _lines(merged)] == [
        ("a", "rank 0"), ("b", "rank 1"), ("c", "rank 0")]
    assert duplicates == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["predictions.jsonl"]
    with pytest.raises(InputError, match="answer for id 'c', which the data does not hold"):
        merge_predictions(tmp_path, ["a", "b"])


def test_trace_columns_collapse_constant_keys():
    trace = [{"kind": "frame", "frame": 0, "z_mm": -3.0}, {"kind": "frame", "frame": 1, "z_mm": 0.0}]
    assert trace_columns(trace) == {"kind": "frame", "frame": [0, 1], "z_mm": [-3.0, 0.0]}


def _eval_args(data: Path, out: Path) -> list[str]:
    return ["eval", "fit-rsfg", "--data", str(data), "--image-root", str(RUNNER / "fit_rsfg"),
            "--out", str(out), *FAST]


def _eval_process(data: Path, out: Path, env: dict | None = None) -> subprocess.Popen:
    # the progress bar is asserted on: keep it although stderr is a pipe (the CLI turns bars off
    # off a terminal unless TQDM_DISABLE is set; "" reads as False; an in-process main() may have
    # set it to 1 in this process's environment)
    environment = os.environ | {"OMP_NUM_THREADS": "1", "TQDM_DISABLE": ""} | (env or {})
    return subprocess.Popen([sys.executable, "-m", "longllava", *_eval_args(data, out)], cwd=REPO,
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _count_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.is_file() else 0


@pytest.mark.slow
def test_sigkill_mid_run_then_restart_answers_each_question_exactly_once(tmp_path):
    total = 8
    data, out = _fit_rsfg_data(tmp_path, total), tmp_path / "run"
    predictions = out / "predictions.jsonl"
    process = _eval_process(data, out)
    deadline = time.monotonic() + 120
    while _count_lines(predictions) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.communicate()
    killed_at = _count_lines(predictions)
    assert process.returncode == -signal.SIGKILL
    assert 2 <= killed_at < total and not (out / "metrics.json").exists()
    restart = _eval_process(data, out)  # a process of its own: its progress bar is on, whatever ran here
    _, stderr = restart.communicate(timeout=300)
    assert restart.returncode == 0, stderr
    assert f"{killed_at}/{total}" in stderr  # the progress bar resumed there
    ids = [r["question_id"] for r in _lines(predictions)]
    assert ids == [str(k) for k in range(total)]  # all present, once each, in data order
    assert json.loads((out / "metrics.json").read_text())["counts"]["questions"] == total


@pytest.mark.slow
def test_two_ranks_share_the_questions_and_rank_0_merges_in_order(tmp_path, monkeypatch, capsys):
    total = 4
    data, out = _fit_rsfg_data(tmp_path, total), tmp_path / "run"
    rank_1 = _eval_process(data, out, {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    monkeypatch.setenv("RANK", "0")  # rank 0 in this process, next to rank 1's process
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(_eval_args(data, out)) == 0  # answers 0 and 2, waits for 1 and 3, merges, scores
    stdout, stderr = rank_1.communicate(timeout=300)
    assert rank_1.returncode == 0, stderr
    assert "rank 1: 2 answer(s) written" in stdout and "[rank 1/2]" in stderr
    assert "| accuracy |" in capsys.readouterr().out
    assert [r["question_id"] for r in _lines(out / "predictions.jsonl")] == [str(k) for k in range(total)]
    assert not list(out.glob("predictions.rank*.jsonl"))
    assert json.loads((out / "metrics.json").read_text())["counts"]["questions"] == total
