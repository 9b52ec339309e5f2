"""Shared serving fixtures: a tiny Llama vLLM can load, random-weight LoRA adapters, two real vLLM replicas.

Registered for the whole suite by `pytest_plugins` in tests/conftest.py, so every test directory shares one
session-scoped `vllm_pair` (the router, adapter manager and ModelServer end-to-end tests). Names:
`tiny_base`, `make_adapter`, `tiny_adapters`, `vllm_pair`, `replicas_up`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from loraplane.api.artifact import describe_adapter
from loraplane.api.modelserver import VllmSpec
from loraplane.api.result import BaseModelInfo, TrainingResult
from loraplane.serving.vllm_args import ServedModel, build_args, cpu_profile
from loraplane.serving.vllm_process import VllmProcess
from tests.kube_harness import free_port

BASE_NAME = "base"
ADAPTER_RANK = 8
TINY_ADAPTERS = {"alpha": 1, "beta": 2, "gamma": 3}  # name -> seed
# The replicas' settings: small memory, runtime LoRA updating on, room for every test adapter.
PAIR_SPEC = VllmSpec(
    max_loras=4,
    max_lora_rank=16,
    max_cpu_loras=8,
    max_model_len=256,
    dtype="float32",
    gpu_memory_utilization=0.05,
)

MakeAdapter = Callable[..., Path]


@pytest.fixture(scope="session")
def tiny_base(tiny_model: Path) -> Path:
    """The suite's tiny Llama (tests/conftest.py `tiny_model`): 2 layers, head_dim 32, a ChatML tokenizer."""
    return tiny_model


def write_adapter(base: Path, dest: Path, *, name: str, seed: int, rank: int = ADAPTER_RANK) -> Path:
    """A PEFT LoRA adapter for `base` with non-zero random weights (seeded) and a result.json listing its files."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        lora_dropout=0.0,
        init_lora_weights=False,  # random A and B: the adapter changes the answers
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():  # make the change large enough to move greedy answers of a random base
        for param_name, param in peft_model.named_parameters():
            if "lora_B" in param_name:
                param.mul_(4.0)
    dest.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(str(dest))
    TrainingResult(
        ok=True,
        code=0,
        reason="Succeeded",
        name=name,
        base_model=BaseModelInfo(uri=f"file://{base}", path=str(base), family="llama"),
        adapter=describe_adapter(dest, r=rank),
    ).write(dest)
    return dest


@pytest.fixture(scope="session")
def make_adapter(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> MakeAdapter:
    """`make_adapter(name, seed, dest=None) -> Path`: a fresh adapter directory (PEFT files + result.json)."""
    root = tmp_path_factory.mktemp("adapters")

    def make(name: str, seed: int, dest: Path | None = None) -> Path:
        return write_adapter(tiny_base, dest or root / f"{name}-{seed}", name=name, seed=seed)

    return make


@pytest.fixture(scope="session")
def tiny_adapters(make_adapter: MakeAdapter) -> dict[str, Path]:
    """Three adapters, each with its own seed: {"alpha": path, "beta": path, "gamma": path}."""
    return {name: make_adapter(name, seed) for name, seed in TINY_ADAPTERS.items()}


def tiny_replica(base: Path, log_path: Path) -> VllmProcess:
    """One vLLM replica of the tiny base (not started); served as "base", runtime LoRA updating on."""
    launch = build_args(
        ServedModel(path=str(base), name=BASE_NAME),
        PAIR_SPEC,
        cpu_profile(kvcache_space_gib=1),
        port=free_port(),
        python=__import__("sys").executable,
    )
    return VllmProcess(launch, log_path, start_timeout=600)


@pytest.fixture(scope="session")
def vllm_pair(tiny_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[VllmProcess]]:
    """Two real vLLM processes of `tiny_base`, started concurrently; each has .url, .start(), .stop(), .kill(),
    .restart(). A test that stops or kills one must start it again (`.start()` is a no-op when it runs)."""
    logs = tmp_path_factory.mktemp("vllm")
    pair = [tiny_replica(tiny_base, logs / f"replica-{i}.log") for i in range(2)]
    try:
        for replica in pair:
            replica.spawn()
        with ThreadPoolExecutor(len(pair)) as pool:
            list(pool.map(lambda r: r.wait_ready(), pair))
        yield pair
    finally:
        for replica in pair:
            replica.stop()
        print(f"\nvLLM logs: {logs}")


@pytest.fixture
def replicas_up(vllm_pair: list[VllmProcess]) -> list[VllmProcess]:
    """`vllm_pair` with both replicas running (restarts one a previous test left stopped or killed)."""
    for replica in vllm_pair:
        if not replica.running():
            replica.start()
    return vllm_pair
