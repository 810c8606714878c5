"""The evaluation runner: benchmark data -> protocol prompts -> greedy answers -> predictions -> scores.

A run writes into one output folder:

- ``predictions.jsonl``: one JSON object per answered question (``question_id``, ``prompt``,
  ``text``, ``model_id``, ``num_images`` and the benchmark's own fields), appended, flushed and
  fsync'ed as soon as the answer exists, so a killed run loses at most the batch in flight;
  a restart skips the ids already answered (a torn last line is cut off first);
- ``run.json``: the :class:`RunConfig`; a restart with a different model, data or protocol in the
  same folder is refused rather than mixing two runs' answers;
- after the last answer: ``metrics.json``, ``metrics.md``, ``items.jsonl`` and ``per_category.png``
  from the benchmark's official scorer (:mod:`longllava.eval.results`).

Sharding: under ``torchrun`` / ``accelerate launch`` (``RANK`` / ``WORLD_SIZE`` in the environment)
question k of the data goes to rank ``k % WORLD_SIZE``, which appends to
``predictions.rank<RANK>.jsonl``. Rank 0, after its own share, waits until every question of the
run has an answer in some file, then merges all files into ``predictions.jsonl`` in ground-truth
order (one record per id, the first one written) and scores. Coordination is through the files
alone, so no process group is needed and a crashed rank is resumed by starting it again.

Benchmarks (``--data``; ``--image-root`` defaults to the data file's folder):

- ``vqa-rad`` / ``pathvqa``: LLaVA-Med ``test.json`` (protocol ``llava-med``: the record's question
  as is) or HuatuoGPT-Vision ``medical_multimodel_evaluation_data.json`` (protocol
  ``multiple-choice``: question, ``A. option`` lines and HuatuoGPT-Vision's instruction; only the
  benchmark's records with options and not ``open`` are asked, the ones its scorer counts);
- ``ct-rate``: the CT-RATE root folder; each volume is loaded once through the medical loader
  (HU, metadata spacing), windowed into an ordered stack of up to ``max_slices`` axial slices, and
  asked the 18 abnormality questions; ``--limit`` counts volumes;
- ``fit-rsfg``: ``test_FITRS_vqa_eval.jsonl``; each 512 px tile is one image;
- ``video-mme``: a Video-MME JSON; each video (``<image root>/<videoID>.mp4``) is read once,
  sampled at ``fps`` by presentation time (at most ``max_frames``) into one ordered stack of frames
  traced by their times, and asked its questions with Video-MME's prompt; ``--limit`` counts videos;
- ``cdvqa``: a CDVQA ``<split>_questions.json``; each question's image pair (``im1/``, ``im2/``
  under the image root) is a two-frame stack, before then after.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from longllava.core import protocol
from longllava.core.protocol import UserMessage
from longllava.errors import InputError
from longllava.eval.benchmarks import BENCHMARKS, load
from longllava.eval.files import json_lines
from longllava.eval.predictions import Prediction, read_predictions
from longllava.eval.results import ScoreResult, write_results
from longllava.traces import ImageTrace

PREDICTIONS = "predictions.jsonl"
RUN_CONFIG = "run.json"
MULTIPLE_CHOICE_INSTRUCTION = "Answer with the option's letter from the given choices directly."
_OPTION_LETTERS = "ABCDEFGHIJKLMN"


@dataclass
class RunConfig:
    """Everything that defines a run; saved as ``run.json`` in the output folder."""

    benchmark: str
    data: str
    out: str
    model: str = "tiny-random"
    protocol: str | None = None  # vqa-rad / pathvqa: llava-med | multiple-choice (default: from --data)
    image_root: str | None = None  # default: the data file's folder
    limit: int | None = None  # first N questions (ct-rate: volumes)
    batch_size: int = 1
    max_new_tokens: int | None = None  # default: the benchmark's declared length for the protocol
    max_slices: int = 256  # ct-rate: slices per volume, evenly spaced
    split: str = "valid"  # ct-rate split
    fps: float = 1.0  # video-mme: frames per second of video, sampled by presentation time
    max_frames: int = 256  # video-mme: frames per video at most, evenly spread beyond
    merge_timeout_s: float = 3600.0  # rank 0: how long to wait for the other ranks' answers

    # fields that change the answers: a restart must agree on them (limit and batch size may change)
    IDENTITY = ("benchmark", "data", "model", "protocol", "image_root", "max_new_tokens",
                "max_slices", "split", "fps", "max_frames")


@dataclass
class EvalItem:
    """One question: its id, how to build its message (images load only then), fields to record."""

    id: str
    question: str  # the text after the visual blocks, recorded as ``prompt``
    message: Callable[[], UserMessage]
    fields: dict[str, Any] = field(default_factory=dict)
    group: str = ""  # items that share images (a CT volume); ``--limit`` counts groups


@dataclass
class EvalTask:
    """Questions and their scorer: a benchmark's (:func:`build_task`) or V-NIAH's. Run by
    :func:`run_task`."""

    benchmark: str
    protocol: str
    items: list[EvalItem]  # every question of the data, in ground-truth order
    score: Callable[[Sequence[Prediction], Sequence[str]], Any]  # (answers to the asked ids, asked ids) -> result
    max_new_tokens: int | None = None  # default generation length (the benchmark's declared one)
    write: Callable[[Any, Path], Any] = write_results  # the result -> files in the output folder
    run_fields: dict[str, Any] = field(default_factory=dict)  # settings the data decided, saved in run.json
    keep_other_ids: bool = False  # the folder may hold answers to other questions (V-NIAH: other N / depths)


# --- benchmark tasks ------------------------------------------------------------------------------


def build_task(config: RunConfig) -> EvalTask:
    """The benchmark's questions from ``config.data`` (validated with the scorer's own reader)."""
    if config.benchmark not in BENCHMARKS:
        raise InputError(f"unknown benchmark {config.benchmark!r}; choose one of {', '.join(BENCHMARKS)}")
    declared = BENCHMARKS[config.benchmark]
    try:
        task = load(declared.task)(config)
    except InputError as error:
        raise InputError(f"eval {declared.name} --data expects {declared.data}: {error}") from None
    task.max_new_tokens = declared.max_new_tokens[task.protocol]
    task.run_fields = {"protocol": task.protocol}
    return task


def _image_root(config: RunConfig) -> Path:
    return Path(config.image_root) if config.image_root else Path(config.data).parent


def vqa_task(config: RunConfig) -> EvalTask:
    from longllava.eval.scorers import vqa_protocol_of

    layout = vqa_protocol_of(config.data)
    if config.protocol is not None and config.protocol != layout:
        raise InputError(f"{config.data}: --protocol {config.protocol} was asked for, but this file is "
                         f"in the {layout} layout; pass the matching file or protocol")
    return _llava_med_task(config) if layout == "llava-med" else _multiple_choice_task(config)


def _llava_med_task(config: RunConfig) -> EvalTask:
    from longllava.domains.medical.datasets import read_llava_med_vqa
    from longllava.eval.llava_med import read_llava_med_ground_truth, score_llava_med_vqa

    questions = {q.id: q for q in read_llava_med_ground_truth(config.data)}
    items = []
    for record in read_llava_med_vqa(config.data, _image_root(config)):
        items.append(EvalItem(
            id=record.id, question=record.question,
            message=lambda record=record: protocol.record_message(record),
            fields={"answer_type": questions[record.id].answer_type,
                    "image": [str(path) for path in record.images]}))

    def score(predictions: Sequence[Prediction], ids: Sequence[str]) -> ScoreResult:
        asked = set(ids)
        return score_llava_med_vqa([q for q in questions.values() if q.id in asked], predictions,
                                   benchmark=config.benchmark)

    return EvalTask(config.benchmark, "llava-med", items, score)


def multiple_choice_question(question: str, options: Sequence[str]) -> str:
    """HuatuoGPT-Vision's query: the question, one ``A. option`` line per option, the instruction."""
    lines = [f"{_OPTION_LETTERS[number]}. {option}" for number, option in enumerate(options)]
    return "\n".join([question, *lines, MULTIPLE_CHOICE_INSTRUCTION])


def _multiple_choice_task(config: RunConfig) -> EvalTask:
    from longllava.domains.medical.datasets import read_multiple_choice_vqa
    from longllava.eval.multiple_choice import (BENCHMARK_DATASETS, _dataset_key,
                                                read_multiple_choice_ground_truth,
                                                score_multiple_choice)

    questions = read_multiple_choice_ground_truth(config.data)  # test_id = position + 1
    wanted = BENCHMARK_DATASETS[config.benchmark]
    records = list(read_multiple_choice_vqa(config.data, _image_root(config)))
    def scored(question) -> bool:  # score_mix_llava skips open and option-less records
        return question.question_type != "open" and bool(question.options)

    items = []
    for question, record in zip(questions, records, strict=True):
        if _dataset_key(question.dataset) != wanted or not scored(question):
            continue
        text = multiple_choice_question(question.question, question.options)
        visuals = [protocol.ImageInput(path, ImageTrace(record=question.test_id, path=str(path)))
                   for path in record.images]
        items.append(EvalItem(
            id=question.test_id, question=text,
            message=lambda visuals=visuals, text=text: protocol.user_message(visuals, text),
            fields={"test_id": int(question.test_id), "question": question.question,
                    "dataset": question.dataset, "image": [str(path) for path in record.images]}))
    if not items:
        found = sorted({q.dataset for q in questions})
        raise InputError(f"{config.data}: no {config.benchmark} multiple-choice records with options "
                         f"(datasets found: {', '.join(found)})")

    def score(predictions: Sequence[Prediction], ids: Sequence[str]) -> ScoreResult:
        asked = set(ids)
        # the asked questions, plus those the scorer skips anyway (so it counts them)
        return score_multiple_choice([q for q in questions if q.test_id in asked or not scored(q)
                                      or _dataset_key(q.dataset) != wanted], predictions,
                                     benchmark=config.benchmark)

    return EvalTask(config.benchmark, "multiple-choice", items, score)


def ct_rate_task(config: RunConfig) -> EvalTask:
    import numpy as np

    from longllava.domains.medical.datasets import ct_rate_questions, read_ct_rate
    from longllava.eval.ct_rate import (CtRateTable,
                                        ct_rate_table_from_answers, ct_rate_question_id,
                                        read_ct_rate_labels, score_ct_rate, volume_key)

    root = Path(config.data)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    labels_csv = root / "multi_abnormality_labels" / f"{config.split}_predicted_labels.csv"
    labels = read_ct_rate_labels(labels_csv)
    volumes = {item.volume_name: item for item in read_ct_rate(root, split=config.split)}

    @lru_cache(maxsize=1)  # the 18 questions of a volume come one after another
    def volume_stack(name: str) -> protocol.StackInput:
        from longllava.domains.medical.datasets import load_ct_rate_volume
        from longllava.domains.medical.slices import ct_to_slices
        from longllava.domains.medical.visuals import ct_stack

        return ct_stack(ct_to_slices(load_ct_rate_volume(volumes[name]), max_slices=config.max_slices),
                        record=name)

    items = []
    for name, item in volumes.items():
        for record in ct_rate_questions(item):  # the loader's 18 questions, in label-column order
            question, abnormality = record.question, record.meta["abnormality"]
            items.append(EvalItem(
                id=ct_rate_question_id(name, abnormality), question=question,
                message=lambda name=name, question=question: protocol.user_message(
                    [volume_stack(name)], question),
                fields={"volume": name, "abnormality": abnormality}, group=name))

    def score(predictions: Sequence[Prediction], ids: Sequence[str]) -> ScoreResult:
        asked = {volume_key(i.split("::")[0]) for i in ids}
        rows = [k for k, volume in enumerate(labels.volumes) if volume_key(volume) in asked]
        subset = CtRateTable([labels.volumes[k] for k in rows], labels.values[np.asarray(rows)],
                             labels.source)
        return score_ct_rate(subset, ct_rate_table_from_answers(predictions))

    return EvalTask("ct-rate", "ct-rate-yes-no", items, score)


def fit_rsfg_task(config: RunConfig) -> EvalTask:
    from longllava.domains.remote_sensing.datasets import read_fit_rsfg_bench
    from longllava.eval.fit_rsfg import read_fit_rsfg_ground_truth, score_fit_rsfg

    questions = read_fit_rsfg_ground_truth(config.data)
    items = []
    for record in read_fit_rsfg_bench(config.data, _image_root(config)):
        missing = [str(path) for path in record.images if not Path(path).is_file()]
        if missing:
            raise InputError(f"{record.source}: image not found: {missing[0]} (set --image-root to "
                             f"the folder of the 512 px tiles)")
        meta = record.meta
        items.append(EvalItem(
            id=record.id, question=record.question,
            message=lambda record=record: protocol.record_message(record),
            fields={"category": meta["category"], "image": Path(record.images[0]).name,
                    "source_scene": meta.get("source_scene"), "x_offset": meta.get("x_offset"),
                    "y_offset": meta.get("y_offset")}))

    def score(predictions: Sequence[Prediction], ids: Sequence[str]) -> ScoreResult:
        asked = set(ids)
        return score_fit_rsfg([q for q in questions if q.question_id in asked], predictions)

    return EvalTask("fit-rsfg", "skysensegpt-exact-match", items, score)


def _video_file(root: Path, stem: str) -> Path | None:
    from longllava.domains.medical.video import VIDEO_SUFFIXES

    return next((path for suffix in (".mp4", *sorted(VIDEO_SUFFIXES - {".mp4"}))
                 if (path := root / f"{stem}{suffix}").is_file()), None)


def video_mme_task(config: RunConfig) -> EvalTask:
    from longllava.domains.medical.clips import load_clip
    from longllava.domains.medical.visuals import clip_stack
    from longllava.eval.video_mme import read_video_mme, score_video_mme, video_mme_prompt

    questions = read_video_mme(config.data)
    root = _image_root(config)
    files = {q.video_file: _video_file(root, q.video_file) for q in questions}
    missing = [stem for stem, path in files.items() if path is None]
    if missing:
        raise InputError(f"{len(missing)} of {len(files)} videos not found in {root}, e.g. {missing[0]}.mp4 "
                         f"(set --image-root to the folder of the videos)")

    @lru_cache(maxsize=1)  # a video's questions come one after another
    def video_stack(stem: str) -> protocol.StackInput:
        return clip_stack(load_clip(files[stem], config.fps, config.max_frames))

    items = []
    for q in questions:
        prompt = video_mme_prompt(q)
        items.append(EvalItem(
            id=q.question_id, question=prompt,
            message=lambda stem=q.video_file, prompt=prompt: protocol.user_message([video_stack(stem)], prompt),
            fields={"video_id": q.video_id, "duration": q.duration, "category": q.category,
                    "task_type": q.task_type}, group=q.video_id))

    def score(predictions: Sequence[Prediction], ids: Sequence[str]) -> ScoreResult:
        asked = set(ids)
        return score_video_mme([q for q in questions if q.question_id in asked], predictions)

    return EvalTask("video-mme", "video-mme-letter", items, score)


def cdvqa_task(config: RunConfig) -> EvalTask:
    from longllava.domains.remote_sensing.visuals import image_pair_stack
    from longllava.eval.cdvqa import cdvqa_image_pair, cdvqa_prompt, read_cdvqa, score_cdvqa

    questions = read_cdvqa(config.data)
    root = _image_root(config)
    for q in questions:
        missing = [path for path in cdvqa_image_pair(q, root) if not path.is_file()]
        if missing:
            raise InputError(f"question {q.question_id}: image not found: {missing[0]} (set --image-root to the "
                             f"folder that holds im1/ and im2/)")

    @lru_cache(maxsize=1)  # a pair's questions come one after another
    def pair_stack(file_name: str) -> protocol.StackInput:
        return image_pair_stack(*cdvqa_image_pair(next(q for q in questions if q.file_name == file_name), root))

    items = [EvalItem(id=q.question_id, question=cdvqa_prompt(q),
                      message=lambda q=q: protocol.user_message([pair_stack(q.file_name)], cdvqa_prompt(q)),
                      fields={"type": q.type, "image": q.file_name}) for q in questions]

    def score(predictions: Sequence[Prediction], ids: Sequence[str]) -> ScoreResult:
        asked = set(ids)
        return score_cdvqa([q for q in questions if q.question_id in asked], predictions)

    return EvalTask("cdvqa", "cdvqa-oa-aa", items, score)


def limit_items(items: Sequence[EvalItem], limit: int | None) -> list[EvalItem]:
    """The items of the first ``limit`` groups (a group is one question, or one CT volume)."""
    if limit is None:
        return list(items)
    if limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    groups: list[str] = []
    kept = []
    for item in items:
        group = item.group or item.id
        if group not in groups:
            if len(groups) == limit:
                break
            groups.append(group)
        kept.append(item)
    return kept


# --- prediction files: append, resume, shard, merge -----------------------------------------------


def shard_from_environment() -> tuple[int, int]:
    """(rank, world size) from ``RANK`` / ``WORLD_SIZE`` (set by torchrun and accelerate launch)."""
    try:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise InputError(f"RANK={os.environ.get('RANK')!r} / WORLD_SIZE="
                         f"{os.environ.get('WORLD_SIZE')!r} must be whole numbers") from None
    if world < 1 or not 0 <= rank < world:
        raise InputError(f"RANK={rank} must lie in [0, WORLD_SIZE={world})")
    return rank, world


def shard_file(out_dir: Path, rank: int, world: int) -> Path:
    return out_dir / (PREDICTIONS if world == 1 else f"predictions.rank{rank}.jsonl")


def prediction_files(out_dir: Path) -> list[Path]:
    """The merged file first, then every rank's file by rank."""
    ranks = sorted(out_dir.glob("predictions.rank*.jsonl"),
                   key=lambda path: int(path.name.split(".")[1].removeprefix("rank")))
    merged = out_dir / PREDICTIONS
    return ([merged] if merged.is_file() else []) + ranks


def read_run_file(path: Path) -> list[dict]:
    """The records of a runner prediction file; a torn last line (a kill mid-write) is left out."""
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    complete = text.split("\n")[:-1]  # the part after the last newline is a torn write, if any
    records = []
    for number, record in json_lines(complete, path, "this prediction file was edited or written by "
                                                     "something else; use a new --out"):
        if not isinstance(record, dict) or "question_id" not in record:
            raise InputError(f"{path}:{number}: not a runner prediction (no 'question_id')")
        records.append(record)
    return records


def answered_ids(out_dir: Path) -> set[str]:
    return {str(record["question_id"]) for path in prediction_files(out_dir)
            for record in read_run_file(path)}


class PredictionWriter:
    """Appends one JSON line per prediction, durable (flush + fsync) before the next is generated."""

    def __init__(self, path: Path):
        self.path = path
        if path.is_file():  # cut a torn last line so the next record starts on its own line
            data = path.read_bytes()
            if data and not data.endswith(b"\n"):
                with path.open("r+b") as handle:
                    handle.truncate(data.rfind(b"\n") + 1)
        self.handle = path.open("a", encoding="utf-8")

    def write(self, record: dict) -> None:
        self.handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def close(self) -> None:
        self.handle.close()

    def __enter__(self) -> PredictionWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def wait_for_answers(out_dir: Path, ids: Sequence[str], timeout_s: float, poll_s: float = 1.0) -> None:
    """Block until every id has an answer in some prediction file (the other ranks' shares)."""
    deadline = time.monotonic() + timeout_s
    while True:
        missing = set(ids) - answered_ids(out_dir)
        if not missing:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"{out_dir}: after {timeout_s:g} s, {len(missing)} question(s) still "
                               f"have no answer from the other ranks; start the missing ranks again "
                               f"(they resume), or rerun without sharding to finish")
        time.sleep(poll_s)


def merge_predictions(out_dir: Path, order: Sequence[str], *,
                      keep_other_ids: bool = False) -> tuple[Path, int]:
    """All prediction files -> ``predictions.jsonl`` in ``order`` (first record per id); the rank
    files are removed once the merged file is in place. Returns (path, duplicates dropped).

    An id not in ``order`` is an error (the folder holds another data set's answers), unless
    ``keep_other_ids``: then such records follow the ordered ones, in file order.
    """
    position = {item_id: index for index, item_id in enumerate(order)}
    files = prediction_files(out_dir)
    chosen: dict[str, dict] = {}
    duplicates = 0
    for path in files:
        for record in read_run_file(path):
            item_id = str(record["question_id"])
            if item_id not in position:
                if not keep_other_ids:
                    raise InputError(f"{path}: answer for id {item_id!r}, which the data does not "
                                     f"hold; this folder holds another run's answers; use a new "
                                     f"--out")
                position[item_id] = len(position)
            if item_id in chosen:
                duplicates += 1
            else:
                chosen[item_id] = record
    merged = out_dir / PREDICTIONS
    partial = out_dir / (PREDICTIONS + ".merging")
    with partial.open("w", encoding="utf-8") as handle:
        for item_id in sorted(chosen, key=position.__getitem__):
            handle.write(json.dumps(chosen[item_id], ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, merged)
    for path in files:
        if path != merged:
            path.unlink()
    return merged, duplicates


def check_run_config(out_dir: Path, config: dict[str, Any], identity: Sequence[str]) -> None:
    """Write ``run.json``, or check that an existing one describes the same run."""
    path = out_dir / RUN_CONFIG
    if path.is_file():
        saved = json.loads(path.read_text(encoding="utf-8"))
        changed = [key for key in identity if saved.get(key) != config.get(key)]
        if changed:
            details = ", ".join(f"{key}: {saved.get(key)!r} -> {config.get(key)!r}" for key in changed)
            raise InputError(f"{out_dir} holds a run with other settings ({details}); resume it with "
                             f"the same settings or write to a new --out")
    partial = path.with_suffix(f".json.{os.getpid()}")
    partial.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, path)  # atomic: ranks starting together never read half a file


def batched(items: Sequence[EvalItem], size: int) -> Iterator[list[EvalItem]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def generate_shard(answer: Callable[[list[EvalItem]], list[dict]], items: Sequence[EvalItem],
                   out_dir: Path, *, batch_size: int, rank: int, world: int, desc: str) -> int:
    """Answer this rank's unanswered items (question k belongs to rank k % world), appending each
    record as soon as its batch is generated; returns the number of new answers."""
    from tqdm import tqdm

    if batch_size < 1:
        raise InputError(f"--batch-size must be at least 1, got {batch_size}")
    mine = [item for index, item in enumerate(items) if index % world == rank]
    done = answered_ids(out_dir)
    pending = [item for item in mine if item.id not in done]
    written = 0
    label = desc if world == 1 else f"{desc} [rank {rank}/{world}]"
    with PredictionWriter(shard_file(out_dir, rank, world)) as writer, \
            tqdm(total=len(mine), initial=len(mine) - len(pending), desc=label, unit="q",
                 dynamic_ncols=True) as progress:
        for batch in batched(pending, batch_size):
            for record in answer(batch):
                writer.write(record)
                written += 1
                progress.update(1)
    return written


def trace_columns(trace: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The per-image trace as one list per key (a key with the same value everywhere: the value),
    compact enough to keep with every answer (slice index and z of each CT slice, tile row/col)."""
    keys: list[str] = []
    for entry in trace:
        keys += [key for key in entry if key not in keys]
    columns = {}
    for key in keys:
        values = [entry.get(key) for entry in trace]
        columns[key] = values[0] if all(value == values[0] for value in values) else values
    return columns


def model_answerer(llava, model_id: str, max_new_tokens: int) -> Callable[[list[EvalItem]], list[dict]]:
    """Greedy answers for a batch of items (left-padded batch), as prediction records."""
    def answer(batch: list[EvalItem]) -> list[dict]:
        messages = [item.message() for item in batch]
        prompts = [protocol.chat_prompt(message.text) for message in messages]
        texts = llava.answer_prompts(prompts, [message.images for message in messages],
                                     max_new_tokens=max_new_tokens)
        return [{"question_id": item.id, "prompt": item.question, "text": text,
                 "model_id": model_id, "num_images": len(message.images), **item.fields,
                 "trace": trace_columns(message.trace)}
                for item, message, text in zip(batch, messages, texts)]

    return answer


@dataclass
class RunOutcome:
    out_dir: Path
    rank: int
    world: int
    new_answers: int
    result: Any = None  # rank 0 only: the task's score (ScoreResult, VniahResult)
    duplicates: int = 0


def load_on_cpu(model: str):
    from longllava.core.pipeline import LongLlava

    return LongLlava.load(model)


def run_task(task: EvalTask, config: Any, load_model: Callable[[], Any] | None = None, *,
             limit: int | None = None) -> RunOutcome:
    """The one run loop of every task: generate this rank's answers (resuming), then on rank 0
    wait for the other ranks, merge, score and write the results; see the module docstring.

    ``config`` (a :class:`RunConfig` or a V-NIAH config) gives ``out``, ``model``, ``batch_size``,
    ``max_new_tokens``, ``merge_timeout_s`` and the ``IDENTITY`` fields a restart must agree on.
    ``load_model`` returns a :class:`~longllava.core.pipeline.LongLlava` and is called once the
    data has been read (bad data fails fast); by default ``config.model`` is loaded on the CPU.
    """
    items = limit_items(task.items, limit)
    if not items:
        raise InputError(f"{config.data}: no questions to ask")
    max_new_tokens = config.max_new_tokens or task.max_new_tokens
    rank, world = shard_from_environment()
    out_dir = Path(config.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    saved = asdict(config) | task.run_fields | {"max_new_tokens": max_new_tokens}
    check_run_config(out_dir, saved, config.IDENTITY)
    llava = load_model() if load_model is not None else load_on_cpu(config.model)
    new = generate_shard(model_answerer(llava, config.model, max_new_tokens), items, out_dir,
                         batch_size=config.batch_size, rank=rank, world=world,
                         desc=task.benchmark)
    outcome = RunOutcome(out_dir, rank, world, new)
    if rank != 0:
        return outcome
    ids = [item.id for item in items]
    if world > 1:
        wait_for_answers(out_dir, ids, config.merge_timeout_s)
    merged, outcome.duplicates = merge_predictions(out_dir, [item.id for item in task.items],
                                                   keep_other_ids=task.keep_other_ids)
    asked = set(ids)
    predictions = [p for p in read_predictions(merged) if p.id in asked]
    outcome.result = task.score(predictions, ids)
    task.write(outcome.result, out_dir)
    return outcome


def run_benchmark(config: RunConfig, load_model: Callable[[], Any] | None = None) -> RunOutcome:
    """One benchmark run (:func:`run_task` over :func:`build_task`)."""
    return run_task(build_task(config), config, load_model, limit=config.limit)
