"""Slow: a real adapter trained on the packaged SmolLM2-135M-Instruct, loaded into real vLLM (CPU build)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from loraplane.serving import proctree
from tests.support.kube import free_port, poll
from tests.support.trainer import Trainer

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]

StartVllm = Callable[[str], str]


def post(url: str, body: dict[str, Any]) -> tuple[int, str]:
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def vllm_api_server(tmp_path: Path) -> Iterator[StartVllm]:
    """`vllm_api_server(model_dir) -> url`: vLLM's own OpenAI server for a model directory, served as "base" with
    runtime LoRA loading, started on a free loopback port and waited for; stopped at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(model: str) -> str:
        port = free_port()
        log = tmp_path / "vllm.log"
        with log.open("ab") as out:
            server = proctree.spawn(
                [
                    sys.executable,
                    "-m",
                    "vllm.entrypoints.openai.api_server",
                    "--model",
                    model,
                    "--served-model-name",
                    "base",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--enable-lora",
                    "--max-lora-rank",
                    "16",
                    "--max-loras",
                    "2",
                    "--gpu-memory-utilization",
                    "0.2",
                    "--max-model-len",
                    "512",
                    "--dtype",
                    "float32",
                ],
                name="vLLM",
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_CPU_KVCACHE_SPACE": "1"},
            )
        started.append(server)

        def ready() -> bool:
            assert server.poll() is None, log.read_text()[-4000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    return resp.status == 200
            except OSError:
                return False

        poll("vLLM to start", ready, timeout=600, interval=1)
        return f"http://127.0.0.1:{port}"

    try:
        yield start
    finally:
        for server in started:
            proctree.stop(server, 60)  # SIGTERM to the API server, then SIGKILL to whatever of its tree is left


def test_smollm2_adapter_trains_and_loads_into_vllm(
    tmp_path: Path, trainer: Trainer, vllm_api_server: StartVllm
) -> None:
    spec = json.loads((REPO / "examples/trainer/medical-smollm2.json").read_text())
    spec["training"].update(maxSteps=4, batchSize=2, checkpointSteps=100)
    spec["evaluation"].update(maxSamples=4, measureRetention=False)
    spec["outputDir"] = str(tmp_path / "adapter")
    spec_path = tmp_path / "spec.json"
    spec_path.write_text(json.dumps(spec))
    proc = trainer.run(spec_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads((tmp_path / "adapter/result.json").read_text())
    assert result["base_model"]["family"] == "llama" and result["trainable_params"] > 0
    base_dir = result["base_model"]["path"]
    adapter_config = json.loads((tmp_path / "adapter/adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == base_dir
    assert Path(base_dir, "config.json").is_file(), base_dir

    url = vllm_api_server(base_dir)
    status, body = post(f"{url}/v1/load_lora_adapter", {"lora_name": "medical", "lora_path": str(tmp_path / "adapter")})
    assert status == 200, body
    prompt = {
        "messages": [{"role": "user", "content": "Which ICD-10 code matches type 2 diabetes?"}],
        "max_tokens": 16,
        "temperature": 0,
    }
    answers = {}
    for model in ("base", "medical"):
        status, body = post(f"{url}/v1/chat/completions", {**prompt, "model": model})
        assert status == 200, body
        answers[model] = json.loads(body)["choices"][0]["message"]["content"]
    assert all(answers.values()), answers
