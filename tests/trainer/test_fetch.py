"""`python -m loraplane.trainer.fetch`, the ModelServer pods' init container, run for real as a process."""

from __future__ import annotations

import json
from pathlib import Path

from loraplane.api.exit_codes import ExitCode
from loraplane.trainer.fetch import link_model
from tests.support.trainer import Trainer


def checkpoint(path: Path) -> Path:
    """The smallest directory resolve_model accepts as a plain checkpoint: its config.json."""
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    return path


def test_a_pvc_model_is_linked_into_the_cache(tmp_path: Path, trainer: Trainer) -> None:
    pvc_root, cache = tmp_path / "pvc", tmp_path / "cache"
    cache.mkdir()
    base = checkpoint(pvc_root / "models" / "base")
    proc = trainer.fetch("pvc://models/base", cache, pvc_root)
    assert proc.returncode == 0, proc.stderr
    assert (cache / "model").resolve() == base.resolve()
    assert f"base model pvc://models/base -> {base}" in proc.stderr
    assert sorted(p.name for p in cache.iterdir()) == ["model"]  # no temporary link left behind


def test_a_new_model_replaces_the_link_in_place(tmp_path: Path) -> None:
    old, new = checkpoint(tmp_path / "old"), checkpoint(tmp_path / "new")
    link_model(tmp_path, old)
    link = link_model(tmp_path, new)
    assert link == tmp_path / "model" and link.resolve() == new.resolve()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "new", "old"]


def test_a_missing_model_exits_with_the_documented_code(tmp_path: Path, trainer: Trainer) -> None:
    proc = trainer.fetch(f"file://{tmp_path}/nowhere", tmp_path, tmp_path)
    assert proc.returncode == ExitCode.MODEL_NOT_FOUND, proc.stderr
    assert "cannot fetch the base model" in proc.stderr and "no such file or directory" in proc.stderr
    assert not (tmp_path / "model").exists()
