"""`python -m loraplane.trainer --spec spec.json`: one training run, from a training spec to an evaluated,
checksummed, servable PEFT adapter.

Exit codes are the contract in :mod:`loraplane.api.exit_codes`. Under `torchrun` every rank trains
(DDP; gloo on CPU, NCCL on GPU); rank 0 evaluates and writes the adapter and result.json.

The run, in the order :func:`run` calls its phases:

1. :func:`check_spec` refuses what vLLM cannot serve and a precision the machine lacks, before any download;
2. :func:`resolve_base_model` puts the base model on local disk;
3. :func:`load_data` reads, splits and tokenizes the examples (:func:`load_examples`);
4. :func:`build_model` loads the model and wraps it in LoRA;
5. :func:`train_resumable` trains with the :func:`training_arguments`, from the newest complete checkpoint;
6. :func:`validation_losses` (every rank), then on rank 0 only `evaluation_report` (evaluate.py) compares base
   and adapter;
7. :func:`write_adapter` saves the PEFT directory, and :func:`training_result` describes it in result.json.

Heavy libraries (torch, transformers, peft, TRL) are imported inside the functions that use them, so
`--help` and importing this module stay light.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from pydantic import ValidationError

from loraplane.api.artifact import describe_adapter, sha256_json
from loraplane.api.conditions import JobReason
from loraplane.api.exit_codes import ExitCode
from loraplane.api.lora_rules import ALL_LINEAR, default_target_modules, servability_problems
from loraplane.api.result import (
    AdapterFiles,
    BaseModelInfo,
    DatasetInfo,
    Evaluation,
    Outcome,
    ProgressRecord,
    ResultSummary,
    TrainingResult,
)
from loraplane.api.trainer_spec import TrainerSpec
from loraplane.trainer import data as data_mod
from loraplane.trainer.errors import Interrupted, InvalidData, InvalidSpec, OutOfMemory, PushFailed, TrainerError
from loraplane.trainer.models import ResolvedModel, resolve_base_model

if TYPE_CHECKING:
    from loraplane.trainer.progress import GracefulStop

logger = logging.getLogger("loraplane.trainer")
CHECKPOINTS = "checkpoints"
HEAVY_MODULES = ("torch", "transformers", "peft", "trl", "datasets")

Precision = Literal["bf16", "fp16", "fp32"]


@dataclass
class Timer:
    """Wall-clock seconds per phase, in the order the phases ran (result.json's `durations`)."""

    marks: dict[str, float] = field(default_factory=dict)
    start: float = field(default_factory=time.monotonic)
    last: float = field(default_factory=time.monotonic)

    def lap(self, name: str) -> None:
        """Record the seconds since the previous lap (or the start) as `name`."""
        now = time.monotonic()
        self.marks[name] = round(now - self.last, 3)
        self.last = time.monotonic()

    def finish(self) -> dict[str, float]:
        """The marks with `total_seconds` since the start."""
        self.marks["total_seconds"] = round(time.monotonic() - self.start, 3)
        return self.marks


# ---------------------------------------------------------------------------------------------------------------------
# the spec and the machine


def load_spec(path: Path) -> TrainerSpec:
    """The training spec; a wrong field is an InvalidSpec naming it."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise InvalidSpec(f"cannot read training spec {path}: {exc}") from exc
    try:
        return TrainerSpec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InvalidSpec(f"{err['msg']} ({len(exc.errors())} problem(s))", field=f"spec.{where}") from exc


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass(frozen=True)
class Device:
    """What the training arguments depend on about the machine."""

    cuda: bool = False
    bf16_supported: bool = False  # the GPU computes in bf16 (never on CPU: training runs in fp32 there)
    world_size: int = 1  # processes training together (torchrun's WORLD_SIZE)

    @classmethod
    def detect(cls) -> Device:
        """This process's device, as torch and torchrun see it."""
        import torch

        cuda = torch.cuda.is_available()
        return cls(cuda=cuda, bf16_supported=cuda and torch.cuda.is_bf16_supported(), world_size=world_size())


def choose_precision(requested: str, device: Device) -> Precision:
    """The precision to train in (pure): `auto` is bf16 where the GPU has it, else fp16 on a GPU, fp32 on CPU.

    bf16 or fp16 requested without a GPU is an InvalidSpec.
    """
    if requested == "fp32":
        return "fp32"
    if not device.cuda:
        if requested in ("bf16", "fp16"):
            raise InvalidSpec(f"{requested} needs a GPU; use auto or fp32", field="spec.training.precision")
        return "fp32"
    if requested == "bf16" or (requested == "auto" and device.bf16_supported):
        return "bf16"
    return "fp16"


def check_spec(spec: TrainerSpec, device: Device) -> Precision:
    """The precision to train in, after refusing what vLLM cannot serve (before any download)."""
    problems = servability_problems(
        bias=spec.lora.bias,
        use_dora=spec.lora.use_dora,
        modules_to_save=spec.lora.modules_to_save,
        target_modules=spec.lora.target_modules,
        family=None,
    )
    if problems:
        raise InvalidSpec(problems[0].message, field=problems[0].field)
    return choose_precision(spec.training.precision, device)


def training_arguments(spec: TrainerSpec, checkpoints: Path, device: Device) -> dict[str, Any]:
    """The keyword arguments of TRL's SFTConfig for `spec` on `device` (pure).

    Checkpoints go to `checkpoints` every `checkpointSteps` (the last two kept), logs every
    min(10, checkpointSteps) steps; packing trains padding-free; evaluation runs once, after training.
    """
    tr = spec.training
    precision = choose_precision(tr.precision, device)
    return {
        "output_dir": str(checkpoints),
        "num_train_epochs": tr.epochs,
        "max_steps": tr.max_steps or -1,
        "per_device_train_batch_size": tr.batch_size,
        "per_device_eval_batch_size": tr.batch_size,
        "gradient_accumulation_steps": tr.gradient_accumulation_steps,
        "learning_rate": tr.learning_rate,
        "lr_scheduler_type": tr.lr_scheduler,
        "warmup_steps": tr.warmup_ratio,  # a float < 1 is a ratio of the total steps
        "weight_decay": tr.weight_decay,
        "optim": tr.optimizer,
        "bf16": precision == "bf16",
        "fp16": precision == "fp16",
        "gradient_checkpointing": tr.gradient_checkpointing,
        "seed": tr.seed,
        "data_seed": tr.seed,
        "save_strategy": "steps",
        "save_steps": tr.checkpoint_steps,
        "save_total_limit": 2,
        "eval_strategy": "no",
        "logging_steps": max(1, min(10, tr.checkpoint_steps)),
        "logging_first_step": True,
        "report_to": "none",
        "disable_tqdm": True,
        "include_num_input_tokens_seen": "non_padding",
        "max_length": None,  # truncation already done (and counted) by data.tokenize
        "padding_free": tr.packing,  # flatten each batch: no padding at all (position_ids mark the sequences)
        "dataset_kwargs": {"skip_prepare_dataset": True},
        "remove_unused_columns": False,
        "ddp_backend": None if device.cuda else ("gloo" if device.world_size > 1 else None),
        "dataloader_num_workers": 0,
        "use_cpu": not device.cuda,
    }


# ---------------------------------------------------------------------------------------------------------------------
# data


class Examples(NamedTuple):
    """The examples of a spec: what trains, and what evaluation generates on."""

    splits: data_mod.DataSplits  # training (with the general mix) and validation examples
    held_out: list[data_mod.Example]  # the held-out set (the validation split when the spec names none)
    general_held: list[data_mod.Example]  # general-ability held-out set (empty unless measureRetention)


def load_examples(spec: TrainerSpec, token: str | None) -> Examples:
    """Training/validation examples, the held-out evaluation set, and the general held-out set."""
    from loraplane.trainer.demo_data import builtin_dataset_path
    from loraplane.trainer.templates import system_prompt

    ds, ev = spec.dataset, spec.evaluation
    tmpl = ds.template

    def system_for(record: dict[str, Any]) -> str | None:
        if tmpl is None:
            return None
        return system_prompt(
            tmpl.builtin,
            tmpl.inline,
            instruction=str(record.get("instruction", "")),
            input=str(record.get("input", "")),
        )

    def read(uri: str) -> list[dict[str, Any]]:
        return data_mod.read_records(data_mod.resolve_data_uri(uri, spec.mounts, cache_dir=cache, token=token))

    cache = Path(spec.cache_dir)
    general_format = ds.model_copy(update={"format": "Auto"})
    records = read(ds.uri)
    if ds.max_samples:
        records = records[: ds.max_samples]
    examples = data_mod.examples_from_records(records, ds, system_for)
    train, validation = data_mod.split(examples, ds.validation_split, spec.training.seed)
    general: list[data_mod.Example] = []
    if ds.general_mix_ratio > 0:
        general_all = data_mod.examples_from_records(read("builtin://general"), general_format, None)
        general = data_mod.general_mix(len(train), ds.general_mix_ratio, general_all, spec.training.seed)
    splits = data_mod.DataSplits(
        train=train + general,
        validation=validation,
        general=general,
        dataset_hash=data_mod.records_hash(records),
        records=len(records),
    )
    held = data_mod.examples_from_records(read(ev.held_out_uri), ds, system_for) if ev.held_out_uri else validation
    general_held: list[data_mod.Example] = []
    if ev.measure_retention:
        recs = data_mod.read_records(builtin_dataset_path("general", "heldout"))
        general_held = data_mod.examples_from_records(recs, general_format, None)
    return Examples(splits, held[: ev.max_samples], general_held[: ev.max_samples])


@dataclass
class TrainingData:
    """What :func:`load_data` produces: the examples, the tokenizer, and the rows the Trainer reads."""

    examples: Examples
    tokenizer: Any
    train: data_mod.Tokenized
    validation: data_mod.Tokenized  # the validation split, or the held-out set when the spec keeps none


def load_tokenizer(model_path: Path) -> Any:
    """The base model's tokenizer, with a pad token (eos when the model has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_data(spec: TrainerSpec, model_path: Path, token: str | None) -> TrainingData:
    """The spec's examples tokenized with the base model's chat template; InvalidData when none fits."""
    examples = load_examples(spec, token)
    splits, held_out = examples.splits, examples.held_out
    tokenizer = load_tokenizer(model_path)
    max_length = spec.training.max_seq_length
    train = data_mod.tokenize(splits.train, tokenizer, max_length)
    # Eval loss on the validation split, or on the held-out set when the spec keeps no validation split.
    validation = data_mod.tokenize(splits.validation or held_out, tokenizer, max_length)
    if not train.rows:
        raise InvalidData("no training example fits in maxSeqLength", field="spec.training.maxSeqLength")
    logger.info(
        "data: %d records, %d train (%d general), %d validation, %d held-out; %d truncated to %d tokens",
        splits.records,
        len(splits.train),
        len(splits.general),
        len(splits.validation),
        len(held_out),
        train.truncated,
        max_length,
    )
    return TrainingData(examples=examples, tokenizer=tokenizer, train=train, validation=validation)


# ---------------------------------------------------------------------------------------------------------------------
# model


def pick_target_modules(spec: TrainerSpec, model: Any, family: str | None) -> list[str] | str:
    """The spec's target modules (checked against the model) or the architecture's default."""
    wanted = spec.lora.target_modules or default_target_modules(family or "")
    if ALL_LINEAR in wanted:
        return ALL_LINEAR
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = [m for m in wanted if m not in names]
    if missing:
        import torch

        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise InvalidSpec(
            f"{missing} not found in this {family or 'unknown'} model; its linear layers are {linear} "
            f"(or use [{ALL_LINEAR}])",
            field="spec.lora.targetModules",
        )
    return list(wanted)


@dataclass
class LoraModel:
    """What :func:`build_model` produces: the base model wrapped in LoRA, and what was adapted."""

    model: Any  # a peft PeftModel
    target_modules: list[str] | str
    trainable_params: int
    total_params: int


def build_model(spec: TrainerSpec, model_path: Path, family: str | None, precision: Precision) -> LoraModel:
    """The base model in `precision` with fresh LoRA weights on the target modules."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    model: Any = AutoModelForCausalLM.from_pretrained(
        model_path, dtype=dtype, trust_remote_code=spec.base_model.trust_remote_code
    )
    targets = pick_target_modules(spec, model, family)
    lora = LoraConfig(
        r=spec.lora.r,
        lora_alpha=spec.lora.alpha,  # type: ignore[arg-type]  # peft accepts a float alpha
        lora_dropout=spec.lora.dropout,
        target_modules=targets,
        bias=spec.lora.bias,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    logger.info(
        "LoRA r=%d alpha=%s on %s: trainable params %d of %d (%.4f%%)",
        spec.lora.r,
        spec.lora.alpha,
        targets,
        trainable,
        total,
        100 * trainable / total,
    )
    return LoraModel(model=model, target_modules=targets, trainable_params=trainable, total_params=total)


# ---------------------------------------------------------------------------------------------------------------------
# training


def make_trainer(args: dict[str, Any], lora: LoraModel, data: TrainingData, callbacks: list[Any]) -> Any:
    """The SFT trainer (answer-only loss) over the tokenized rows, with `callbacks` reporting its progress."""
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import SFTConfig  # type: ignore[attr-defined]

    from loraplane.trainer.loss import AnswerLossTrainer

    trainer = AnswerLossTrainer(
        model=lora.model,
        args=SFTConfig(**args),
        train_dataset=Dataset.from_list(data.train.rows),
        eval_dataset=Dataset.from_list(data.validation.rows) if data.validation.rows else None,
        processing_class=data.tokenizer,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # our ProgressCallback reports instead of raw dicts on stdout
    return trainer


def train_resumable(trainer: Any, checkpoints: Path, stop: GracefulStop) -> Any:
    """Train from the newest complete checkpoint in `checkpoints` (from scratch without one); the TrainOutput.

    SIGTERM/SIGINT (`stop`, a GracefulStop among the trainer's callbacks) checkpoints the current step and
    raises Interrupted; running out of GPU memory raises OutOfMemory.
    """
    import torch

    from loraplane.trainer.progress import last_complete_checkpoint

    resume = last_complete_checkpoint(checkpoints)
    if resume:
        logger.info("resuming from %s", resume)
    stop.install()
    try:
        train_out = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    except torch.OutOfMemoryError as exc:
        raise OutOfMemory(
            f"out of memory while training: lower spec.training.batchSize or maxSeqLength ({exc})"
        ) from exc
    finally:
        stop.uninstall()
    if stop.requested:
        raise Interrupted(f"stopped at step {trainer.state.global_step}; checkpoint saved, a rerun resumes")
    return train_out


def training_metrics(trainer: Any, train_out: Any, data: TrainingData, train_seconds: float) -> dict[str, Any]:
    """result.json's `metrics` of the training itself (loss, steps, examples, tokens and their rate)."""
    splits = data.examples.splits
    return {
        "train_loss": round(float(train_out.training_loss), 5),
        "global_step": trainer.state.global_step,
        "epochs": round(float(trainer.state.epoch or 0), 3),
        "train_examples": len(data.train.rows),
        "validation_examples": len(data.validation.rows),
        "truncated_examples": data.train.truncated + data.validation.truncated,
        "train_tokens": data.train.tokens,
        "train_completion_tokens": data.train.completion_tokens,
        "general_examples": len(splits.general),
        "tokens_per_second": round(float(trainer.state.num_input_tokens_seen or 0) / max(train_seconds, 1e-9), 1),
    }


# ---------------------------------------------------------------------------------------------------------------------
# evaluation


def validation_losses(trainer: Any, data: TrainingData) -> dict[str, float]:
    """The adapter's mean answer loss on the validation rows, and the base model's on the same tokens (adapter
    disabled); empty without validation rows. Every rank takes part (evaluation is collective under DDP)."""
    if not data.validation.rows:
        return {}
    losses = {"adapter_loss": float(trainer.evaluate()["eval_loss"])}
    with trainer.model.disable_adapter():
        losses["base_loss"] = float(trainer.evaluate(metric_key_prefix="base")["base_loss"])
    return losses


def loss_metrics(losses: dict[str, float]) -> dict[str, float]:
    """result.json's `eval_loss` and `perplexity` metrics: the adapter's (none without validation losses)."""
    from loraplane.trainer.evaluate import loss_report

    if not losses:
        return {}
    report = loss_report(losses)
    return {"eval_loss": report["adapter_loss"], "perplexity": report["adapter_perplexity"]}


# ---------------------------------------------------------------------------------------------------------------------
# the artifact


def base_model_name(spec: TrainerSpec, model_path: Path) -> str:
    """What the adapter config records as its base: the hub repository, else the local checkpoint path."""
    uri = spec.base_model.uri
    if uri.startswith(("hf://", "modelscope://")):
        return uri.split("://", 1)[1].split("@", 1)[0]
    return str(model_path)


def write_adapter(
    spec: TrainerSpec, model_path: Path, peft_model: Any, targets: list[str] | str, tokenizer: Any
) -> AdapterFiles:
    """The trained PEFT adapter (and the merged model when `spec.merge`) in the output directory, described file
    by file. The checkpoints were only for resuming and are removed."""
    out_dir = Path(spec.output_dir)
    peft_model.peft_config["default"].base_model_name_or_path = base_model_name(spec, model_path)
    peft_model.save_pretrained(str(out_dir))
    if spec.merge:
        merged = peft_model.merge_and_unload()
        merged.save_pretrained(str(out_dir / "merged"))
        tokenizer.save_pretrained(str(out_dir / "merged"))
    shutil.rmtree(out_dir / CHECKPOINTS, ignore_errors=True)
    return describe_adapter(out_dir, target_modules=targets, r=spec.lora.r, alpha=spec.lora.alpha)


def library_versions() -> dict[str, str]:
    """The versions that trained the adapter."""
    return {
        "python": platform.python_version(),
        **{name: str(importlib.import_module(name).__version__) for name in ("torch", "transformers", "peft")},
    }


def training_result(
    spec: TrainerSpec,
    raw_spec: dict[str, Any],
    resolved: ResolvedModel,
    lora: LoraModel,
    splits: data_mod.DataSplits,
    *,
    adapter: AdapterFiles,
    metrics: dict[str, Any],
    evaluation: Evaluation | None,
    durations: dict[str, float],
    history: list[ProgressRecord],
) -> TrainingResult:
    """result.json of a successful run: what was trained on what, the files, the numbers, the loss curve."""
    return TrainingResult(
        ok=True,
        code=int(ExitCode.SUCCESS),
        reason=JobReason.SUCCEEDED,
        name=spec.name,
        adapter=adapter,
        trainable_params=lora.trainable_params,
        total_params=lora.total_params,
        base_model=BaseModelInfo(
            uri=spec.base_model.uri, revision=resolved.revision, family=resolved.family, path=str(resolved.path)
        ),
        dataset=DatasetInfo(uri=spec.dataset.uri, sha256=splits.dataset_hash, records=splits.records),
        spec_sha256=sha256_json(raw_spec),
        metrics=metrics,
        evaluation=evaluation,
        durations=durations,
        loss_history=[r for r in history if r.loss is not None],
        versions=library_versions(),
    )


# ---------------------------------------------------------------------------------------------------------------------
# the run


def run(spec: TrainerSpec, *, raw_spec: dict[str, Any], progress: Any = None) -> TrainingResult | None:
    """Train, evaluate and write the adapter; returns the result (also written to result.json), None on ranks
    other than 0."""
    from transformers import set_seed

    from loraplane.trainer import kube_progress
    from loraplane.trainer.evaluate import evaluation_report
    from loraplane.trainer.progress import CompleteMarker, GracefulStop, ProgressCallback

    for name in HEAVY_MODULES:  # imported before the clock starts: the durations measure work, not imports
        importlib.import_module(name)
    timer = Timer()
    logger.info("rank %d of world size %d", rank(), world_size())
    device = Device.detect()
    precision = check_spec(spec, device)
    set_seed(spec.training.seed)
    token = os.environ.get(spec.hub_token_env) or None
    out_dir = Path(spec.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoints = out_dir / CHECKPOINTS
    resolved = resolve_base_model(spec, token)
    timer.lap("download_seconds")
    data = load_data(spec, resolved.path, token)
    lora = build_model(spec, resolved.path, resolved.family, precision)
    timer.lap("setup_seconds")

    progress = progress or ProgressCallback()
    stop = GracefulStop()
    callbacks = [progress, stop, CompleteMarker(), *kube_progress.reporters(progress)]
    trainer = make_trainer(training_arguments(spec, checkpoints, device), lora, data, callbacks)
    train_out = train_resumable(trainer, checkpoints, stop)
    timer.lap("train_seconds")
    metrics = training_metrics(trainer, train_out, data, timer.marks["train_seconds"])
    losses = validation_losses(trainer, data)
    metrics.update(loss_metrics(losses))
    if rank() != 0:
        return None  # rank 0 evaluates and writes the artifact

    held_out, general_held = data.examples.held_out, data.examples.general_held
    evaluation = evaluation_report(trainer.model, data.tokenizer, held_out, general_held, spec.evaluation, losses)
    timer.lap("eval_seconds")
    adapter = write_adapter(spec, resolved.path, trainer.model, lora.target_modules, data.tokenizer)
    timer.lap("save_seconds")
    result = training_result(
        spec,
        raw_spec,
        resolved,
        lora,
        data.examples.splits,
        adapter=adapter,
        metrics=metrics,
        evaluation=evaluation,
        durations=timer.finish(),
        history=getattr(progress, "history", []),
    )
    result.write(out_dir)
    return result


# ---------------------------------------------------------------------------------------------------------------------
# the command


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loraplane.trainer", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--spec", type=Path, required=True, help="training spec (JSON, the TrainerSpec model)")
    parser.add_argument("--termination-log", type=Path, default=None, help="where to write the <= 4 KiB summary")
    parser.add_argument("--output-dir", default=None, help="override the spec's outputDir")
    parser.add_argument("--cache-dir", default=None, help="override the spec's cacheDir")
    return parser.parse_args(argv)


def spec_with_overrides(path: Path, *, output_dir: str | None, cache_dir: str | None) -> TrainerSpec:
    """The spec file's TrainerSpec with the command line's directories, `~` expanded."""
    spec = load_spec(path)
    overrides = {k: v for k, v in {"output_dir": output_dir, "cache_dir": cache_dir}.items() if v}
    spec = spec.model_copy(update=overrides)
    return spec.model_copy(
        update={"output_dir": os.path.expanduser(spec.output_dir), "cache_dir": os.path.expanduser(spec.cache_dir)}
    )


def log_adapter(result: TrainingResult | None) -> None:
    """One line on the finished adapter and its evaluation."""
    if result is None or result.adapter is None:
        return
    ev = result.evaluation
    logger.info(
        "adapter %s sha256=%s; %s base=%s adapter=%s passed=%s",
        result.adapter.path,
        result.adapter.sha256[:12],
        ev.metric if ev else None,
        ev.base_score if ev else None,
        ev.adapter_score if ev else None,
        ev.passed if ev else None,
    )


def failure(exc: Exception) -> Outcome:
    """The outcome of a run that raised `exc`: its exit code and reason, and a message for the user (logged)."""
    if isinstance(exc, TrainerError):
        (logger.warning if exc.code == ExitCode.INTERRUPTED else logger.error)("%s: %s", exc.reason, exc)
        return Outcome(ok=False, code=int(exc.code), reason=exc.reason, message=str(exc))
    if isinstance(exc, MemoryError):
        logger.error("OutOfMemory: %s", exc)
        return Outcome(
            ok=False,
            code=int(ExitCode.OUT_OF_MEMORY),
            reason=JobReason.OUT_OF_MEMORY,
            message=f"out of host memory: {exc}",
        )
    # the contract: anything else is exit code 1, with the traceback
    logger.error("unexpected error", exc_info=exc)
    return Outcome(
        ok=False, code=int(ExitCode.UNEXPECTED), reason=JobReason.UNEXPECTED, message=f"{type(exc).__name__}: {exc}"
    )


def termination_path(cli: Path | None) -> Path | None:
    """Where the termination summary goes: the command line's, $LORAPLANE_TERMINATION_LOG, or Kubernetes'."""
    if cli:
        return cli
    env = os.environ.get("LORAPLANE_TERMINATION_LOG")
    if env:
        return Path(env)
    default = Path("/dev/termination-log")
    return default if default.exists() and os.access(default, os.W_OK) else None


def write_termination(path: Path | None, summary: ResultSummary) -> None:
    """The <= 4 KiB summary the operator reads (rank 0 only; a failure to write it is logged, never fatal)."""
    if path is None or rank() != 0:
        return
    try:
        path.write_text(summary.encode(), encoding="utf-8")
    except OSError as exc:
        logger.warning("cannot write the termination message to %s: %s", path, exc)


def publish(spec: TrainerSpec) -> str:
    """Push the adapter directory to spec.output_uri; the pinned reference for the summary: an oci:// one by
    manifest digest, an s3:// one by the adapter sha256. PushFailed naming spec.output.uri when it cannot."""
    assert spec.output_uri is not None
    if spec.output_uri.startswith("s3://"):
        return _publish_s3(spec.output_uri, Path(spec.output_dir))
    from loraplane.api.oci import OciRef
    from loraplane.serving.oci_store import RegistryAccess, StoreError, push

    ref = OciRef.parse(spec.output_uri)
    try:
        pushed = push(Path(spec.output_dir), ref, RegistryAccess.from_env(plain_http=spec.output_plain_http))
    except StoreError as exc:
        raise PushFailed(str(exc), field="spec.output.uri") from exc
    logger.info("pushed the adapter to %s (%d bytes)", pushed.ref, pushed.size_bytes)
    return str(pushed.ref)


def _publish_s3(uri: str, adapter_dir: Path) -> str:
    """Push to an S3-compatible store reached through the pod's AWS_* environment; s3://BUCKET/PREFIX@sha256:..."""
    from loraplane.api.s3 import S3Ref
    from loraplane.serving.oci_store import StoreError
    from loraplane.serving.s3_store import S3Access, push

    try:
        ref = S3Ref.parse(uri)
        pinned = ref.pinned(push(adapter_dir, ref, S3Access.from_env()))
    except (StoreError, ValueError) as exc:  # ValueError: the reference, or an unreadable credentials file
        raise PushFailed(str(exc), field="spec.output.uri") from exc
    logger.info("pushed the adapter to %s", pinned)
    return str(pinned)


def summary_field(output_uri: str) -> str:
    """The termination summary's field for where the adapter was pushed: `s3_uri` or `oci_uri`."""
    return "s3_uri" if output_uri.startswith("s3://") else "oci_uri"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    term = termination_path(args.termination_log)
    try:
        spec = spec_with_overrides(args.spec, output_dir=args.output_dir, cache_dir=args.cache_dir)
        raw = json.loads(args.spec.read_text(encoding="utf-8"))
        result = run(spec, raw_spec=raw)
        log_adapter(result)
        summary = (result or Outcome(ok=True, code=int(ExitCode.SUCCESS), reason=JobReason.SUCCEEDED)).summary()
        if result is not None and spec.output_uri:
            summary = summary.model_copy(update={summary_field(spec.output_uri): publish(spec)})
    except Exception as exc:
        summary = failure(exc).summary()
    write_termination(term, summary)
    return summary.code


if __name__ == "__main__":
    raise SystemExit(main())
