"""The adapter artifact contract shared by trainer, operator and serving: a PEFT directory plus result.json.

result.json records the sha256 of every file of the adapter (`adapter.files`) and one digest naming
the version (`adapter.sha256`). The trainer writes it; the adapter manager verifies it before loading.
Standard library only, so the router image can import it without torch.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

RESULT_FILE = "result.json"
EXCLUDED_DIRS = ("checkpoints",)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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


def verify(adapter_dir: Path) -> list[str]:
    """Problems with an adapter directory against its result.json (empty when every file matches)."""
    path = adapter_dir / RESULT_FILE
    if not path.is_file():
        return [f"{path}: missing"]
    try:
        recorded: dict[str, str] = json.loads(path.read_text())["adapter"]["files"]
    except (ValueError, KeyError, TypeError) as exc:
        return [f"{path}: no adapter.files list ({exc.__class__.__name__})"]
    actual = file_digests(adapter_dir)
    problems = [f"{name}: missing" for name in recorded if name not in actual]
    problems += [f"{name}: sha256 mismatch" for name in recorded if name in actual and actual[name] != recorded[name]]
    problems += [f"{name}: not in result.json" for name in actual if name not in recorded]
    return problems
