"""Local mode as a user runs it: the `loraplane` command as a process, and FineTuneJobs for the tiny model.

Tests get the runner from the `loraplane_cli` fixture (tests/conftest.py), which marks them `trainer`:
`loraplane run` and `loraplane demo` start the trainer.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

CLI = [sys.executable, "-m", "loraplane.cli"]
LoraplaneCli = Callable[..., subprocess.CompletedProcess[str]]  # the type of `loraplane` below


def finetunejob(name: str, model: Path, data: Path, **training: Any) -> dict[str, Any]:
    """A FineTuneJob for the tiny model, as a user would write it."""
    return {
        "apiVersion": "loraplane.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {
            "baseModel": {"uri": f"file://{model}"},
            "dataset": {"uri": f"file://{data}", "validationSplit": 0.1},
            "lora": {"r": 8, "alpha": 16, "targetModules": ["q_proj", "v_proj"]},
            "training": {"epochs": 1, "batchSize": 8, "learningRate": 0.003, "maxSeqLength": 128, **training},
            "evaluation": {"maxSamples": 6, "metric": "Contains"},
        },
    }


def write_yaml(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def loraplane(
    store: Path, *args: str, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`loraplane --store STORE ARGS...` to the end, its output captured."""
    return subprocess.run(
        [*CLI, "--store", str(store), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        check=False,
    )
