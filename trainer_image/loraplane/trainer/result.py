"""The run's result: result.json next to the adapter, and a <= 4 KiB summary for the pod's termination message."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from loraplane.api.artifact import RESULT_FILE, adapter_digest, file_digests, verify

__all__ = ["RESULT_FILE", "adapter_digest", "file_digests", "spec_hash", "summary", "verify", "write_result"]

MAX_SUMMARY_BYTES = 4096


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
