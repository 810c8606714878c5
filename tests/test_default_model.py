"""The default model shipped with the package (``--model default``): its weights answer held-out
synthetic questions at its report's figures, and the recipe rebuilds it to the report's targets."""

import json

import pytest

from longllava.core.pipeline import LongLlava
from longllava.finetune.default_model import D_STATE, TARGETS, build_default_model, ensure_default_model, evaluate_synthetic
from longllava.finetune.synthetic import SyntheticSpec, default_haystack, generate_task_set
from longllava.models import SYNTHETIC_DEFAULT
from longllava.registry import load_model

# The shipped build trained on seed 0 and reported on seed 1000; these questions are neither.
HELD_OUT = SyntheticSpec(volumes=10, scenes=10, needles=20, seed=4242, balanced_counts=True)
MARGIN = 0.2  # below the shipped report's held-out figure (148 questions) on these 20 of each


def shipped_report() -> dict:
    return json.loads((SYNTHETIC_DEFAULT / "report.json").read_text())


def test_default_is_the_shipped_model_with_its_report():
    assert ensure_default_model() == SYNTHETIC_DEFAULT
    assert load_model("default")[0].config.text_config.mamba_d_state == D_STATE
    report = shipped_report()
    assert set(report["targets"]) == set(TARGETS) == {"presence", "needle"}  # no counting target
    assert all(target["reached"] for target in report["targets"].values())
    answered = report["counting_answers"]  # what the model answers to each true count
    assert sum(n for rows in answered.values() for row in rows.values() for n in row.values()) == 108


def test_shipped_model_answers_held_out_presence_and_needle_questions(tmp_path):
    records = [r for r in generate_task_set(tmp_path, HELD_OUT, default_haystack(), False)
               if r.meta["group"] in ("presence", "needle")]
    assert sum(r.meta["group"] == "presence" for r in records) == 20 and len(records) == 40
    metrics = evaluate_synthetic(LongLlava(*load_model("default")), records)
    shipped = shipped_report()["heldout"]
    for group in ("presence", "needle"):
        assert metrics[f"group/{group}"] >= shipped[f"group/{group}"] - MARGIN, (group, metrics)


@pytest.mark.slow
@pytest.mark.rebuild
@pytest.mark.timeout(3600)
def test_recipe_rebuilds_the_default_model_to_the_shipped_targets(tmp_path):
    """The full build (``longllava finetune --recipe synthetic-default``, ~7 min on 2 cores)."""
    report = build_default_model(tmp_path / "rebuilt", progress=False)
    targets = shipped_report()["targets"]
    for group, target in targets.items():
        assert report["heldout"][f"group/{group}"] >= target["target"], (group, report["heldout"])
    assert report["targets"] == {group: {"target": t["target"], "reached": True} for group, t in targets.items()}
    assert sorted(p.name for p in (tmp_path / "rebuilt" / "final").iterdir()) == sorted(
        p.name for p in SYNTHETIC_DEFAULT.iterdir())


def test_ask_on_the_default_model_prints_the_answer_and_nothing_else(fixtures):
    """`make run`'s command, as a user's shell runs it (not a terminal here): one JSON line on stdout
    and an empty stderr (no progress bars, no library warnings)."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("TRANSFORMERS_VERBOSITY", "TQDM_DISABLE")}
    done = subprocess.run([sys.executable, "-m", "longllava", "ask", "--ct", str(fixtures / "ct" / "example_ct.nii.gz"),
                           "--max-slices", "8", "--question", "Is there a lesion in this CT? Answer yes or no.", "--json"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and done.stderr == "", done.stderr[-2000:]
    [line] = done.stdout.splitlines()
    answer = json.loads(line)
    assert answer["model"] == "default" and answer["answer"] in ("yes", "no") and answer["num_images"] == 8
