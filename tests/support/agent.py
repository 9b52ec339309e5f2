"""The adapter agent (`python -m loraplane.serving.agent`) as a process next to a tiny vLLM replica, as the sidecar
runs in a vLLM pod: on the replica's own (loopback) address, its cache in a directory the test owns."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from tests.support.bench import Service
from tests.support.kube import REPO, free_port, poll


def port_free_on(hosts: Iterable[str]) -> int:
    """A port free on every one of these loopback addresses: agents of several replicas on one port, as in pods."""
    for _ in range(100):
        port = free_port()
        try:
            for host in hosts:
                with socket.socket() as s:
                    s.bind((host, port))
            return port
        except OSError:
            continue
    raise AssertionError(f"no port free on all of {list(hosts)}")


def agent_service(
    vllm_url: str,
    cache_dir: Path,
    log_path: Path,
    *,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    **settings: Any,
) -> Service:
    """Not started yet; listens on the replica's host (its pod address), on `port` or a free one; `settings`:
    AgentSettings fields (base_model, max_lora_rank, cache_limit_bytes, ...); `env`: other variables the
    operator would set in its container (the S3 endpoint and login file)."""
    host = urlsplit(vllm_url).hostname or "127.0.0.1"
    port = port or free_port()
    variables = {
        **(env or {}),
        "LORAPLANE_AGENT_HOST": host,
        "LORAPLANE_AGENT_PORT": str(port),
        "LORAPLANE_AGENT_VLLM_URL": vllm_url,
        "LORAPLANE_AGENT_CACHE_DIR": str(cache_dir),
        "LORAPLANE_AGENT_LOG_FORMAT": "plain",
        **{f"LORAPLANE_AGENT_{key.upper()}": str(value) for key, value in settings.items()},
    }
    argv = [sys.executable, "-m", "loraplane.serving.agent"]
    return Service("adapter-agent", argv, variables, f"http://{host}:{port}", log_path, REPO)


def wait_up(agent: Service, timeout: float = 60) -> None:
    def up() -> bool:
        if not agent.running():
            raise AssertionError(f"the agent exited:\n{agent.tail()}")
        try:
            return httpx.get(agent.url + "/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    poll("the adapter agent up", up, timeout=timeout)
