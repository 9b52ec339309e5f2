"""The adapter agent's checks before a load (pure): a directory's files against its result.json, and the fit
rules (base model, rank and PEFT settings), each naming where it comes from."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from loraplane.api.result import AdapterFiles, BaseModelInfo, TrainingResult
from loraplane.serving.adapter_manager import AdapterRefused
from loraplane.serving.agent.app import checked_directory
from loraplane.serving.agent.fit import before_fetch, before_pull, peft_config, unfit
from tests.serving.scripted import fake_adapter

BASE = "hf://HuggingFaceTB/SmolLM2-135M-Instruct@main"
OK_CONFIG = {"r": 8, "bias": "none", "use_dora": False, "target_modules": ["q_proj", "v_proj"]}


def result(base: str = BASE, r: int = 8, family: str | None = None) -> TrainingResult:
    return TrainingResult(
        ok=True,
        code=0,
        reason="Succeeded",
        base_model=BaseModelInfo(uri=base, family=family),
        adapter=AdapterFiles(sha256="a" * 64, r=r),
    )


def check(res: TrainingResult, config: dict[str, Any], max_rank: int = 16) -> str | None:
    return unfit(res, config, base_model=BASE, max_lora_rank=max_rank)


def test_a_fitting_adapter_passes() -> None:
    assert check(result(), OK_CONFIG) is None
    assert check(result(base="hf://HuggingFaceTB/SmolLM2-135M-Instruct"), OK_CONFIG) is None  # unpinned side


@pytest.mark.parametrize(
    ("res", "config", "expected"),
    [
        (result(base="hf://Qwen/Qwen2.5-0.5B"), OK_CONFIG, "its base model hf://Qwen/Qwen2.5-0.5B differs from"),
        (result(r=32), OK_CONFIG, "its LoRA rank 32 exceeds this replica's --max-lora-rank 16"),
        (result(), {**OK_CONFIG, "use_dora": True}, "adapter_config.json.useDora: vLLM cannot serve DoRA"),
        (result(), {**OK_CONFIG, "bias": "all"}, "adapter_config.json.bias: vLLM serves only bias 'none'"),
        (result(), {**OK_CONFIG, "modules_to_save": ["lm_head"]}, "adapter_config.json.modulesToSave"),
        # a llama-family model (known from the replica's base model name) has no fused c_attn
        (result(), {**OK_CONFIG, "target_modules": ["c_attn"]}, "adapter_config.json.targetModules: llama models"),
    ],
)
def test_what_does_not_fit_is_named(res: TrainingResult, config: dict[str, Any], expected: str) -> None:
    problem = check(res, config)
    assert problem is not None and expected in problem, problem


def test_the_recorded_family_wins_and_a_missing_config_is_vllms_to_refuse(tmp_path: Path) -> None:
    assert check(result(family="gpt2"), {**OK_CONFIG, "target_modules": "c_attn"}) is None
    assert peft_config(tmp_path) == {}
    (tmp_path / "adapter_config.json").write_text("[1, 2]")
    assert peft_config(tmp_path) == {}


def test_before_pull_reads_the_manifest_only() -> None:
    layers = [{"size": 600}, {"size": 400}]
    ours = {"annotations": {"io.loraplane.base-model": BASE}, "layers": layers}
    assert before_pull(ours, base_model=BASE, cache_limit=1000) is None
    other = {**ours, "annotations": {"io.loraplane.base-model": "hf://Qwen/Qwen2.5-0.5B"}}
    problem = before_pull(other, base_model=BASE, cache_limit=1000)
    assert problem is not None and "hf://Qwen/Qwen2.5-0.5B (manifest annotation) differs" in problem
    problem = before_pull(ours, base_model=BASE, cache_limit=999)
    assert problem is not None and "1000 bytes, more than the whole adapter cache (999 bytes)" in problem
    assert before_pull({"layers": layers}, base_model=BASE, cache_limit=1000) is None  # foreign: the files decide


def test_before_fetch_reads_result_json_only() -> None:
    ours = result()
    assert ours.adapter is not None
    ours.adapter.size_bytes = 1000
    assert before_fetch(ours, base_model=BASE, cache_limit=1000) is None
    other = result(base="hf://Qwen/Qwen2.5-0.5B")
    problem = before_fetch(other, base_model=BASE, cache_limit=1000)
    assert problem is not None and "hf://Qwen/Qwen2.5-0.5B (result.json) differs" in problem
    problem = before_fetch(ours, base_model=BASE, cache_limit=999)
    assert problem is not None and "1000 bytes, more than the whole adapter cache (999 bytes)" in problem


def test_a_directory_that_does_not_match_its_result_json_is_refused_naming_the_file(tmp_path: Path) -> None:
    good, digest = fake_adapter(tmp_path / "good", "good")
    assert checked_directory(str(good)).adapter.sha256 == digest  # type: ignore[union-attr]

    tampered, _ = fake_adapter(tmp_path / "tampered", "tampered")
    weights = tampered / "adapter_model.safetensors"
    weights.write_bytes(bytes([weights.read_bytes()[0] ^ 1]) + weights.read_bytes()[1:])
    no_result, _ = fake_adapter(tmp_path / "noresult", "noresult")
    (no_result / "result.json").unlink()
    extra, _ = fake_adapter(tmp_path / "extra", "extra")
    (extra / "smuggled.json").write_text("{}")
    cases = {
        tampered: "adapter_model.safetensors: sha256 mismatch",
        no_result: "result.json: missing",
        extra: "smuggled.json: not in result.json",
        tmp_path / "nowhere": "does not exist",
    }
    for directory, message in cases.items():
        with pytest.raises(AdapterRefused, match=message):
            checked_directory(str(directory))
