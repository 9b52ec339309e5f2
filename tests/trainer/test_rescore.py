"""Rescoring a finished adapter (local mode's `loraplane eval`), in process, on an adapter made without training."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from loraplane.api.conditions import JobReason
from loraplane.api.result import BaseModelInfo, TrainingResult
from loraplane.trainer.errors import InvalidSpec
from loraplane.trainer.rescore import rescore
from loraplane.trainer.train import load_spec


def random_adapter(base: Path, out: Path, *, recorded_base: str) -> Path:
    """A LoRA adapter with random weights (so it answers unlike the base model) and the result.json of a run
    whose base model was at `recorded_base`."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    lora = LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(AutoModelForCausalLM.from_pretrained(base), lora).save_pretrained(out)
    base_model = BaseModelInfo(uri=f"file://{base}", path=recorded_base)
    TrainingResult(ok=True, code=0, reason=JobReason.SUCCEEDED, base_model=base_model).write(out)
    return out


def test_rescore_compares_base_and_adapter_on_the_validation_split(
    make_spec: Callable[..., Path], tiny_model: Path, tmp_path: Path
) -> None:
    adapter = random_adapter(tiny_model, tmp_path / "adapter", recorded_base=str(tiny_model))
    report = rescore(load_spec(make_spec(evaluation={"maxSamples": 4})), adapter)
    assert report is not None
    assert report.metric == "Contains" and report.examples == len(report.samples) == 4
    assert all(s.answer.startswith("E") for s in report.samples)  # the toy data's answers
    assert any(s.base != s.adapter for s in report.samples), "the adapter must be loaded, not the base model twice"


def test_rescore_on_a_held_out_file_finds_a_moved_base_model_from_the_spec(
    make_spec: Callable[..., Path], tiny_model: Path, tmp_path: Path
) -> None:
    held_out = tmp_path / "held.jsonl"
    rows = [{"instruction": f"Code of item {i}?", "input": "", "output": f"E{i}", "answer": f"E{i}"} for i in range(3)]
    held_out.write_text("".join(json.dumps(r) + "\n" for r in rows))
    adapter = random_adapter(tiny_model, tmp_path / "adapter", recorded_base=str(tmp_path / "moved-away"))
    spec = load_spec(make_spec(evaluation={"heldOutUri": f"file://{held_out}", "metric": "ExactMatch"}))
    report = rescore(spec, adapter)
    assert report is not None
    assert report.metric == "ExactMatch" and [s.answer for s in report.samples] == ["E0", "E1", "E2"]


def test_rescore_refuses_what_it_cannot_score(make_spec: Callable[..., Path], tiny_model: Path, tmp_path: Path) -> None:
    with pytest.raises(InvalidSpec, match="not a finished adapter"):
        rescore(load_spec(make_spec()), tmp_path)
    adapter = random_adapter(tiny_model, tmp_path / "adapter", recorded_base=str(tiny_model))
    with pytest.raises(InvalidSpec, match="no held-out data") as info:
        rescore(load_spec(make_spec(dataset={"validationSplit": 0})), adapter)
    assert info.value.field == "spec.evaluation.heldOutUri"
