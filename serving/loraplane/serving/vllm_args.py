"""Pure builder for the vLLM OpenAI server: command line, environment, probes and graceful shutdown.

Input is the served base model plus the ModelServer's own `VllmSpec` (one source of truth); output is a
frozen :class:`VllmLaunch` of plain lists and dicts. Nothing here starts a process or talks to Kubernetes:
`vllm_process` runs the result locally, the operator puts it into a Deployment.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from loraplane.api.modelserver import VllmSpec

VLLM_MODULE = "vllm.entrypoints.openai.api_server"
HEALTH_PATH = "/health"
DEFAULT_PORT = 8000

# Startup: vLLM imports, loads the weights, profiles memory and warms up before /health answers.
STARTUP_PERIOD_SECONDS = 10
STARTUP_BASE_SECONDS = 180  # imports, profiling, warm-up; independent of the model size
STARTUP_BYTES_PER_SECOND = 50 * 1024 * 1024  # conservative read speed of a network volume
STARTUP_MAX_FAILURES = 360  # one hour at most

Kind = Literal["cpu", "gpu"]


@dataclass(frozen=True)
class ServedModel:
    """The base model vLLM serves."""

    path: str  # --model: a directory (or hub id) of the plain checkpoint
    name: str = "base"  # --served-model-name; adapters report it as their parent
    size_bytes: int = 0  # weights on disk; sizes the startup probe


@dataclass(frozen=True)
class Profile:
    """Hardware-specific settings the CRD does not carry."""

    kind: Kind
    max_num_seqs: int | None = None  # --max-num-seqs (None = vLLM's default)
    kvcache_space_gib: int = 1  # CPU only: VLLM_CPU_KVCACHE_SPACE
    host_ip: str | None = None  # VLLM_HOST_IP
    # VLLM_ENABLE_V1_MULTIPROCESSING. Off on CPU: the model runs inside the engine process (vLLM's uni-process
    # executor), not in one more worker process. vLLM's OpenMP CPU binding (VLLM_CPU_OMP_THREADS_BIND) exists
    # only for that worker process, so the CPU profile sets none; vLLM serves with one torch thread either way.
    multiprocessing: bool = True
    # Seconds vLLM drains in-flight requests after SIGTERM (--shutdown-timeout). The CRD's default image
    # (vllm-openai v0.11) predates the flag, so the GPU profile leaves it out and relies on preStop + grace.
    shutdown_timeout: int | None = None
    drain_seconds: int = 30  # budget for in-flight requests after SIGTERM (grace period)
    prestop_sleep_seconds: int = 5  # let Service endpoints drop the pod before SIGTERM


# vLLM's batch on CPU: the highest adapter/base throughput ratio in bench/multi_adapter.py's sweep
# (docs/benchmarks.md).
CPU_MAX_NUM_SEQS = 32


def cpu_profile(*, kvcache_space_gib: int = 1, max_num_seqs: int | None = CPU_MAX_NUM_SEQS) -> Profile:
    """Local mode and tests: one process, loopback only, a bounded KV cache in RAM, the batch size tuned for LoRA."""
    return Profile(
        kind="cpu",
        max_num_seqs=max_num_seqs,
        kvcache_space_gib=kvcache_space_gib,
        host_ip="127.0.0.1",
        multiprocessing=False,
        shutdown_timeout=10,
        drain_seconds=10,
        prestop_sleep_seconds=0,
    )


def cluster_cpu_profile(*, kvcache_space_gib: int = 1, max_num_seqs: int | None = CPU_MAX_NUM_SEQS) -> Profile:
    """ModelServer pods on CPU nodes (the vllm-cpu image): the local CPU settings, but reachable on the pod's
    address (no loopback VLLM_HOST_IP) and taken out of the Service endpoints before SIGTERM (preStop)."""
    return replace(
        cpu_profile(kvcache_space_gib=kvcache_space_gib, max_num_seqs=max_num_seqs),
        host_ip=None,
        prestop_sleep_seconds=5,
    )


def gpu_profile(*, max_num_seqs: int | None = None) -> Profile:
    """The cluster: the upstream vLLM OpenAI-server image on an accelerator."""
    return Profile(kind="gpu", max_num_seqs=max_num_seqs)


@dataclass(frozen=True)
class VllmLaunch:
    """Everything needed to run one vLLM replica; plain data, compared as dicts/lists in tests."""

    argv: Sequence[str]
    env: Mapping[str, str]
    host: str
    port: int
    startup_probe: Mapping[str, Any]
    readiness_probe: Mapping[str, Any]
    liveness_probe: Mapping[str, Any]
    lifecycle: Mapping[str, Any]
    termination_grace_period_seconds: int

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}"

    def container_fields(self) -> dict[str, Any]:
        """The Kubernetes container fields this launch determines (command, env, ports, probes, lifecycle)."""
        return {
            "command": list(self.argv),
            "env": [{"name": k, "value": v} for k, v in sorted(self.env.items())],
            "ports": [{"name": "http", "containerPort": self.port, "protocol": "TCP"}],
            "startupProbe": dict(self.startup_probe),
            "readinessProbe": dict(self.readiness_probe),
            "livenessProbe": dict(self.liveness_probe),
            "lifecycle": dict(self.lifecycle),
        }


def effective_max_cpu_loras(spec: VllmSpec, adapter_count: int) -> int:
    """--max-cpu-loras: as the CRD documents, default max(maxLoras, adapters)."""
    if spec.max_cpu_loras is not None:
        return max(spec.max_cpu_loras, spec.max_loras)  # vLLM rejects max_cpu_loras < max_loras
    return max(spec.max_loras, adapter_count)


def startup_failure_threshold(size_bytes: int) -> int:
    """Probe failures allowed while starting: base time plus reading the weights, in probe periods."""
    seconds = STARTUP_BASE_SECONDS + size_bytes / STARTUP_BYTES_PER_SECOND
    return min(STARTUP_MAX_FAILURES, math.ceil(seconds / STARTUP_PERIOD_SECONDS))


def _http_probe(port: int, *, period: int, timeout: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": HEALTH_PATH, "port": port},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def build_args(
    model: ServedModel,
    spec: VllmSpec,
    profile: Profile,
    *,
    port: int = DEFAULT_PORT,
    host: str | None = None,
    adapter_count: int = 0,
    python: str = "python3",
) -> VllmLaunch:
    """The vLLM server launch for `model` with the ModelServer's `spec` on `profile`'s hardware."""
    bind = host if host is not None else (profile.host_ip or "0.0.0.0")
    argv = [
        python,
        "-m",
        VLLM_MODULE,
        "--model",
        model.path,
        "--served-model-name",
        model.name,
        "--host",
        bind,
        "--port",
        str(port),
        "--dtype",
        spec.dtype,
        "--gpu-memory-utilization",
        f"{spec.gpu_memory_utilization:g}",
        "--enable-lora",
        "--max-loras",
        str(spec.max_loras),
        "--max-lora-rank",
        str(spec.max_lora_rank),
        "--max-cpu-loras",
        str(effective_max_cpu_loras(spec, adapter_count)),
    ]
    if spec.max_model_len is not None:
        argv += ["--max-model-len", str(spec.max_model_len)]
    if profile.max_num_seqs is not None:
        argv += ["--max-num-seqs", str(profile.max_num_seqs)]
    if profile.shutdown_timeout is not None:
        argv += ["--shutdown-timeout", str(profile.shutdown_timeout)]
    argv += list(spec.extra_args or [])

    env = {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_LOGGING_LEVEL": "INFO"}
    if profile.host_ip is not None:
        env["VLLM_HOST_IP"] = profile.host_ip
    if not profile.multiprocessing:
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    if profile.kind == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = str(profile.kvcache_space_gib)

    return VllmLaunch(
        argv=argv,
        env=env,
        host=bind,
        port=port,
        startup_probe=_http_probe(
            port, period=STARTUP_PERIOD_SECONDS, timeout=5, failures=startup_failure_threshold(model.size_bytes)
        ),
        readiness_probe=_http_probe(port, period=5, timeout=3, failures=3),
        liveness_probe=_http_probe(port, period=15, timeout=10, failures=4),
        lifecycle=(
            {"preStop": {"exec": {"command": ["sh", "-c", f"sleep {profile.prestop_sleep_seconds}"]}}}
            if profile.prestop_sleep_seconds
            else {}
        ),
        termination_grace_period_seconds=profile.prestop_sleep_seconds + profile.drain_seconds + 5,
    )
