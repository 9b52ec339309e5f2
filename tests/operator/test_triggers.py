"""Which FineTuneJob watch events start a round that applies the children (kopf keeps no state on them)."""

from __future__ import annotations

from typing import Any

import pytest

from loraplane.operator.reconcile import wants_round


def ftj(generation: int, observed: int | None = None, **meta: Any) -> dict[str, Any]:
    status = {} if observed is None else {"observedGeneration": observed, "phase": "Training"}
    return {"metadata": {"name": "x", "namespace": "n", "generation": generation, **meta}, "status": status}


@pytest.mark.parametrize(
    ("event", "body", "expected"),
    [
        ("ADDED", ftj(1), True),  # a new object: no status yet
        ("MODIFIED", ftj(2, observed=1), True),  # a spec edit (suspend, a new dataset, ...)
        ("MODIFIED", ftj(2, observed=2), False),  # our own status write coming back
        (None, ftj(2, observed=2), True),  # the operator's start-up listing: converge what happened meanwhile
        ("MODIFIED", ftj(1, deletionTimestamp="2026-01-01T00:00:00Z"), False),  # deletion is `finalize`'s
        ("DELETED", ftj(1), False),
    ],
)
def test_which_events_start_a_round(event: str | None, body: dict[str, Any], expected: bool) -> None:
    assert wants_round(event, body) is expected
