"""Video-MME and CDVQA: readers, prompts and scorers (pure functions over prediction files)."""

from __future__ import annotations

import json

import pytest

from longllava.errors import InputError
from longllava.eval.cdvqa import cdvqa_image_pair, cdvqa_prompt, normalise_answer, read_cdvqa, score_cdvqa
from longllava.eval.predictions import read_predictions
from longllava.eval.video_mme import extract_letter, read_video_mme, score_video_mme, video_mme_prompt


def options(n):
    return [f"{letter}. option {letter}{n}" for letter in "ABCD"]


VIDEOS = [
    {"video_id": "001", "duration_category": "short", "video_category": "Knowledge",
     "video_subcategory": "Humanity & History", "questions": [
         {"question_id": "001-1", "task_type": "Object Reasoning", "question": "Which is wrong?",
          "choices": options(1), "answer": "A"},
         {"question_id": "001-2", "task_type": "Counting Problem", "question": "How many?",
          "choices": options(2), "answer": "D"}]},
    {"video_id": "301", "duration_category": "long", "video_category": "Sports Competition",
     "video_subcategory": "Football", "questions": [
         {"question_id": "301-1", "task_type": "Counting Problem", "question": "Goals?",
          "choices": options(3), "answer": "B"},
         {"question_id": "301-2", "task_type": "Temporal Reasoning", "question": "First?",
          "choices": options(4), "answer": "C"}]},
]


def test_extract_letter_as_the_official_script():
    assert extract_letter(" The best answer is B.") == "B"
    assert extract_letter("(C)") == "C"
    assert extract_letter("Answer: (C)") == "A"  # "Answer:" is no prefix there: its capital A is the letter
    assert extract_letter("d") == ""  # lower case is no letter
    # "The best option is" alone is not among the prefixes (the official list fuses two strings),
    # so its capital T is skipped but nothing else: the first A-D is the letter of the rest
    assert extract_letter("The best option is D") == "D"
    assert extract_letter("I think Bob is right, so D") == "B"
    assert extract_letter("it is hard to tell from these frames which one of them is right here") == ""


def test_video_mme_prompt_and_scores_by_duration(tmp_path):
    path = tmp_path / "videomme.json"
    path.write_text(json.dumps(VIDEOS))
    questions = read_video_mme(path)
    assert [q.question_id for q in questions] == ["001-1", "001-2", "301-1", "301-2"]
    assert video_mme_prompt(questions[0]) == (
        "Select the best answer to the following multiple-choice question based on the video. Respond with only "
        "the letter (A, B, C, or D) of the correct option.\nWhich is wrong?\nA. option A1\nB. option B1\n"
        "C. option C1\nD. option D1\nThe best answer is:")
    predictions = tmp_path / "predictions.jsonl"
    answers = {"001-1": "A", "001-2": "The answer is B", "301-1": "B.", "301-2": "no idea at all, the video does "
               "not show enough of the match to tell"}
    predictions.write_text("\n".join(json.dumps({"question_id": k, "text": v}) for k, v in answers.items()))
    result = score_video_mme(questions, read_predictions(predictions))
    assert result.counts == {"questions": 4, "answered": 3, "correct": 2, "not_answered": 1}
    assert result.metrics["accuracy"] == pytest.approx(200 / 3)
    assert result.metrics["accuracy_short"] == 50.0 and result.metrics["accuracy_long"] == 100.0
    assert result.metrics["per_task_type"]["Counting Problem"] == {"answered": 2, "correct": 1, "accuracy": 50.0}
    assert [item.correct for item in result.items] == [True, False, True, False]


def test_video_mme_annotation_rows_and_bad_records(tmp_path):
    rows = [{"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Astronomy",
             "videoID": "fFjv93ACGo8", "question_id": "001-1", "task_type": "Counting Problem",
             "question": "How many?", "options": options(1), "answer": "C"}]
    path = tmp_path / "rows.json"
    path.write_text(json.dumps(rows))
    (question,) = read_video_mme(path)
    assert (question.video_file, question.category, question.duration) == ("fFjv93ACGo8", "Knowledge", "short")
    rows[0]["answer"] = "E"
    path.write_text(json.dumps(rows))
    with pytest.raises(InputError, match="item 0: answer must be one letter A-D"):
        read_video_mme(path)
    rows[0]["answer"], rows[0]["duration"] = "C", "hour"
    path.write_text(json.dumps(rows))
    with pytest.raises(InputError, match="duration must be one of short, medium, long"):
        read_video_mme(path)


def write_cdvqa(folder):
    questions = [
        {"id": 0, "img_id": 0, "type": "change_or_not", "question": "Have the areas of water changed?",
         "answers_ids": [0], "active": True},
        {"id": 1, "img_id": 0, "type": "change_or_not", "question": "Did the buildings change?",
         "answers_ids": [1], "active": True},
        {"id": 2, "img_id": 1, "type": "largest_change", "question": "What is the largest change?",
         "answers_ids": [2], "active": True},
        {"id": 3, "img_id": 1, "type": "change_ratio", "question": "How much has changed?",
         "answers_ids": [3], "active": False},
    ]
    answers = [{"id": 0, "question_id": 0, "answer": "yes", "active": True},
               {"id": 1, "question_id": 1, "answer": "no", "active": True},
               {"id": 2, "question_id": 2, "answer": "NVG_surface", "active": True},
               {"id": 3, "question_id": 3, "answer": "10_to_20", "active": True}]
    images = [{"id": 0, "file_name": "02180.png", "questions_ids": [0, 1], "active": True},
              {"id": 1, "file_name": "07502.png", "questions_ids": [2, 3], "active": True}]
    (folder / "Test_questions.json").write_text(json.dumps({"questions": questions}))
    (folder / "Test_answers.json").write_text(json.dumps({"answers": answers}))
    (folder / "Test_images.json").write_text(json.dumps({"images": images}))
    return folder / "Test_questions.json"


def test_cdvqa_reader_prompt_and_oa_aa(tmp_path):
    questions = read_cdvqa(write_cdvqa(tmp_path))
    assert [(q.question_id, q.type, q.answer, q.file_name) for q in questions] == [
        ("0", "change_or_not", "yes", "02180.png"), ("1", "change_or_not", "no", "02180.png"),
        ("2", "largest_change", "NVG_surface", "07502.png")]  # the inactive question is left out
    assert cdvqa_prompt(questions[0]) == ("Have the areas of water changed?\n"
                                          "Answer the question using a single word or phrase.")
    assert cdvqa_image_pair(questions[2], tmp_path) == (tmp_path / "im1" / "07502.png", tmp_path / "im2" / "07502.png")
    assert normalise_answer(" NVG surface. ") == normalise_answer("NVG_surface")
    predictions = tmp_path / "answers.jsonl"
    predictions.write_text("\n".join(json.dumps({"question_id": i, "text": t})
                                     for i, t in [(0, "Yes."), (1, "yes"), (2, "nvg surface")]))
    result = score_cdvqa(questions, read_predictions(predictions))
    assert result.metrics["overall_accuracy"] == pytest.approx(200 / 3)
    assert result.metrics["average_accuracy"] == pytest.approx((50.0 + 100.0) / 2)
    assert result.metrics["per_type"]["change_or_not"] == {"n": 2, "correct": 1, "accuracy": 50.0}


def test_cdvqa_bad_files(tmp_path):
    path = write_cdvqa(tmp_path)
    (tmp_path / "Test_images.json").unlink()
    with pytest.raises(InputError, match="Test_images.json: not found"):
        read_cdvqa(path)
    with pytest.raises(InputError, match="expected a CDVQA <split>_questions.json"):
        read_cdvqa(tmp_path / "Test_answers.json")


# --- the runner: videos and image pairs through the protocol --------------------------------------

FAST = ["--model", "tiny-random", "--device", "cpu", "--max-new-tokens", "1"]


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_eval_video_mme_reads_each_video_once_at_its_times(tmp_path, clips, capsys):
    from longllava.cli import main

    videos = tmp_path / "videos"
    videos.mkdir()
    clips.write_mp4(videos / "001.mp4", list(range(10)))  # 0 .. 2.25 s
    clips.write_mp4(videos / "abcXYZ.mp4", list(range(6)), rate=2)  # 0 .. 2.5 s
    data = [dict(VIDEOS[0]), {**VIDEOS[1], "videoID": "abcXYZ"}]
    (tmp_path / "videomme.json").write_text(json.dumps(data))
    out = tmp_path / "run"
    assert main(["eval", "video-mme", "--data", str(tmp_path / "videomme.json"), "--image-root", str(videos),
                 "--out", str(out), "--fps", "1", "--max-frames", "8", *FAST]) == 0
    assert "## video-mme (video-mme-letter)" in capsys.readouterr().out
    records = lines(out / "predictions.jsonl")
    assert [r["question_id"] for r in records] == ["001-1", "001-2", "301-1", "301-2"]
    assert records[0]["num_images"] == 3 and records[0]["trace"]["time_s"] == [0.0, 1.0, 2.0]
    assert records[2]["num_images"] == 3 and records[2]["trace"]["index"] == [0, 2, 4]
    assert records[0]["prompt"].startswith("Select the best answer") and records[0]["duration"] == "short"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["counts"]["questions"] == 4
    assert json.loads((out / "run.json").read_text())["fps"] == 1.0

    (videos / "abcXYZ.mp4").unlink()
    with pytest.raises(InputError, match="1 of 2 videos not found .* abcXYZ.mp4"):
        from longllava.eval.runner import RunConfig, run_benchmark

        run_benchmark(RunConfig("video-mme", str(tmp_path / "videomme.json"), str(tmp_path / "again"),
                                image_root=str(videos)), load_model=lambda: pytest.fail("the model must not load"))


def test_eval_cdvqa_sends_each_pair_before_then_after(tmp_path, capsys):
    from PIL import Image

    from longllava.cli import main

    path = write_cdvqa(tmp_path)
    for folder, value in (("im1", 40), ("im2", 200)):
        (tmp_path / folder).mkdir()
        for name in ("02180.png", "07502.png"):
            Image.new("RGB", (32, 32), (value, value, value)).save(tmp_path / folder / name)
    out = tmp_path / "run"
    assert main(["eval", "cdvqa", "--data", str(path), "--out", str(out), *FAST]) == 0
    assert "## cdvqa (cdvqa-oa-aa)" in capsys.readouterr().out
    records = lines(out / "predictions.jsonl")
    assert [r["question_id"] for r in records] == ["0", "1", "2"]
    assert records[0]["num_images"] == 2 and records[0]["trace"]["index"] == [0, 1]
    assert [p.rsplit("/", 2)[-2] for p in records[0]["trace"]["path"]] == ["im1", "im2"]
    assert records[0]["prompt"].endswith("Answer the question using a single word or phrase.")
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["metrics"]) >= {"overall_accuracy", "average_accuracy"}


def test_score_command_reads_both_formats(tmp_path, capsys):
    from longllava.cli import main

    (tmp_path / "videomme.json").write_text(json.dumps(VIDEOS))
    predictions = tmp_path / "answers.jsonl"
    predictions.write_text("\n".join(json.dumps({"question_id": q, "text": "A"}) for q in ("001-1", "001-2", "301-1", "301-2")))
    assert main(["score", "video-mme", "--pred", str(predictions), "--gt", str(tmp_path / "videomme.json"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["metrics"]["accuracy"] == 25.0
