"""Whether a verified artifact fits this replica (pure): the rules the operator applies before a FineTuneJob
runs or a version is resolved, applied again here to whatever the router asks for, foreign adapters included.

- the base model the adapter was trained on is the replica's (`loraplane.api.compat.same_base_model`);
- its rank is within vLLM's `--max-lora-rank`;
- vLLM can serve its PEFT settings for that architecture (`loraplane.api.lora_rules.servability_problems`,
  read from the artifact's own adapter_config.json: DoRA, modules_to_save, bias, target modules).

Each problem names where it comes from (result.json or adapter_config.json) and both sides. Two of them
are known before a single blob is downloaded: from an OCI manifest (`before_pull`: the base model our push
annotates, the layers' size) or an S3 version's result.json (`before_fetch`), against the whole cache.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from loraplane.api.compat import same_base_model
from loraplane.api.lora_rules import known_model, servability_problems
from loraplane.api.oci import BASE_MODEL_ANNOTATION
from loraplane.api.result import TrainingResult

PEFT_CONFIG = "adapter_config.json"


def peft_config(adapter_dir: Path) -> dict[str, Any]:
    """The adapter's PEFT config ({} when absent or unreadable: vLLM then refuses the load itself)."""
    try:
        config = json.loads((adapter_dir / PEFT_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def before_pull(manifest: dict[str, Any], *, base_model: str | None, cache_limit: int) -> str | None:
    """Why not to pull this artifact at all, from its manifest alone; None to go on (the files decide then).

    An artifact another client pushed may carry no base-model annotation: then only `unfit` can tell.
    """
    trained = str((manifest.get("annotations") or {}).get(BASE_MODEL_ANNOTATION) or "")
    size = sum(int(layer.get("size") or 0) for layer in manifest.get("layers") or [])
    return _too_foreign_or_large(trained, "manifest annotation", size, base_model=base_model, cache_limit=cache_limit)


def before_fetch(result: TrainingResult, *, base_model: str | None, cache_limit: int) -> str | None:
    """`before_pull` for a store that gives result.json first (S3): its base model and adapter size."""
    trained = result.base_model.uri if result.base_model else ""
    size = result.adapter.size_bytes if result.adapter else 0
    return _too_foreign_or_large(trained, "result.json", size, base_model=base_model, cache_limit=cache_limit)


def _too_foreign_or_large(
    trained: str, source: str, size: int, *, base_model: str | None, cache_limit: int
) -> str | None:
    problems = []
    if base_model and trained and not same_base_model(trained, base_model):
        problems.append(f"its base model {trained} ({source}) differs from this replica's {base_model}")
    if size > cache_limit:
        problems.append(f"it is {size} bytes, more than the whole adapter cache ({cache_limit} bytes)")
    return "; ".join(problems) or None


def unfit(result: TrainingResult, config: dict[str, Any], *, base_model: str | None, max_lora_rank: int) -> str | None:
    """Why this replica cannot serve the adapter correctly, naming both sides; None when it can."""
    problems = []
    trained = result.base_model.uri if result.base_model else ""
    if base_model and trained and not same_base_model(trained, base_model):
        problems.append(f"its base model {trained} differs from this replica's {base_model}")
    rank = result.adapter.r if result.adapter and result.adapter.r is not None else config.get("r")
    if isinstance(rank, int) and rank > max_lora_rank:
        problems.append(f"its LoRA rank {rank} exceeds this replica's --max-lora-rank {max_lora_rank}")
    family = result.base_model.family if result.base_model and result.base_model.family else None
    if family is None and base_model:
        known = known_model(base_model)
        family = known.family if known else None
    targets = config.get("target_modules")
    problems += [
        str(p)
        for p in servability_problems(
            bias=str(config.get("bias") or "none"),
            use_dora=bool(config.get("use_dora")),
            modules_to_save=list(config.get("modules_to_save") or []) or None,
            target_modules=[targets] if isinstance(targets, str) else list(targets or []) or None,
            family=family,
            prefix=PEFT_CONFIG,
        )
    ]
    return "; ".join(problems) or None
