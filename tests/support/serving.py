"""Tiny vLLM replicas and random-weight LoRA adapters for the tiny Llama (tests/support/tiny.py).

The serving fixtures (tests/serving/fixtures.py) and the benchmarks build on these.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from loraplane.api.artifact import describe_adapter
from loraplane.api.modelserver import VllmSpec
from loraplane.api.result import BaseModelInfo, TrainingResult
from loraplane.serving.vllm_args import CPU_MAX_NUM_SEQS, ServedModel, build_args, cpu_profile
from loraplane.serving.vllm_process import VllmProcess
from tests.support.kube import free_port

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


def write_adapter(
    base: Path, dest: Path, *, name: str, seed: int, rank: int = ADAPTER_RANK, b_scale: float = 4.0
) -> Path:
    """A PEFT LoRA adapter for `base` with non-zero random weights (seeded) and a result.json listing its files.

    b_scale multiplies the B matrices: large enough by default to move the greedy answers of a random base.
    """
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
    if b_scale != 1.0:
        with torch.no_grad():
            for param_name, param in peft_model.named_parameters():
                if "lora_B" in param_name:
                    param.mul_(b_scale)
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


def tamper(adapter: Path) -> Path:
    """Flip one byte of the adapter's weights (result.json unchanged): what every verification must catch."""
    weights = adapter / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    return adapter


def vllm_server(
    base: Path,
    spec: VllmSpec,
    log_path: Path,
    *,
    max_num_seqs: int | None = CPU_MAX_NUM_SEQS,
    port: int = 0,
    host: str = "127.0.0.1",
    start_timeout: float = 600.0,
) -> VllmProcess:
    """One vLLM CPU process (not started) serving `base` as "base" on a loopback `host` (`port`, or a free one)."""
    launch = build_args(
        ServedModel(path=str(base), name=BASE_NAME),
        spec,
        cpu_profile(kvcache_space_gib=1, max_num_seqs=max_num_seqs),
        port=port or free_port(),
        host=host,
        python=sys.executable,
    )
    return VllmProcess(launch, log_path, start_timeout=start_timeout)


def tiny_replica(base: Path, log_path: Path, host: str = "127.0.0.1") -> VllmProcess:
    """One vLLM replica of the tiny base (not started); served as "base", runtime LoRA updating on."""
    return vllm_server(base, PAIR_SPEC, log_path, host=host)
