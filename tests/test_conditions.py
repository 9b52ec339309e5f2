"""Unit tests: condition bookkeeping, admission and the ReconcileFailed mark as the controllers write them (pure)."""

from __future__ import annotations

from loraplane.api.conditions import get_condition, set_condition
from loraplane.api.finetunejob import FineTuneJobStatus
from loraplane.api.lora_rules import Problem
from loraplane.api.modelserver import ModelServerStatus
from loraplane.operator.finetunejob.status import Snapshot, finetunejob_status
from loraplane.operator.modelserver.status import ServerSnapshot, modelserver_status
from loraplane.operator.status import reconcile_failed, status_patch

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


def admitted(current: FineTuneJobStatus, generation: int, problems: list[Problem], timestamp: str) -> FineTuneJobStatus:
    """The status a round writes for a spec before its Job exists (what admission looks like to the user)."""
    snap = Snapshot(generation=generation, problems=problems, suspend=False, adapter_uri="pvc://s/n/x", job=None)
    return finetunejob_status(current, snap, timestamp)


def test_admission_accepts_then_is_stable() -> None:
    status = admitted(FineTuneJobStatus(), 1, [], T0)
    accepted = get_condition(status.conditions, "Accepted")
    assert status.phase == "Pending" and status.observed_generation == 1
    assert accepted is not None and accepted.status == "True"
    current = status.to_k8s()
    again = admitted(FineTuneJobStatus.model_validate(current), 1, [], T1)
    assert status_patch(current, again) is None  # nothing to write a second time


def test_admission_rejects_then_recovers() -> None:
    bad = admitted(FineTuneJobStatus(), 1, [Problem("spec.lora.bias", "vLLM serves only bias 'none'")], T0)
    failed = get_condition(bad.conditions, "Failed")
    assert bad.phase == "Failed" and failed is not None and failed.reason == "InvalidSpec"
    assert "spec.lora.bias" in failed.message
    fixed = admitted(bad, 2, [], T1)
    assert fixed.phase == "Pending" and get_condition(fixed.conditions, "Failed") is None
    accepted = get_condition(fixed.conditions, "Accepted")
    assert accepted is not None and accepted.status == "True" and accepted.last_transition_time == T1


def test_a_failing_reconcile_is_marked_once_and_the_next_good_round_clears_it() -> None:
    good = admitted(FineTuneJobStatus(), 1, [], T0).to_k8s()
    mark = reconcile_failed(good, "the operator cannot reconcile this object and keeps retrying: API 403", 1, T1)
    assert mark is not None
    marked = FineTuneJobStatus.model_validate({**good, **mark})
    degraded = get_condition(marked.conditions, "Degraded")
    assert degraded is not None and (degraded.status, degraded.reason) == ("True", "ReconcileFailed")
    assert "API 403" in degraded.message and degraded.observed_generation == 1
    assert reconcile_failed(marked.to_k8s(), degraded.message, 1, T1) is None, "the same failure: no second write"
    assert [c.type for c in marked.conditions][:-1] == [c["type"] for c in good["conditions"]], "the rest is kept"
    cleared = admitted(marked, 1, [], T1)
    assert get_condition(cleared.conditions, "Degraded") is None


def test_a_good_modelserver_round_replaces_the_mark() -> None:
    marked = ModelServerStatus.model_validate(reconcile_failed({}, "keeps retrying: boom", 3, T0) or {})
    snap = ServerSnapshot(generation=3, problems=[], spec=None)  # the smallest snapshot a round writes
    degraded = get_condition(modelserver_status(marked, snap, T1).conditions, "Degraded")
    assert degraded is not None and degraded.reason != "ReconcileFailed"
