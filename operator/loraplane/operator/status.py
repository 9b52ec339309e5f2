"""Pure mapping from what the operator observed to the status it should write."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from loraplane.api.common import Condition
from loraplane.api.conditions import ConditionType, JobReason, set_condition, short
from loraplane.api.finetunejob import FineTuneJobStatus
from loraplane.api.lora_rules import Problem
from loraplane.api.modelserver import ModelServerStatus


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


def finetunejob_admission_status(
    current: dict[str, Any] | None, generation: int, problems: Sequence[Problem], timestamp: str
) -> FineTuneJobStatus:
    """FineTuneJob status after checking its spec; an accepted job starts (or stays) in its phase."""
    status = FineTuneJobStatus.model_validate(current or {})
    conds = admission_conditions(status.conditions, generation, problems, timestamp)
    phase = "Failed" if problems else (status.phase if status.phase not in (None, "Failed") else "Pending")
    return status.model_copy(update={"conditions": conds, "phase": phase, "observed_generation": generation})


def modelserver_admission_status(
    current: dict[str, Any] | None, generation: int, problems: Sequence[Problem], timestamp: str
) -> ModelServerStatus:
    """ModelServer status after checking its spec."""
    status = ModelServerStatus.model_validate(current or {})
    conds = admission_conditions(status.conditions, generation, problems, timestamp)
    return status.model_copy(update={"conditions": conds, "observed_generation": generation})


def status_patch(
    current: dict[str, Any] | None, desired: FineTuneJobStatus | ModelServerStatus
) -> dict[str, Any] | None:
    """The merge patch that turns `current` into `desired`, or None when nothing changes."""
    wanted = desired.to_k8s()
    have = current or {}
    patch = {k: v for k, v in wanted.items() if have.get(k) != v}
    return patch or None
