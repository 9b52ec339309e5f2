"""The adapter agent (`python -m loraplane.serving.agent`) as a process next to a tiny vLLM replica, as the sidecar
runs in a vLLM pod: its own port on loopback, its cache in a directory the test owns."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx

from tests.support.bench import Service
from tests.support.kube import REPO, free_port, poll


def agent_service(vllm_url: str, cache_dir: Path, log_path: Path, **settings: Any) -> Service:
    """Not started yet; `settings`: AgentSettings fields (base_model, max_lora_rank, cache_limit_bytes, ...)."""
    port = free_port()
    env = {
        "LORAPLANE_AGENT_HOST": "127.0.0.1",
        "LORAPLANE_AGENT_PORT": str(port),
        "LORAPLANE_AGENT_VLLM_URL": vllm_url,
        "LORAPLANE_AGENT_CACHE_DIR": str(cache_dir),
        "LORAPLANE_AGENT_LOG_FORMAT": "plain",
        **{f"LORAPLANE_AGENT_{key.upper()}": str(value) for key, value in settings.items()},
    }
    argv = [sys.executable, "-m", "loraplane.serving.agent"]
    return Service("adapter-agent", argv, env, f"http://127.0.0.1:{port}", log_path, REPO)


def wait_up(agent: Service, timeout: float = 60) -> None:
    def up() -> bool:
        if not agent.running():
            raise AssertionError(f"the agent exited:\n{agent.tail()}")
        try:
            return httpx.get(agent.url + "/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    poll("the adapter agent up", up, timeout=timeout)
