"""The adapter artifact contract shared by trainer, operator and serving: a PEFT directory plus result.json.

result.json (:class:`loraplane.api.result.TrainingResult`) records the sha256 of every file of the adapter
(`adapter.files`) and one digest naming the version (`adapter.sha256`). The trainer writes it; the adapter
manager verifies it before loading. No torch, so the router and operator images can import it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from loraplane.api.result import RESULT_FILE, AdapterFiles, TrainingResult

EXCLUDED_DIRS = ("checkpoints",)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    """sha256 of the canonical JSON of `value` (sorted keys, no spaces): the same value, the same digest."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def file_digests(adapter_dir: Path) -> dict[str, str]:
    """sha256 of every file of the adapter (relative path -> hex), result.json and checkpoints excluded."""
    out = {}
    for path in sorted(adapter_dir.rglob("*")):
        rel = path.relative_to(adapter_dir)
        if not path.is_file() or rel.parts[0] in EXCLUDED_DIRS or rel.as_posix() == RESULT_FILE:
            continue
        out[rel.as_posix()] = sha256_file(path)
    return out


def adapter_digest(files: dict[str, str]) -> str:
    """One sha256 naming the adapter version: over the sorted 'sha256  path' lines (like sha256sum output)."""
    lines = "".join(f"{digest}  {name}\n" for name, digest in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def describe_adapter(adapter_dir: Path, **details: Any) -> AdapterFiles:
    """result.json's `adapter` for the files now in `adapter_dir`: every file's digest, the version digest,
    the size; `details` adds the LoRA shape (target_modules, r, alpha)."""
    files = file_digests(adapter_dir)
    size = sum((adapter_dir / name).stat().st_size for name in files)
    return AdapterFiles(path=str(adapter_dir), sha256=adapter_digest(files), size_bytes=size, files=files, **details)


def verify(adapter_dir: Path) -> list[str]:
    """Problems with an adapter directory against its result.json (empty when every file matches and the
    recorded version digest is the digest of the recorded files)."""
    path = adapter_dir / RESULT_FILE
    if not path.is_file():
        return [f"{path}: missing"]
    result = TrainingResult.read(adapter_dir)
    if result is None or result.adapter is None or not result.adapter.files:
        return [f"{path}: no adapter.files list"]
    recorded = result.adapter.files
    actual = file_digests(adapter_dir)
    problems = [f"{name}: missing" for name in recorded if name not in actual]
    problems += [f"{name}: sha256 mismatch" for name in recorded if name in actual and actual[name] != recorded[name]]
    problems += [f"{name}: not in result.json" for name in actual if name not in recorded]
    digest = adapter_digest(recorded)
    if result.adapter.sha256 != digest:
        problems.append(f"adapter.sha256 {result.adapter.sha256} does not match its file list ({digest})")
    return problems
