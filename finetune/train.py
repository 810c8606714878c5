"""The training engine: transformers' Trainer (accelerate underneath, DeepSpeed ZeRO-2/3 when a
config is given) over the data pipeline of :mod:`.data`, with the recipe deciding what trains.

Checkpoints every ``save_steps`` hold model, optimiser, scheduler, RNG states and the step (the
Trainer skips the batches already seen on resume); ``--resume`` continues from the last one and
ends where an uninterrupted run ends. Loss and learning rate go to ``train_log.jsonl`` (and
TensorBoard if asked); ``training_curve.png`` is drawn at the end.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import get_last_checkpoint

from longllava.core.checkpoint import load_model, save_model
from longllava.core.modeling import LongLlavaForConditionalGeneration
from longllava.core.processor import LongLlavaProcessor
from longllava.core.records import Record
from longllava.errors import InputError
from longllava.finetune.data import LengthGroupedSampler, PackedDataset, SampleEncoder, make_collate
from longllava.finetune.recipes import LoraSettings, Recipe

# transformers renamed TrainingArguments' gradient_checkpointing* to activation_checkpointing* after
# 5.20 (the floor in pyproject, which knows only the old names) and warns on the old ones
warnings.filterwarnings("ignore", message="`gradient_checkpointing", category=FutureWarning,
                        module="transformers.training_args")

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class TrainOptions:
    recipe: Recipe
    model: str
    out: Path
    max_steps: int | None = None
    resume: bool = False
    lora: bool = False
    merge: bool = False
    deepspeed: str | None = None
    save_steps: int = 50
    logging_steps: int = 5
    save_total_limit: int = 2
    num_workers: int = 0
    tensorboard: bool = False
    progress: bool = True
    learning_rate: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def deepspeed_config(name: str | None, recipe: Recipe) -> dict | None:
    """``zero2`` / ``zero3`` (shipped configs) or a path to a DeepSpeed JSON config, with the batch
    geometry written in: DeepSpeed derives the global batch from the processes it sees, which on a
    CPU (gloo) launch is not always the world size transformers assumes for ``"auto"``."""
    if name is None:
        return None
    path = CONFIG_DIR / f"{name}.json" if name in ("zero2", "zero3") else Path(name)
    if not path.is_file():
        raise InputError(f"DeepSpeed config {name!r} not found; use zero2, zero3 or a JSON file")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"DeepSpeed config {path} is not valid JSON: {error}") from error
    config.pop("train_batch_size", None)
    config["train_micro_batch_size_per_gpu"] = recipe.batch_size
    config["gradient_accumulation_steps"] = recipe.gradient_accumulation
    return config


def configure_cpu_deepspeed() -> dict:
    """accelerate sets up DeepSpeed's process group only for accelerator devices; on a CPU launch
    (``DS_ACCELERATOR=cpu``, torchrun or the deepspeed launcher) configure it here over gloo and let
    the Trainer use that state. A plain single-process run gets a one-process group."""
    from accelerate import PartialState

    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29511")):
        os.environ.setdefault(key, value)
    os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    try:
        PartialState(backend="gloo")
    finally:
        del os.environ["ACCELERATE_USE_DEEPSPEED"]
    return {"use_configured_state": True}


def set_trainable(model, trainable: str) -> None:
    """Freeze everything, then unfreeze what the stage trains."""
    model.requires_grad_(False)
    model.multi_modal_projector.requires_grad_(True)
    if trainable in ("language_model+projector", "all"):
        model.language_model.requires_grad_(True)
    if trainable == "all":
        model.vision_tower.requires_grad_(True)


def apply_lora(model, settings: LoraSettings):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=settings.target_modules,
        target_parameters=list(settings.target_parameters) if model.config.text_config.num_experts > 1 else None,
        modules_to_save=["multi_modal_projector"],
    )
    return get_peft_model(model, config)


def causal_lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    vocab_size: int,
    num_items_in_batch: torch.Tensor | None = None,
    ignore_index: int = -100,
    shift_labels: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    **kwargs,
) -> torch.Tensor:
    """transformers' causal-LM loss (tokens < n predict n, summed over ``num_items_in_batch`` when
    given) with ``label_smoothing``. It is set as the language model's loss function, so the MoE
    load-balancing term is still added to it; the Trainer's own label smoother would instead take the
    labels away from the model (no load-balancing term) and not shift them for this model class."""
    if shift_labels is None:
        shift_labels = torch.nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    reduction = "sum" if num_items_in_batch is not None else "mean"
    loss = torch.nn.functional.cross_entropy(
        logits.float().reshape(-1, vocab_size), shift_labels.reshape(-1).to(logits.device),
        ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
    )
    if reduction == "sum":
        loss = loss / torch.as_tensor(num_items_in_batch, device=loss.device)
    return loss


class JsonlLogger(TrainerCallback):
    """Appends every Trainer log (loss, lr, grad norm, evaluation metrics) to ``train_log.jsonl``."""

    def __init__(self, path: Path):
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            with self.path.open("a") as handle:
                handle.write(json.dumps({"step": state.global_step, "epoch": state.epoch, **logs}) + "\n")


class PeriodicEvaluation(TrainerCallback):
    """Runs ``evaluate(model) -> metrics`` every ``every`` steps and at the end; metrics are logged."""

    def __init__(self, evaluate: Callable[[Any], dict], every: int):
        self.evaluate, self.every = evaluate, every
        self.trainer: Trainer | None = None

    def _run(self, state, model):
        if not state.is_world_process_zero:
            return
        was_training = model.training
        model.eval()
        metrics = self.evaluate(model)
        model.train(was_training)
        self.trainer.log({f"eval_{k}": v for k, v in metrics.items()})

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if self.every and state.global_step % self.every == 0:
            self._run(state, model)


class LongLlavaTrainer(Trainer):
    def __init__(self, *args, lengths: Sequence[int], seed: int, mega: int = 50, **kwargs):
        super().__init__(*args, **kwargs)
        self.lengths = list(lengths)
        self.sampler_seed = seed
        self.mega = mega

    def _get_train_sampler(self, train_dataset=None):
        return LengthGroupedSampler(self.lengths, self.args.per_device_train_batch_size, seed=self.sampler_seed, mega=self.mega)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        # transformers writes MoE experts per expert and fuses them back only in `from_pretrained`;
        # the Trainer's own loader is a non-strict `load_state_dict` that would silently skip them
        # (and so resume with the experts of the initial model).
        model = self.model if model is None else model
        if not isinstance(model, LongLlavaForConditionalGeneration):  # LoRA: adapters only, stock path
            return super()._load_from_checkpoint(resume_from_checkpoint, model)
        saved = LongLlavaForConditionalGeneration.from_pretrained(resume_from_checkpoint, dtype=model.dtype)
        model.load_state_dict(saved.state_dict(), strict=True)

    def _save(self, output_dir=None, state_dict=None):
        # Under ZeRO-3 every rank takes part in gathering the weights (done by the caller), but only
        # the writing process may serialise them: on the others the gathered dict is empty, and
        # transformers' MoE weight conversion on save fails on empty expert tensors.
        if self.args.should_save:
            super()._save(output_dir, state_dict=state_dict)


def plot_training_curve(log_path: Path, png_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    losses = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    if not losses:
        return
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.plot(*zip(*losses), label="train loss")
    evals = {k for r in rows for k in r if k.startswith("eval_") and isinstance(r[k], (int, float))}
    if evals:
        twin = axis.twinx()
        for key in sorted(evals):
            points = [(r["step"], r[key]) for r in rows if key in r]
            twin.plot(*zip(*points), linestyle="--", marker="o", label=key)
        twin.set_ylabel("evaluation")
        twin.legend(loc="center right", fontsize=7)
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.legend(loc="upper right", fontsize=7)
    figure.tight_layout()
    figure.savefig(png_path, dpi=110)
    plt.close(figure)


def train(
    options: TrainOptions,
    records: Sequence[Record],
    evaluate: Callable[[Any], dict] | None = None,
    eval_every: int = 0,
) -> dict[str, Any]:
    """Train ``options.model`` on ``records`` with ``options.recipe``; returns a summary."""
    recipe = options.recipe
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    if options.resume and get_last_checkpoint(str(out)) is None:
        raise InputError(f"--resume: no checkpoint-* folder in {out} to resume from")
    if not options.resume and get_last_checkpoint(str(out)) is not None:
        raise InputError(f"{out} already holds checkpoints; pass --resume to continue, or choose a new --out")
    (out / "recipe.json").write_text(recipe.to_json())

    model, tokenizer = load_model(options.model)
    processor = LongLlavaProcessor.for_model(model, tokenizer)
    model.config.max_sequence_length = max(model.config.max_sequence_length, recipe.max_length)
    encoder = SampleEncoder(processor)
    samples = [encoder(record) for record in records]
    if not samples:
        raise InputError("no training samples")
    dataset = PackedDataset(samples, recipe.max_length, recipe.packing, processor.image_size)

    set_trainable(model, recipe.trainable)
    if recipe.label_smoothing:
        model.language_model.loss_function = functools.partial(causal_lm_loss, label_smoothing=recipe.label_smoothing)
    if model.config.text_config.num_experts > 1:
        model.language_model.config.output_router_logits = True  # router load-balancing loss
    if options.lora:
        model = apply_lora(model, recipe.lora or LoraSettings())
    model.train()

    on_cpu = not torch.cuda.is_available()
    if on_cpu:
        # accelerate imports DeepSpeed (when installed) to unwrap models even if it is not used;
        # named here, DeepSpeed does not warn that it detected no accelerator
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    accelerator_config = configure_cpu_deepspeed() if on_cpu and options.deepspeed else None
    args = TrainingArguments(
        output_dir=str(out),
        per_device_train_batch_size=recipe.batch_size,
        gradient_accumulation_steps=recipe.gradient_accumulation,
        learning_rate=options.learning_rate or recipe.learning_rate,
        lr_scheduler_type=recipe.lr_scheduler,
        warmup_steps=recipe.warmup_ratio,  # a float < 1 is a ratio of the total steps
        weight_decay=recipe.weight_decay,
        num_train_epochs=recipe.num_epochs,
        max_steps=options.max_steps or -1,
        logging_steps=options.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=options.save_steps,
        save_total_limit=options.save_total_limit,
        seed=recipe.seed,
        data_seed=recipe.seed,
        bf16=not on_cpu,
        use_cpu=on_cpu and options.deepspeed is None,
        gradient_checkpointing=recipe.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if recipe.gradient_checkpointing else None,
        deepspeed=deepspeed_config(options.deepspeed, recipe),
        dataloader_num_workers=options.num_workers,
        remove_unused_columns=False,
        report_to=["tensorboard"] if options.tensorboard else [],
        disable_tqdm=not options.progress,
        ddp_backend="gloo" if on_cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 and not options.deepspeed else None,
        accelerator_config=accelerator_config,
    )
    trainer = LongLlavaTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=make_collate(processor.pad_token_id),
        callbacks=[JsonlLogger(out / "train_log.jsonl")],
        lengths=dataset.lengths(),
        seed=recipe.seed,
        mega=recipe.length_group_batches,
    )
    if evaluate is not None:
        periodic = PeriodicEvaluation(evaluate, eval_every)
        periodic.trainer = trainer
        trainer.add_callback(periodic)
    result = trainer.train(resume_from_checkpoint=True if options.resume else None)

    final = out / "final"
    if options.deepspeed:
        trainer.save_model(str(final))  # every rank joins the ZeRO-3 gather; rank 0 writes
        if trainer.is_world_process_zero():
            tokenizer.save_pretrained(final)
    summary: dict[str, Any] = {
        "recipe": recipe.name,
        "steps": trainer.state.global_step,
        "train_loss": result.training_loss,
        "samples": len(samples),
        "rows": len(dataset),
        "final": str(final),
    }
    if trainer.is_world_process_zero():
        trained = trainer.model
        if options.lora and options.merge:
            trained = trained.merge_and_unload()
            summary["merged"] = True
        if not options.deepspeed:
            save_model(trained, tokenizer, final)
        if evaluate is not None:
            summary["eval"] = evaluate(trained.eval())
        log = out / "train_log.jsonl"
        if log.is_file():
            plot_training_curve(log, out / "training_curve.png")
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
