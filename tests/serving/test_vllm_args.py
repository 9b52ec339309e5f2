"""The vLLM launch builder: argv, env, probes and shutdown are plain data derived from VllmSpec."""

from __future__ import annotations

import pytest

from loraplane.api.modelserver import VllmSpec
from loraplane.serving.vllm_args import (
    CPU_MAX_NUM_SEQS,
    STARTUP_MAX_FAILURES,
    ServedModel,
    build_args,
    cpu_profile,
    effective_max_cpu_loras,
    gpu_profile,
    startup_failure_threshold,
)

MODEL = ServedModel(path="/models/qwen", name="qwen-7b", size_bytes=15 * 10**9)


def test_gpu_argv_from_the_crd_spec() -> None:
    spec = VllmSpec.model_validate(
        {
            "maxLoras": 8,
            "maxLoraRank": 32,
            "maxModelLen": 4096,
            "dtype": "bfloat16",
            "gpuMemoryUtilization": 0.85,
            "extraArgs": ["--enable-prefix-caching"],
        }
    )
    launch = build_args(MODEL, spec, gpu_profile(max_num_seqs=128), adapter_count=3)
    assert list(launch.argv) == [
        "python3",
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        "/models/qwen",
        "--served-model-name",
        "qwen-7b",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--dtype",
        "bfloat16",
        "--gpu-memory-utilization",
        "0.85",
        "--enable-lora",
        "--max-loras",
        "8",
        "--max-lora-rank",
        "32",
        "--max-cpu-loras",
        "8",
        "--max-model-len",
        "4096",
        "--max-num-seqs",
        "128",
        "--enable-prefix-caching",
    ]
    assert dict(launch.env) == {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True", "VLLM_LOGGING_LEVEL": "INFO"}
    assert launch.url == "http://127.0.0.1:8000"


def test_cpu_profile_env_and_loopback() -> None:
    launch = build_args(
        ServedModel(path="/tmp/tiny"),
        VllmSpec(dtype="float32", gpu_memory_utilization=0.05),
        cpu_profile(kvcache_space_gib=2),
        port=8123,
        python="/venv/bin/python",
    )
    assert dict(launch.env) == {
        "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
        "VLLM_LOGGING_LEVEL": "INFO",
        "VLLM_HOST_IP": "127.0.0.1",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_CPU_KVCACHE_SPACE": "2",
    }
    argv = list(launch.argv)
    assert argv[:3] == ["/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and argv[argv.index("--port") + 1] == "8123"
    assert argv[argv.index("--served-model-name") + 1] == "base"
    assert argv[argv.index("--shutdown-timeout") + 1] == "10"
    assert "--max-model-len" not in argv
    assert argv[argv.index("--max-num-seqs") + 1] == str(CPU_MAX_NUM_SEQS) == "32", "the sweep's best LoRA ratio"
    assert launch.url == "http://127.0.0.1:8123"


@pytest.mark.parametrize(
    ("max_loras", "max_cpu_loras", "adapters", "expected"),
    [(4, None, 0, 4), (4, None, 10, 10), (4, 16, 2, 16), (8, 2, 0, 8)],
)
def test_max_cpu_loras_default_and_floor(
    max_loras: int, max_cpu_loras: int | None, adapters: int, expected: int
) -> None:
    spec = VllmSpec(max_loras=max_loras, max_cpu_loras=max_cpu_loras)
    assert effective_max_cpu_loras(spec, adapters) == expected


def test_probes_and_graceful_shutdown() -> None:
    launch = build_args(MODEL, VllmSpec(), gpu_profile(), port=9000)
    assert dict(launch.readiness_probe) == {
        "httpGet": {"path": "/health", "port": 9000},
        "periodSeconds": 5,
        "timeoutSeconds": 3,
        "failureThreshold": 3,
    }
    assert dict(launch.liveness_probe) == {
        "httpGet": {"path": "/health", "port": 9000},
        "periodSeconds": 15,
        "timeoutSeconds": 10,
        "failureThreshold": 4,
    }
    # 15 GB at 50 MiB/s plus 180 s base = 466 s -> 47 periods of 10 s
    assert dict(launch.startup_probe) == {
        "httpGet": {"path": "/health", "port": 9000},
        "periodSeconds": 10,
        "timeoutSeconds": 5,
        "failureThreshold": 47,
    }
    assert dict(launch.lifecycle) == {"preStop": {"exec": {"command": ["sh", "-c", "sleep 5"]}}}
    assert launch.termination_grace_period_seconds == 40
    assert "--shutdown-timeout" not in launch.argv  # the CRD's default image predates the flag
    fields = launch.container_fields()
    assert fields["command"] == list(launch.argv)
    assert fields["ports"] == [{"name": "http", "containerPort": 9000, "protocol": "TCP"}]
    assert {"name": "VLLM_ALLOW_RUNTIME_LORA_UPDATING", "value": "True"} in fields["env"]


def test_startup_probe_grows_with_the_model_and_is_bounded() -> None:
    small, large = startup_failure_threshold(100 * 2**20), startup_failure_threshold(140 * 10**9)
    assert startup_failure_threshold(0) == 18
    assert 18 < small < large
    assert startup_failure_threshold(10**15) == STARTUP_MAX_FAILURES


def test_builder_is_pure() -> None:
    spec = VllmSpec(extra_args=["--seed", "1"])
    first = build_args(MODEL, spec, gpu_profile())
    second = build_args(MODEL, spec, gpu_profile())
    assert first == second
    assert spec.extra_args == ["--seed", "1"]
