"""The run's result: result.json next to the adapter, and a <= 4 KiB summary for the pod's termination message."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

RESULT_FILE = "result.json"
MAX_SUMMARY_BYTES = 4096
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
    """One sha256 naming the adapter version: over the sorted 'path  sha256' lines (like sha256sum output)."""
    lines = "".join(f"{digest}  {name}\n" for name, digest in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def spec_hash(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_result(adapter_dir: Path, result: dict[str, Any]) -> Path:
    path = adapter_dir / RESULT_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def summary(result: dict[str, Any]) -> str:
    """The compact JSON the operator reads from the termination message (never more than 4 KiB)."""
    keep = {
        "ok": result.get("ok", False),
        "code": result.get("code"),
        "reason": result.get("reason"),
        "message": (result.get("message") or "")[:1024],
        "adapter": {k: v for k, v in (result.get("adapter") or {}).items() if k != "files"} or None,
        "evaluation": {k: v for k, v in (result.get("evaluation") or {}).items() if k != "samples"} or None,
        "metrics": {k: v for k, v in (result.get("metrics") or {}).items() if isinstance(v, int | float)},
        "trainable_params": result.get("trainable_params"),
    }
    text = json.dumps({k: v for k, v in keep.items() if v is not None}, separators=(",", ":"), ensure_ascii=False)
    while len(text.encode()) > MAX_SUMMARY_BYTES and keep["metrics"]:
        keep["metrics"].popitem()
        text = json.dumps({k: v for k, v in keep.items() if v is not None}, separators=(",", ":"), ensure_ascii=False)
    if len(text.encode()) > MAX_SUMMARY_BYTES:
        keep["message"] = keep["message"][:200]
        keep.pop("evaluation", None)
        text = json.dumps({k: v for k, v in keep.items() if v is not None}, separators=(",", ":"), ensure_ascii=False)
    return text


def verify(adapter_dir: Path) -> list[str]:
    """Problems with an adapter directory against its result.json (empty when every file matches)."""
    path = adapter_dir / RESULT_FILE
    if not path.is_file():
        return [f"{path}: missing"]
    recorded: dict[str, str] = json.loads(path.read_text())["adapter"]["files"]
    actual = file_digests(adapter_dir)
    problems = [f"{name}: missing" for name in recorded if name not in actual]
    problems += [f"{name}: sha256 mismatch" for name in recorded if name in actual and actual[name] != recorded[name]]
    problems += [f"{name}: not in result.json" for name in actual if name not in recorded]
    return problems
