"""Our trainer vs the seed's recipe on the same model and data, one run, side by side.

The seed's recipe: a plain transformers `Trainer`, every example padded to max length 1024, batch 12
(as 2 x 6 gradient accumulation: 12 x 1024 at once does not fit in 24 GiB of RAM), loss on every
token. Ours: `python -m loraplane.trainer` with the same batch size, max length, learning rate, LoRA
settings and examples (padding-free batches, loss on the answer only).

Both adapters are then scored by one function: mean loss on the answer tokens of the same held-out
examples. Throughput counts only non-padding tokens, over the time spent in training.

    python bench/train_throughput.py [--examples 36] [--heldout 40]

Last line: `train_throughput speedup=<x> ours_tok_s=<n> seed_tok_s=<n> ours_eval_loss=<f> seed_eval_loss=<f>`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # `tests.support.bench`: the trainer as a child, the table

from loraplane.api.result import TrainingResult  # noqa: E402
from loraplane.serving import proctree  # noqa: E402
from tests.support.bench import Column, run_trainer, table  # noqa: E402

MAX_LENGTH = 1024
BATCH = 12
# The seed's batch of 12 sequences padded to 1024 needs more than 24 GiB on CPU (OOM-killed here), so it
# runs as 2 sequences x 6 accumulation steps: the same effective batch, the same updates, less memory.
SEED_MICRO_BATCH = 2


def spec_for(examples: int, heldout: int, out_dir: Path, cache_dir: Path) -> dict[str, Any]:
    """The training spec both runs share (ours reads it; the seed recipe takes its settings from it)."""
    return {
        "name": "bench-throughput",
        "baseModel": {"uri": "builtin://smollm2-135m-instruct"},
        "dataset": {
            "uri": "builtin://medical",
            "template": {"builtin": "medical-en"},
            "validationSplit": 0.0,
            "maxSamples": examples,
        },
        "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
        "training": {
            "epochs": 1,
            "batchSize": BATCH,
            "learningRate": 1e-3,
            "maxSeqLength": MAX_LENGTH,
            "lrScheduler": "cosine",
            "optimizer": "adamw_torch",
            "checkpointSteps": 1000,
            "packing": True,
        },
        # No held-out set for the run itself: the trainer's side-by-side generation is not what is timed.
        "evaluation": {"maxSamples": heldout},
        "outputDir": str(out_dir),
        "cacheDir": str(cache_dir),
    }


def run_ours(spec_path: Path, out_dir: Path) -> float:
    """Our trainer as a user runs it; returns its non-padding tokens per second (from result.json)."""
    proc = run_trainer(spec_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"our trainer failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    result = TrainingResult.read(out_dir)
    if result is None:
        sys.exit(f"our trainer wrote no result.json in {out_dir}")
    return float(result.metrics["tokens_per_second"])


def run_seed(spec: Any, model_path: Path, train_rows: list[dict[str, list[int]]], pad_id: int, out_dir: Path) -> float:
    """The seed's recipe: plain Trainer, pad to 1024, labels = input_ids (padding masked)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments, default_data_collator, set_seed

    from loraplane.trainer.train import pick_target_modules

    set_seed(spec.training.seed)
    rows = []
    for row in train_rows:
        ids = row["input_ids"][:MAX_LENGTH]
        pad = MAX_LENGTH - len(ids)
        rows.append(
            {
                "input_ids": ids + [pad_id] * pad,
                "attention_mask": [1] * len(ids) + [0] * pad,
                "labels": ids + [-100] * pad,
            }
        )
    model: Any = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    lora = LoraConfig(
        r=spec.lora.r,
        lora_alpha=int(spec.lora.alpha),
        lora_dropout=spec.lora.dropout,
        target_modules=pick_target_modules(spec, model, "llama"),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    tr = spec.training
    args = TrainingArguments(
        output_dir=str(out_dir / "checkpoints"),
        num_train_epochs=tr.epochs,
        per_device_train_batch_size=SEED_MICRO_BATCH,
        gradient_accumulation_steps=tr.batch_size // SEED_MICRO_BATCH,
        learning_rate=tr.learning_rate,
        lr_scheduler_type=tr.lr_scheduler,
        optim=tr.optimizer,
        seed=tr.seed,
        data_seed=tr.seed,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        logging_steps=1,
        include_num_input_tokens_seen="non_padding",
        use_cpu=True,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), data_collator=default_data_collator
    )
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    model.save_pretrained(out_dir)
    return float(trainer.state.num_input_tokens_seen) / seconds


def answer_loss(model_path: Path, adapter_dir: Path, rows: list[dict[str, list[int]]]) -> float:
    """Mean loss over the answer tokens of the held-out rows (the same function scores both adapters)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base: Any = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for row in rows:
            ids = torch.tensor([row["input_ids"]])
            labels = torch.tensor([row["labels"]])
            n = int((labels[:, 1:] != -100).sum())
            loss = model(input_ids=ids, labels=labels).loss
            total += float(loss) * n
            count += n
    return total / max(count, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=36, help="training examples (3 steps of batch 12)")
    parser.add_argument("--heldout", type=int, default=40, help="held-out examples for the eval loss")
    ns = parser.parse_args()

    from transformers import AutoTokenizer

    from loraplane.api.trainer_spec import TrainerSpec
    from loraplane.trainer import data as data_mod
    from loraplane.trainer.models import resolve_model
    from loraplane.trainer.train import load_examples

    cache_dir = Path(os.environ.get("LORAPLANE_CACHE", Path.home() / ".cache/loraplane")) / "models"
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        work = Path(tmp)
        raw = spec_for(ns.examples, ns.heldout, work / "ours", cache_dir)
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(raw))
        spec = TrainerSpec.model_validate(raw)

        resolved = resolve_model(spec.base_model, cache_dir=cache_dir, pvc_root=Path("/"), token=None)
        tokenizer = AutoTokenizer.from_pretrained(resolved.path)
        splits, _, _ = load_examples(spec, None)
        with_held_out = spec.evaluation.model_copy(update={"held_out_uri": "builtin://medical-heldout"})
        _, held_out, _ = load_examples(spec.model_copy(update={"evaluation": with_held_out}), None)
        train_rows = data_mod.tokenize(splits.train, tokenizer, MAX_LENGTH).rows
        held_rows = data_mod.tokenize(held_out, tokenizer, MAX_LENGTH).rows
        real_tokens = sum(len(r["input_ids"]) for r in train_rows)
        print(
            f"{len(train_rows)} training examples, {real_tokens} tokens "
            f"({real_tokens / len(train_rows):.0f} per example; the seed pads each to {MAX_LENGTH})",
            flush=True,
        )

        ours_tok_s = run_ours(spec_path, work / "ours")
        print(f"ours: {ours_tok_s:.1f} tok/s", flush=True)
        seed_tok_s = run_seed(spec, resolved.path, train_rows, int(tokenizer.pad_token_id), work / "seed")
        print(f"seed: {seed_tok_s:.1f} tok/s", flush=True)

        ours_loss = answer_loss(resolved.path, work / "ours", held_rows)
        seed_loss = answer_loss(resolved.path, work / "seed", held_rows)
        columns = [Column("", 6), Column("tok/s", 8, ".1f"), Column("held-out answer loss", 22, ".4f")]
        print(table(columns, [("ours", ours_tok_s, ours_loss), ("seed", seed_tok_s, seed_loss)]))
        print(
            f"train_throughput speedup={ours_tok_s / seed_tok_s:.2f} ours_tok_s={ours_tok_s:.1f} "
            f"seed_tok_s={seed_tok_s:.1f} ours_eval_loss={ours_loss:.4f} seed_eval_loss={seed_loss:.4f}"
        )


if __name__ == "__main__":
    sys.exit(proctree.entry_point(main))  # SIGTERM, SIGHUP: the trainer checkpoints and stops, then we exit
