"""Admission, shared by both controllers: a spec's problems and the conditions they lead to (pure).

Invariant: a spec is Accepted exactly when it has no problem; every problem names its field
(`spec.lora.bias`), and the message that lists them fits in one condition and one Event.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from loraplane.api.common import Condition
from loraplane.api.conditions import ConditionType, JobReason, set_condition, short
from loraplane.api.lora_rules import Problem

M = TypeVar("M", bound=BaseModel)


def parse_spec(model: type[M], spec: Mapping[str, Any]) -> tuple[M | None, list[Problem]]:
    """Parse with the model the CRD was generated from (the API server normally already did)."""
    try:
        return model.model_validate(dict(spec)), []
    except ValidationError as exc:
        return None, [Problem(_field_path(err["loc"]), err["msg"]) for err in exc.errors()]


def _field_path(loc: Sequence[int | str]) -> str:
    return "spec" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)


def problems_message(problems: Sequence[Problem]) -> str:
    """One short message listing every problem (bounded, so it fits in a condition and an Event)."""
    return short("; ".join(str(p) for p in problems))


def admission_conditions(
    conditions: Sequence[Condition], generation: int, problems: Sequence[Problem], timestamp: str
) -> list[Condition]:
    """Conditions after checking a spec: Accepted=True, or Accepted=False + Failed=True (InvalidSpec)."""
    if problems:
        message = problems_message(problems)
        conds = set_condition(
            conditions, ConditionType.ACCEPTED, "False", JobReason.INVALID_SPEC, message, generation, timestamp
        )
        return set_condition(
            conds, ConditionType.FAILED, "True", JobReason.INVALID_SPEC, message, generation, timestamp
        )
    conds = set_condition(
        conditions, ConditionType.ACCEPTED, "True", JobReason.SPEC_VALID, "spec is valid", generation, timestamp
    )
    return [c for c in conds if not (c.type == ConditionType.FAILED and c.reason == JobReason.INVALID_SPEC)]
