"""Fixtures for trainer tests: training specs over the tiny model and toy data (tests/conftest.py), and the trainer
as a process (`trainer`: tests that take it are marked `trainer`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support.trainer import Trainer


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


@pytest.fixture
def trainer() -> Trainer:
    """`trainer.run(spec, *extra, procs=1)` to the end, or `trainer.start(spec, **popen)`: `python -m loraplane.trainer`
    as a process; `trainer.fetch(uri, cache, pvc_root)`: the init container's model fetch (tests/support/trainer.py)."""
    return Trainer()
