"""Local mode: the `loraplane` command on the tiny model (training, resume, validation) and, slow, the whole demo
flow (two adapters trained, compared, served by real vLLM behind the router, asked through the openai client)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from loraplane.api.exit_codes import ExitCode
from tests.support.kube import free_port, poll
from tests.support.local_mode import CLI, LoraplaneCli, finetunejob, write_yaml

Demo = Callable[[Path, Path], tuple[subprocess.CompletedProcess[str], int]]


@pytest.fixture
def loraplane_demo(loraplane_cli: LoraplaneCli) -> Demo:
    """`loraplane demo --examples DIR` to the end, on a free port: it trains each job, then serves the adapters with
    vLLM behind the router. Returns the finished process and the port."""

    def demo(store: Path, examples: Path) -> tuple[subprocess.CompletedProcess[str], int]:
        port = free_port()
        return loraplane_cli(store, "demo", "--examples", str(examples), "--port", str(port), timeout=900), port

    return demo


def test_invalid_finetunejob_is_refused_naming_the_field(
    tmp_path: Path, tiny_model: Path, toy_data: Path, loraplane_cli: LoraplaneCli
) -> None:
    doc = finetunejob("bad", tiny_model, toy_data)
    doc["spec"]["lora"]["r"] = 0
    doc["spec"]["training"]["precision"] = "bf16"
    proc = loraplane_cli(tmp_path / "store", "run", str(write_yaml(tmp_path / "bad.yaml", doc)))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "FineTuneJob 'bad' is invalid" in proc.stdout
    assert "spec.lora.r" in proc.stdout and "greater than or equal to 1" in proc.stdout
    assert not (tmp_path / "store" / "bad").exists(), "nothing is trained or written for an invalid spec"

    wrong_kind = {**doc, "apiVersion": "loraplane.io/v1"}
    proc = loraplane_cli(tmp_path / "store", "run", str(write_yaml(tmp_path / "kind.yaml", wrong_kind)))
    assert proc.returncode == 2 and "apiVersion: expected loraplane.io/v1alpha1" in proc.stdout


def test_base_model_that_cannot_be_fetched_fails_clearly(
    tmp_path: Path, toy_data: Path, loraplane_cli: LoraplaneCli
) -> None:
    doc = finetunejob("qwen", Path("/unused"), toy_data)
    doc["spec"]["baseModel"]["uri"] = "hf://Qwen/Qwen2.5-7B-Instruct@main"
    proc = loraplane_cli(
        tmp_path / "store", "run", str(write_yaml(tmp_path / "qwen.yaml", doc)), env={"HF_HUB_OFFLINE": "1"}
    )
    assert proc.returncode in (ExitCode.MODEL_NOT_FOUND, ExitCode.NETWORK_UNAVAILABLE), proc.stdout + proc.stderr
    assert "Qwen/Qwen2.5-7B-Instruct" in proc.stdout, "the message names the model it could not fetch"
    assert not (tmp_path / "store" / "qwen" / "result.json").exists()


def test_ctrl_c_checkpoints_and_the_same_run_resumes(
    tmp_path: Path, tiny_model: Path, toy_data: Path, loraplane_cli: LoraplaneCli
) -> None:
    store = tmp_path / "store"
    job = write_yaml(tmp_path / "toy.yaml", finetunejob("toy", tiny_model, toy_data, epochs=6, checkpointSteps=2))
    first = subprocess.Popen(
        [*CLI, "--store", str(store), "run", str(job)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        # A terminal's Ctrl-C reaches a foreground command; a background job (as under some CI runners)
        # starts with SIGINT ignored, so give the command the terminal's default disposition.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    checkpoints = store / "toy" / "checkpoints"
    poll("a complete checkpoint", lambda: list(checkpoints.glob("checkpoint-*/LORAPLANE_COMPLETE")), timeout=300)
    first.send_signal(signal.SIGINT)  # what Ctrl-C delivers to the command
    out, _ = first.communicate(timeout=300)
    assert first.returncode == ExitCode.INTERRUPTED, out
    assert "run the same command again to resume" in out
    stopped_at = max(int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*"))

    second = loraplane_cli(store, "run", str(job))
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming from its checkpoint" in second.stdout
    log = (store / ".runs" / "toy" / "train.log").read_text()
    assert f"resuming from {checkpoints}/checkpoint-{stopped_at}" in log
    result = json.loads((store / "toy" / "result.json").read_text())
    assert result["metrics"]["global_step"] == 6 * 14  # 108 train rows / batch 8 = 14 steps per epoch
    assert "held-out evaluation" in second.stdout.lower()

    third = loraplane_cli(store, "run", str(job))
    assert third.returncode == 0 and "up to date" in third.stdout, third.stdout
    listing = loraplane_cli(store, "list")
    assert "toy" in listing.stdout and "ready" in listing.stdout and result["adapter"]["sha256"][:12] in listing.stdout


@pytest.mark.slow
def test_demo_trains_compares_serves_and_answers(
    tmp_path: Path, tiny_model: Path, toy_data: Path, loraplane_demo: Demo
) -> None:
    """`loraplane demo` over two FineTuneJobs: table, PNG, then each adapter and the base answer through the router."""
    examples = tmp_path / "examples"
    examples.mkdir()
    other = tmp_path / "other.jsonl"
    other.write_text(
        "".join(
            json.dumps(
                {"instruction": f"Which ward takes case {i}?", "output": f"Ward W{i % 5}.", "answer": f"W{i % 5}"}
            )
            + "\n"
            for i in range(80)
        )
    )
    write_yaml(examples / "alpha.yaml", finetunejob("alpha", tiny_model, toy_data, epochs=3))
    write_yaml(examples / "beta.yaml", finetunejob("beta", tiny_model, other, epochs=3))
    store = tmp_path / "store"
    proc, port = loraplane_demo(store, examples)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-6000:]
    out = proc.stdout
    assert "Held-out evaluation: base model vs adapter" in out
    png = store / "demo-report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    answers = out[out.index("One held-out question to each model") :]
    for model in ("alpha", "beta", "model"):  # the tiny base is served as "model" (its directory name)
        assert f"\n│ {model}" in answers or f"┃ {model}" in answers or f" {model} " in answers, answers
    assert "Done" in out and f"http://127.0.0.1:{port}/v1" in out
