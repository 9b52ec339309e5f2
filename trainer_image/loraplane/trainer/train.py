"""`python -m loraplane.trainer --spec spec.json`: one training run, from a training spec to an evaluated,
checksummed, servable PEFT adapter.

Exit codes are the contract in :mod:`loraplane.api.exit_codes`. Under `torchrun` every rank trains
(DDP; gloo on CPU, NCCL on GPU); rank 0 evaluates and writes the adapter and result.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from loraplane.api.artifact import describe_adapter, sha256_json
from loraplane.api.conditions import JobReason
from loraplane.api.exit_codes import ExitCode
from loraplane.api.lora_rules import ALL_LINEAR, default_target_modules, servability_problems
from loraplane.api.result import BaseModelInfo, DatasetInfo, Outcome, TrainingResult
from loraplane.api.trainer_spec import TrainerSpec
from loraplane.trainer import data as data_mod
from loraplane.trainer.errors import Interrupted, InvalidData, InvalidSpec, OutOfMemory, TrainerError

logger = logging.getLogger("loraplane.trainer")
CHECKPOINTS = "checkpoints"


@dataclass
class Timer:
    marks: dict[str, float] = field(default_factory=dict)
    start: float = field(default_factory=time.monotonic)

    def lap(self, name: str, since: float) -> float:
        self.marks[name] = round(time.monotonic() - since, 3)
        return time.monotonic()


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


def choose_precision(requested: str) -> tuple[bool, bool]:
    """(bf16, fp16) for TrainingArguments."""
    import torch

    if requested == "fp32":
        return False, False
    if not torch.cuda.is_available():
        if requested in ("bf16", "fp16"):
            raise InvalidSpec(f"{requested} needs a GPU; use auto or fp32", field="spec.training.precision")
        return False, False
    if requested == "bf16" or (requested == "auto" and torch.cuda.is_bf16_supported()):
        return True, False
    return False, True


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


def load_examples(
    spec: TrainerSpec, token: str | None
) -> tuple[data_mod.DataSplits, list[data_mod.Example], list[data_mod.Example]]:
    """Training/validation examples, the held-out evaluation set, and the general held-out set."""
    from loraplane.trainer.templates import system_prompt

    ds = spec.dataset
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

    cache = Path(spec.cache_dir)
    path = data_mod.resolve_data_uri(ds.uri, spec.mounts, cache_dir=cache, token=token)
    records = data_mod.read_records(path)
    if ds.max_samples:
        records = records[: ds.max_samples]
    examples = data_mod.examples_from_records(records, ds, system_for)
    train, validation = data_mod.split(examples, ds.validation_split, spec.training.seed)
    general: list[data_mod.Example] = []
    if ds.general_mix_ratio > 0:
        general_records = data_mod.read_records(data_mod.resolve_data_uri("builtin://general", spec.mounts))
        general_all = data_mod.examples_from_records(general_records, ds.model_copy(update={"format": "Auto"}), None)
        general = data_mod.general_mix(len(train), ds.general_mix_ratio, general_all, spec.training.seed)
    splits = data_mod.DataSplits(
        train=train + general,
        validation=validation,
        general=general,
        dataset_hash=data_mod.records_hash(records),
        records=len(records),
    )
    ev = spec.evaluation
    if ev.held_out_uri:
        held_path = data_mod.resolve_data_uri(ev.held_out_uri, spec.mounts, cache_dir=cache, token=token)
        held = data_mod.examples_from_records(data_mod.read_records(held_path), ds, system_for)
    else:
        held = list(validation)
    general_held: list[data_mod.Example] = []
    if ev.measure_retention:
        from loraplane.trainer.demo_data import builtin_dataset_path

        recs = data_mod.read_records(builtin_dataset_path("general", "heldout"))
        general_held = data_mod.examples_from_records(recs, ds.model_copy(update={"format": "Auto"}), None)
    return splits, held[: ev.max_samples], general_held[: ev.max_samples]


def run(spec: TrainerSpec, *, raw_spec: dict[str, Any], progress: Any = None) -> TrainingResult | None:
    """Train, evaluate and write the adapter; returns the result (also written to result.json)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, set_seed
    from trl import SFTConfig  # type: ignore[attr-defined]

    from loraplane.trainer import kube_progress
    from loraplane.trainer.evaluate import evaluation_report, loss_report
    from loraplane.trainer.loss import AnswerLossTrainer
    from loraplane.trainer.models import resolve_model
    from loraplane.trainer.progress import CompleteMarker, GracefulStop, ProgressCallback, last_complete_checkpoint

    timer = Timer()
    t = time.monotonic()
    logger.info("rank %d of world size %d", rank(), world_size())
    problems = servability_problems(
        bias=spec.lora.bias,
        use_dora=spec.lora.use_dora,
        modules_to_save=spec.lora.modules_to_save,
        target_modules=spec.lora.target_modules,
        family=None,
    )
    if problems:
        raise InvalidSpec(problems[0].message, field=problems[0].field)
    bf16, fp16 = choose_precision(spec.training.precision)
    set_seed(spec.training.seed)
    token = os.environ.get(spec.hub_token_env) or None
    out_dir = Path(spec.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    resolved = resolve_model(
        spec.base_model,
        cache_dir=Path(spec.cache_dir),
        pvc_root=Path(spec.mounts.pvc_root),
        token=token,
        token_env=spec.hub_token_env,
    )
    t = timer.lap("download_seconds", t)
    splits, held_out, general_held = load_examples(spec, token)
    tokenizer = AutoTokenizer.from_pretrained(resolved.path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    train_tok = data_mod.tokenize(splits.train, tokenizer, spec.training.max_seq_length)
    # Eval loss on the validation split, or on the held-out set when the spec keeps no validation split.
    val_tok = data_mod.tokenize(splits.validation or held_out, tokenizer, spec.training.max_seq_length)
    if not train_tok.rows:
        raise InvalidData("no training example fits in maxSeqLength", field="spec.training.maxSeqLength")
    logger.info(
        "data: %d records, %d train (%d general), %d validation, %d held-out; %d truncated to %d tokens",
        splits.records,
        len(splits.train),
        len(splits.general),
        len(splits.validation),
        len(held_out),
        train_tok.truncated,
        spec.training.max_seq_length,
    )

    dtype = torch.bfloat16 if bf16 else torch.float16 if fp16 else torch.float32
    model: Any = AutoModelForCausalLM.from_pretrained(
        resolved.path, dtype=dtype, trust_remote_code=spec.base_model.trust_remote_code
    )
    targets = pick_target_modules(spec, model, resolved.family)
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
    t = timer.lap("setup_seconds", t)

    from datasets import Dataset

    ckpt_dir = out_dir / CHECKPOINTS
    tr = spec.training
    args = SFTConfig(
        output_dir=str(ckpt_dir),
        num_train_epochs=tr.epochs,
        max_steps=tr.max_steps or -1,
        per_device_train_batch_size=tr.batch_size,
        per_device_eval_batch_size=tr.batch_size,
        gradient_accumulation_steps=tr.gradient_accumulation_steps,
        learning_rate=tr.learning_rate,
        lr_scheduler_type=tr.lr_scheduler,
        warmup_steps=tr.warmup_ratio,  # a float < 1 is a ratio of the total steps
        weight_decay=tr.weight_decay,
        optim=tr.optimizer,
        bf16=bf16,
        fp16=fp16,
        gradient_checkpointing=tr.gradient_checkpointing,
        seed=tr.seed,
        data_seed=tr.seed,
        save_strategy="steps",
        save_steps=tr.checkpoint_steps,
        save_total_limit=2,
        eval_strategy="no",
        logging_steps=max(1, min(10, tr.checkpoint_steps)),
        logging_first_step=True,
        report_to="none",
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        max_length=None,  # truncation already done (and counted) by data.tokenize
        padding_free=tr.packing,  # flatten each batch: no padding at all (position_ids mark the sequences)
        dataset_kwargs={"skip_prepare_dataset": True},
        remove_unused_columns=False,
        ddp_backend=None if torch.cuda.is_available() else ("gloo" if world_size() > 1 else None),
        dataloader_num_workers=0,
        use_cpu=not torch.cuda.is_available(),
    )
    progress = progress or ProgressCallback()
    stop = GracefulStop()
    trainer = AnswerLossTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train_tok.rows),
        eval_dataset=Dataset.from_list(val_tok.rows) if val_tok.rows else None,
        processing_class=tokenizer,
        callbacks=[progress, stop, CompleteMarker(), *kube_progress.reporters(progress)],
    )
    trainer.remove_callback(PrinterCallback)  # our ProgressCallback reports instead of raw dicts on stdout
    resume = last_complete_checkpoint(ckpt_dir)
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
    t = timer.lap("train_seconds", t)

    metrics: dict[str, Any] = {
        "train_loss": round(float(train_out.training_loss), 5),
        "global_step": trainer.state.global_step,
        "epochs": round(float(trainer.state.epoch or 0), 3),
        "train_examples": len(train_tok.rows),
        "validation_examples": len(val_tok.rows),
        "truncated_examples": train_tok.truncated + val_tok.truncated,
        "train_tokens": train_tok.tokens,
        "train_completion_tokens": train_tok.completion_tokens,
        "general_examples": len(splits.general),
        "tokens_per_second": round(
            float(trainer.state.num_input_tokens_seen or 0) / max(timer.marks["train_seconds"], 1e-9), 1
        ),
    }
    peft_model: Any = trainer.model
    losses: dict[str, float] = {}
    if val_tok.rows:
        # Held-out answer loss of the adapter, and of the base model on the same tokens (adapter disabled).
        losses["adapter_loss"] = float(trainer.evaluate()["eval_loss"])
        with peft_model.disable_adapter():
            losses["base_loss"] = float(trainer.evaluate(metric_key_prefix="base")["base_loss"])
        adapter = loss_report(losses)
        metrics["eval_loss"], metrics["perplexity"] = adapter["adapter_loss"], adapter["adapter_perplexity"]
    if rank() != 0:
        return None  # rank 0 evaluates and writes the artifact

    evaluation = evaluation_report(trainer.model, tokenizer, held_out, general_held, spec.evaluation, losses)
    t = timer.lap("eval_seconds", t)

    # The adapter: PEFT files + result.json; checkpoints are only for resuming and go away.
    base_name = (
        spec.base_model.uri.split("://", 1)[1].split("@", 1)[0]
        if spec.base_model.uri.startswith(("hf://", "modelscope://"))
        else str(resolved.path)
    )
    peft_model.peft_config["default"].base_model_name_or_path = base_name
    peft_model.save_pretrained(str(out_dir))
    if spec.merge:
        merged = peft_model.merge_and_unload()
        merged.save_pretrained(str(out_dir / "merged"))
        tokenizer.save_pretrained(str(out_dir / "merged"))
    shutil.rmtree(ckpt_dir, ignore_errors=True)
    adapter_files = describe_adapter(out_dir, target_modules=targets, r=spec.lora.r, alpha=spec.lora.alpha)
    timer.lap("save_seconds", t)
    timer.marks["total_seconds"] = round(time.monotonic() - timer.start, 3)

    import peft
    import transformers

    result = TrainingResult(
        ok=True,
        code=int(ExitCode.SUCCESS),
        reason=JobReason.SUCCEEDED,
        name=spec.name,
        adapter=adapter_files,
        trainable_params=trainable,
        total_params=total,
        base_model=BaseModelInfo(
            uri=spec.base_model.uri, revision=resolved.revision, family=resolved.family, path=str(resolved.path)
        ),
        dataset=DatasetInfo(uri=spec.dataset.uri, sha256=splits.dataset_hash, records=splits.records),
        spec_sha256=sha256_json(raw_spec),
        metrics=metrics,
        evaluation=evaluation,
        durations=timer.marks,
        loss_history=[r for r in getattr(progress, "history", []) if r.loss is not None],
        versions={
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
    )
    result.write(out_dir)
    return result


def _termination_path(cli: Path | None) -> Path | None:
    if cli:
        return cli
    env = os.environ.get("LORAPLANE_TERMINATION_LOG")
    if env:
        return Path(env)
    default = Path("/dev/termination-log")
    return default if default.exists() and os.access(default, os.W_OK) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m loraplane.trainer", description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--spec", type=Path, required=True, help="training spec (JSON, the TrainerSpec model)")
    parser.add_argument("--termination-log", type=Path, default=None, help="where to write the <= 4 KiB summary")
    parser.add_argument("--output-dir", default=None, help="override the spec's outputDir")
    parser.add_argument("--cache-dir", default=None, help="override the spec's cacheDir")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("httpx", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    term = _termination_path(ns.termination_log)
    outcome: Outcome
    try:
        spec = load_spec(ns.spec)
        overrides = {k: v for k, v in {"output_dir": ns.output_dir, "cache_dir": ns.cache_dir}.items() if v}
        spec = spec.model_copy(update=overrides)
        spec = spec.model_copy(
            update={"output_dir": os.path.expanduser(spec.output_dir), "cache_dir": os.path.expanduser(spec.cache_dir)}
        )
        raw = json.loads(ns.spec.read_text(encoding="utf-8"))
        result = run(spec, raw_spec=raw)
        code = ExitCode.SUCCESS
        outcome = result or Outcome(ok=True, code=int(code), reason=JobReason.SUCCEEDED)
        if result is not None and result.adapter is not None:
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
    except TrainerError as exc:
        (logger.warning if exc.code == ExitCode.INTERRUPTED else logger.error)("%s: %s", exc.reason, exc)
        code = exc.code
        outcome = Outcome(ok=False, code=int(code), reason=exc.reason, message=str(exc))
    except MemoryError as exc:
        code = ExitCode.OUT_OF_MEMORY
        outcome = Outcome(
            ok=False, code=int(code), reason=JobReason.OUT_OF_MEMORY, message=f"out of host memory: {exc}"
        )
        logger.error("OutOfMemory: %s", exc)
    except Exception as exc:  # the contract: anything else is exit code 1, with the traceback
        logger.exception("unexpected error")
        code = ExitCode.UNEXPECTED
        outcome = Outcome(ok=False, code=int(code), reason=JobReason.UNEXPECTED, message=f"{type(exc).__name__}: {exc}")
    if term is not None and rank() == 0:
        try:
            term.write_text(outcome.summary().encode(), encoding="utf-8")
        except OSError as exc:
            logger.warning("cannot write the termination message to %s: %s", term, exc)
    return int(code)


if __name__ == "__main__":
    raise SystemExit(main())
