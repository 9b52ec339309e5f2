"""The trainer end to end on a tiny model: output contract, exit codes, resume after SIGTERM/SIGKILL, DDP."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from loraplane.api.artifact import verify
from loraplane.api.exit_codes import ExitCode
from loraplane.api.result import PROGRESS_LINE_PREFIX as PREFIX
from loraplane.trainer.progress import COMPLETE_MARKER
from tests.support.trainer import Trainer


def progress_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line[len(PREFIX) :]) for line in stdout.splitlines() if line.startswith(PREFIX)]


def termination(spec: Path) -> dict[str, Any]:
    text = spec.with_suffix(".term").read_text()
    assert len(text.encode()) <= 4096
    return dict(json.loads(text))


def test_trains_a_servable_adapter_with_result(make_spec: Callable[..., Path], trainer: Trainer) -> None:
    spec = make_spec()
    proc = trainer.run(spec)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = Path(json.loads(spec.read_text())["outputDir"])
    result = json.loads((out / "result.json").read_text())
    assert sorted(result["adapter"]["files"]) == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
    assert verify(out) == []
    assert not (out / "checkpoints").exists()
    # Exact count: q_proj 64->64 and v_proj 64->64 (2 kv heads x 32) in 2 layers, r=8: 2 * 2 * (8*64 + 64*8).
    assert result["trainable_params"] == 2 * 2 * (8 * 64 + 64 * 8)
    assert "trainable params 4096" in proc.stderr
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 8 and sorted(config["target_modules"]) == ["q_proj", "v_proj"]
    assert config["base_model_name_or_path"]
    assert result["dataset"]["sha256"] and result["spec_sha256"] and result["metrics"]["eval_loss"] > 0
    ev = result["evaluation"]
    assert ev["metric"] == "Contains" and ev["examples"] == 8 and ev["passed"] is True
    # Loss side by side on the validation split: the adapter's is the eval loss, the base model's is higher.
    assert ev["adapter_loss"] == pytest.approx(result["metrics"]["eval_loss"], abs=1e-4)
    assert ev["base_loss"] > ev["adapter_loss"] + 0.1
    assert ev["base_perplexity"] == pytest.approx(math.exp(ev["base_loss"]), rel=1e-3)
    assert ev["adapter_perplexity"] == pytest.approx(result["metrics"]["perplexity"], rel=1e-3)
    spec_uri = json.loads(spec.read_text())["baseModel"]["uri"]
    # A mounted path has no revision; hub URIs record the resolved commit (tests/trainer/test_models.py).
    assert result["base_model"]["uri"] == spec_uri and result["base_model"]["revision"] == ""
    assert result["base_model"]["path"] == spec_uri.removeprefix("file://")
    assert {"train_seconds", "eval_seconds", "save_seconds", "total_seconds"} <= set(result["durations"])
    assert result["durations"]["total_seconds"] >= result["durations"]["train_seconds"] > 0
    lines = progress_lines(proc.stdout)
    assert lines[-1]["step"] == lines[-1]["total"] == result["metrics"]["global_step"]
    assert {"step", "total", "epoch", "tokens_per_second", "eta_seconds"} <= set(lines[0])
    assert any("loss" in line and "learning_rate" in line for line in lines)
    term = termination(spec)
    assert term["ok"] is True and term["adapter"]["sha256"] == result["adapter"]["sha256"]
    assert term["evaluation"]["base_loss"] == ev["base_loss"] and "samples" not in term["evaluation"]


def test_merged_model_answers_like_base_plus_adapter(make_spec: Callable[..., Path], trainer: Trainer) -> None:
    """output.merge: a plain checkpoint (merge_and_unload) next to the adapter, with the same logits."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    spec = make_spec(merge=True, training={"maxSteps": 4})
    proc = trainer.run(spec)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = Path(json.loads(spec.read_text())["outputDir"])
    base_path = json.loads(spec.read_text())["baseModel"]["uri"].removeprefix("file://")
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    assert not any("lora" in name for name, _ in merged.named_parameters())
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), str(out))
    base = AutoModelForCausalLM.from_pretrained(base_path)
    ids = AutoTokenizer.from_pretrained(out / "merged")("What is the ICD-10 code?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        want, got, plain = (m.eval()(ids).logits for m in (adapted, merged, base))
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(got, plain, atol=1e-3), "the merged weights differ from the base model's"
    assert verify(out) == [], "result.json's digests cover the merged files too"


def test_truncation_is_counted(make_spec: Callable[..., Path], trainer: Trainer) -> None:
    spec = make_spec(training={"maxSeqLength": 24, "maxSteps": 2})
    proc = trainer.run(spec)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = Path(json.loads(spec.read_text())["outputDir"])
    metrics = json.loads((out / "result.json").read_text())["metrics"]
    assert metrics["truncated_examples"] > 0


@pytest.mark.parametrize(
    ("sections", "code", "words"),
    [
        ({"lora": {"useDora": True}}, ExitCode.INVALID_SPEC, "spec.lora.useDora"),
        ({"lora": {"targetModules": ["c_attn"]}}, ExitCode.INVALID_SPEC, "spec.lora.targetModules"),
        ({"lora": {"r": 0}}, ExitCode.INVALID_SPEC, "spec.lora.r"),
        ({"dataset": {"uri": "file:///nonexistent/data.jsonl"}}, ExitCode.INVALID_DATA, "no such file"),
        ({"baseModel": {"uri": "file:///nonexistent/model"}}, ExitCode.MODEL_NOT_FOUND, "nonexistent"),
        ({"training": {"precision": "bf16"}}, ExitCode.INVALID_SPEC, "spec.training.precision"),
    ],
)
def test_failures_have_their_exit_code_and_message(
    make_spec: Callable[..., Path], trainer: Trainer, sections: dict[str, Any], code: ExitCode, words: str
) -> None:
    spec = make_spec(**sections)
    proc = trainer.run(spec)
    assert proc.returncode == code, proc.stderr[-3000:]
    term = termination(spec)
    assert term["ok"] is False and term["code"] == code and words in term["message"]


def test_bad_data_record_is_named(make_spec: Callable[..., Path], trainer: Trainer, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "q", "output": "a"}\n{"instruction": "q2"}\n')
    spec = make_spec(dataset={"uri": f"file://{bad}", "format": "Alpaca"})
    proc = trainer.run(spec)
    assert proc.returncode == ExitCode.INVALID_DATA
    assert "record 2" in termination(spec)["message"]


def _run_until_step(trainer: Trainer, spec: Path, step: int, sig: int) -> tuple[int, list[dict[str, Any]]]:
    """Start the trainer, send `sig` once it logged `step`, return its exit code and progress lines."""
    proc = trainer.start(spec, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    lines: list[dict[str, Any]] = []
    deadline = time.monotonic() + 300
    for raw in proc.stdout:
        if raw.startswith(PREFIX):
            lines.append(json.loads(raw[len(PREFIX) :]))
            if lines[-1]["step"] >= step:
                proc.send_signal(sig)
                break
        assert time.monotonic() < deadline, "trainer too slow"
    rest, _ = proc.communicate(timeout=300)
    lines += progress_lines(rest)
    return proc.returncode, lines


@pytest.mark.slow
def test_sigterm_and_sigkill_then_resume_matches_uninterrupted_run(
    make_spec: Callable[..., Path], trainer: Trainer
) -> None:
    training = {"maxSteps": 30, "checkpointSteps": 5, "batchSize": 4}
    reference = make_spec("reference", training=training, evaluation={"maxSamples": 1})
    assert trainer.run(reference).returncode == 0
    ref = json.loads((Path(json.loads(reference.read_text())["outputDir"]) / "result.json").read_text())

    spec = make_spec("interrupted", training=training, evaluation={"maxSamples": 1})
    out = Path(json.loads(spec.read_text())["outputDir"])
    code, lines = _run_until_step(trainer, spec, 7, signal.SIGTERM)
    assert code == ExitCode.INTERRUPTED
    saved = sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*") if (p / COMPLETE_MARKER).exists())
    assert saved, "SIGTERM must leave a complete checkpoint"
    stopped_at = int(saved[-1].split("-")[1])
    assert stopped_at >= 7

    code, lines = _run_until_step(trainer, spec, stopped_at + 6, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert lines[0]["step"] > stopped_at, "the second run must continue the global step, not restart"

    final = trainer.run(spec)
    assert final.returncode == 0, final.stderr[-3000:]
    first = progress_lines(final.stdout)[0]["step"]
    assert first > stopped_at
    result = json.loads((out / "result.json").read_text())
    assert result["metrics"]["global_step"] == ref["metrics"]["global_step"] == 30
    assert result["metrics"]["eval_loss"] == pytest.approx(ref["metrics"]["eval_loss"], rel=0.02)


@pytest.mark.slow
def test_two_process_ddp_with_gloo(make_spec: Callable[..., Path], trainer: Trainer) -> None:
    spec = make_spec("ddp", training={"maxSteps": 6, "batchSize": 4}, evaluation={"maxSamples": 2})
    proc = trainer.run(spec, procs=2)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = Path(json.loads(spec.read_text())["outputDir"])
    result = json.loads((out / "result.json").read_text())
    assert result["metrics"]["global_step"] == 6 and verify(out) == []
    assert proc.stderr.count("world size 2") == 2, "both ranks must train"


def test_gradient_checkpointing_trains_the_same_adapter(make_spec: Callable[..., Path], trainer: Trainer) -> None:
    """Recomputing activations in the backward pass trades time for memory, never the result."""
    losses = []
    for checkpointing in (False, True):
        spec = make_spec(f"gc-{checkpointing}", training={"maxSteps": 3, "gradientCheckpointing": checkpointing})
        proc = trainer.run(spec)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out = Path(json.loads(spec.read_text())["outputDir"])
        metrics = json.loads((out / "result.json").read_text())["metrics"]
        losses.append((metrics["train_loss"], metrics["eval_loss"]))
    assert losses[1] == pytest.approx(losses[0], rel=1e-3)


def test_out_of_memory_is_its_own_exit_code(make_spec: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Mock, named as such: a GPU running out of memory cannot happen on this CPU-only machine, so training
    raises torch's OutOfMemoryError the way CUDA does. The trainer must exit 17 with advice, not crash."""
    import torch

    from loraplane.trainer import train as train_mod
    from loraplane.trainer.loss import AnswerLossTrainer

    def out_of_memory(*_: Any, **__: Any) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(AnswerLossTrainer, "train", out_of_memory)
    spec = make_spec()
    code = train_mod.main(["--spec", str(spec), "--termination-log", str(spec.with_suffix(".term"))])
    assert code == ExitCode.OUT_OF_MEMORY == 17
    term = termination(spec)
    assert term["reason"] == "OutOfMemory" and "spec.training.batchSize" in term["message"]


def test_a_terminal_gets_a_progress_bar_and_stdout_keeps_only_lines(
    make_spec: Callable[..., Path], trainer: Trainer
) -> None:
    """stderr on a terminal: a rich bar (steps, loss) is drawn there; stdout (read by programs) is untouched."""
    import os
    import pty

    spec = make_spec(training={"maxSteps": 3})
    leader, follower = pty.openpty()
    proc = trainer.start(spec, stdout=subprocess.PIPE, stderr=follower, env={**os.environ, "COLUMNS": "120"})
    os.close(follower)
    terminal = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the last writer closed the terminal
            break
        if not chunk:
            break
        terminal += chunk
    stdout, _ = proc.communicate(timeout=600)
    os.close(leader)
    assert proc.returncode == 0, terminal.decode(errors="replace")[-3000:]
    text = terminal.decode(errors="replace")
    assert "training" in text and "3/3 steps" in text and "loss " in text
    assert all(line.startswith(PREFIX) for line in stdout.splitlines()), stdout[-2000:]


def test_all_linear_targets_every_linear_layer_but_the_head(make_spec: Callable[..., Path], trainer: Trainer) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    spec = make_spec(lora={"targetModules": ["all-linear"]}, training={"maxSteps": 1})
    proc = trainer.run(spec)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = Path(json.loads(spec.read_text())["outputDir"])
    result = json.loads((out / "result.json").read_text())
    base = AutoModelForCausalLM.from_pretrained(json.loads(spec.read_text())["baseModel"]["uri"][len("file://") :])
    linear = {
        name: module
        for name, module in base.named_modules()
        if isinstance(module, torch.nn.Linear) and name != "lm_head"
    }
    config = json.loads((out / "adapter_config.json").read_text())
    # peft records every adapted module by its full name: all 7 projections (q k v o gate up down) per layer.
    assert sorted(config["target_modules"]) == sorted(linear) and len(linear) == 2 * 7
    r = 8
    assert result["trainable_params"] == sum(r * (m.in_features + m.out_features) for m in linear.values())
