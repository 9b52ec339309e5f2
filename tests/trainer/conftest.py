"""Fixtures for trainer tests: a tiny Llama built from a config and a learnable toy dataset."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.trainer.tiny import build_tiny_llama, build_tokenizer


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama (head_dim 32) with a tokenizer trained on the fly, saved as a plain checkpoint."""
    root = tmp_path_factory.mktemp("tiny-model")
    tokenizer = build_tokenizer(root / "tokenizer")
    return build_tiny_llama(root / "model", tokenizer)


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 Alpaca records with a short scorable answer."""
    path = tmp_path_factory.mktemp("data") / "toy.jsonl"
    records = [
        {
            "instruction": f"What is the code for item {i}?",
            "input": "",
            "output": f"The code is E{i % 12}.",
            "answer": f"E{i % 12}",
        }
        for i in range(120)
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path


@pytest.fixture
def make_spec(tiny_model: Path, toy_data: Path, tmp_path: Path) -> Callable[..., Path]:
    """Write a training spec for the tiny model; keyword arguments override sections."""

    def make(name: str = "spec", **sections: Any) -> Path:
        spec: dict[str, Any] = {
            "name": "toy",
            "baseModel": {"uri": f"file://{tiny_model}"},
            "dataset": {"uri": f"file://{toy_data}", "validationSplit": 0.1},
            "lora": {"r": 8, "alpha": 16},
            "training": {"epochs": 1, "batchSize": 8, "learningRate": 0.003, "maxSeqLength": 128, "checkpointSteps": 5},
            "evaluation": {"maxSamples": 8},
            "outputDir": str(tmp_path / f"{name}-out"),
            "cacheDir": str(tmp_path / "cache"),
        }
        for key, value in sections.items():
            spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(spec))
        return path

    return make
