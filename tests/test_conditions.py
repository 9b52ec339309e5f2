"""Unit tests: condition bookkeeping and the admission status mapping (pure functions)."""

from __future__ import annotations

from loraplane.api.conditions import get_condition, set_condition
from loraplane.api.lora_rules import Problem
from loraplane.operator.status import finetunejob_admission_status, status_patch

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def test_transition_time_moves_only_on_flip() -> None:
    conds = set_condition([], "Ready", "False", "Starting", "a", 1, T0)
    same = set_condition(conds, "Ready", "False", "StillStarting", "b", 2, T1)
    assert same[0].last_transition_time == T0 and same[0].reason == "StillStarting" and same[0].observed_generation == 2
    flipped = set_condition(same, "Ready", "True", "Up", "c", 2, T1)
    assert flipped[0].last_transition_time == T1


def test_other_conditions_kept_in_order() -> None:
    conds = set_condition([], "A", "True", "R", "", 1, T0)
    conds = set_condition(conds, "B", "True", "R", "", 1, T0)
    conds = set_condition(conds, "A", "False", "R", "", 1, T1)
    assert [c.type for c in conds] == ["A", "B"]


def test_admission_accepts_then_is_stable() -> None:
    status = finetunejob_admission_status(None, 1, [], T0)
    accepted = get_condition(status.conditions, "Accepted")
    assert status.phase == "Pending" and status.observed_generation == 1
    assert accepted is not None and accepted.status == "True"
    current = status.to_k8s()
    again = finetunejob_admission_status(current, 1, [], T1)
    assert status_patch(current, again) is None  # nothing to write a second time


def test_admission_rejects_then_recovers() -> None:
    bad = finetunejob_admission_status(None, 1, [Problem("spec.lora.bias", "vLLM serves only bias 'none'")], T0)
    failed = get_condition(bad.conditions, "Failed")
    assert bad.phase == "Failed" and failed is not None and failed.reason == "InvalidSpec"
    assert "spec.lora.bias" in failed.message
    fixed = finetunejob_admission_status(bad.to_k8s(), 2, [], T1)
    assert fixed.phase == "Pending" and get_condition(fixed.conditions, "Failed") is None
    accepted = get_condition(fixed.conditions, "Accepted")
    assert accepted is not None and accepted.status == "True" and accepted.last_transition_time == T1
