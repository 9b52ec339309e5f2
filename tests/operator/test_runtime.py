"""The runtime both controllers share: coalescing, follow-ups, error classes, standby (no cluster).

The async tests drive a real Runtime on a real event loop and thread pool with a scripted controller:
each round of the fake controller does what its script says (return a Requeue, raise an error).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from loraplane.operator import kube
from loraplane.operator.peering import standing_by
from loraplane.operator.runtime import (
    FAILURES_BEFORE_CONDITION,
    QUICK_RETRIES,
    RETRY_MAX_S,
    Coalescer,
    Failure,
    NotYet,
    Pass,
    Requeue,
    RoundFn,
    Runtime,
    backoff,
    classify,
    failure_message,
    wants_round,
)

# ---------------------------------------------------------------------------------------------- coalescing


def test_triggers_during_a_round_become_one_more_round_with_sticky_apply() -> None:
    passes: list[Pass] = []
    entered, release = threading.Event(), threading.Event()
    coalescer: Coalescer[int] = Coalescer()

    def round_(p: Pass) -> int:
        passes.append(p)
        if len(passes) == 1:
            entered.set()
            assert release.wait(10)
        return len(passes)

    first: list[tuple[bool, int | None]] = []
    runner = threading.Thread(target=lambda: first.append(coalescer.run("a", round_, apply=False)))
    runner.start()
    assert entered.wait(10)
    # three triggers while the first round runs: each returns at once, one asks to apply children
    assert coalescer.run("a", round_, apply=True) == (False, None)
    assert coalescer.run("a", round_, apply=False) == (False, None)
    assert coalescer.run("a", round_, apply=False) == (False, None)
    assert coalescer.run("b", lambda p: 99, apply=False) == (True, 99)  # other objects are not held up
    release.set()
    runner.join(10)
    assert first == [(True, 2)]  # exactly one more round, and it applied; only the first pass is `first`
    assert passes == [Pass(apply=False, first=True), Pass(apply=True, first=False)]


def test_a_failing_round_frees_the_object_and_keeps_its_apply_request() -> None:
    coalescer: Coalescer[str] = Coalescer()

    def boom(p: Pass) -> str:
        raise RuntimeError("api down")

    with pytest.raises(RuntimeError, match="api down"):
        coalescer.run("a", boom, apply=True)
    seen: list[Pass] = []

    def record(p: Pass) -> str:
        seen.append(p)
        return "ran"

    assert coalescer.run("a", record, apply=False) == (True, "ran")
    assert seen == [Pass(apply=True, first=True)], "the failed round's apply request survives for the next"


def test_forgetting_a_busy_object_drops_it_once_its_round_ends() -> None:
    coalescer: Coalescer[str] = Coalescer()
    entered, release = threading.Event(), threading.Event()

    def slow(p: Pass) -> str:
        entered.set()
        release.wait(10)
        return "slow"

    runner = threading.Thread(target=coalescer.run, args=("a", slow), kwargs={"apply": False})
    runner.start()
    assert entered.wait(10)
    coalescer.forget("a")
    assert coalescer.run("a", lambda p: "other", apply=False) == (False, None), "still one round at a time"
    release.set()
    runner.join(10)
    assert coalescer.run("a", lambda p: "fresh", apply=False) == (True, "fresh")


# ---------------------------------------------------------------------------------------------- decisions


def api_error(status: int, message: str = "") -> Exception:
    error: Exception = kube.ApiError(status=status, reason={403: "Forbidden", 409: "Conflict"}.get(status, "Error"))
    error.body = json.dumps({"kind": "Status", "message": message}).encode()  # type: ignore[attr-defined]
    return error


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (api_error(409), Failure.RETRY_NOW),  # a stale resourceVersion: read fresh and go again
        (api_error(404), Failure.RETRY_NOW),  # the object went away meanwhile
        (api_error(410), Failure.RETRY_NOW),
        (NotYet("waiting for cleanup Job x-cleanup", delay=3), Failure.NOT_YET),
        (api_error(403, "forbidden: exceeded quota"), Failure.FAILED),
        (api_error(500), Failure.FAILED),
        (api_error(422), Failure.FAILED),
        (RuntimeError("cleanup Job failed"), Failure.FAILED),
    ],
)
def test_errors_are_classified(error: Exception, expected: Failure) -> None:
    assert classify(error) is expected


def test_backoff_doubles_up_to_its_bound() -> None:
    assert [backoff(n) for n in (1, 2, 3, 4, 7, 8, 50)] == [1, 2, 4, 8, 60, 60, 60] and RETRY_MAX_S == 60


def test_the_failure_message_names_the_error_and_stays_the_same_across_retries() -> None:
    error = kube.error_text(api_error(403, 'deployments.apps "q-vllm" is forbidden: exceeded quota: q'))
    assert error == 'API 403 Forbidden: deployments.apps "q-vllm" is forbidden: exceeded quota: q'
    assert failure_message(error) == failure_message(error) and error in failure_message(error)
    assert kube.error_text(RuntimeError("boom")) == "RuntimeError: boom"


def obj(generation: int, observed: int | None = None, **meta: Any) -> dict[str, Any]:
    status = {} if observed is None else {"observedGeneration": observed, "phase": "Training"}
    return {"metadata": {"name": "x", "namespace": "n", "generation": generation, **meta}, "status": status}


@pytest.mark.parametrize(
    ("event", "body", "last", "expected"),
    [
        ("ADDED", obj(1), None, True),  # a new object: no status yet
        ("MODIFIED", obj(2, observed=1), 1, True),  # a spec edit (suspend, a new dataset, ...)
        ("MODIFIED", obj(2, observed=2), 2, False),  # our own status write coming back
        ("MODIFIED", obj(2, observed=1), 2, False),  # our own write while a round for 2 fails (it retries)
        (None, obj(2, observed=2), 2, True),  # the operator's start-up listing: converge what happened meanwhile
        ("MODIFIED", obj(1, deletionTimestamp="2026-01-01T00:00:00Z"), None, False),  # deletion has its own round
        ("DELETED", obj(1), None, False),
    ],
)
def test_which_events_start_a_round(event: str | None, body: dict[str, Any], last: int | None, expected: bool) -> None:
    assert wants_round(event, body, last) is expected


# ---------------------------------------------------------------------------------------------- the runtime

Script = Callable[[Pass], Requeue | None]


class FakeController:
    """Runs `script` for each round and records what the runtime asked of it."""

    kind = "Fake"

    def __init__(self, script: Script) -> None:
        self.script = script
        self.passes: list[Pass] = []
        self.bodies: list[Mapping[str, Any] | None] = []
        self.reports: list[str] = []
        self.forgotten: list[str] = []

    def round(self, namespace: str, name: str, body: Mapping[str, Any] | None) -> RoundFn:
        def run(p: Pass) -> Requeue | None:
            self.passes.append(p)
            self.bodies.append(body if p.first else None)
            return self.script(p)

        return run

    def report_failure(self, namespace: str, name: str, message: str) -> None:
        self.reports.append(message)

    def forget(self, namespace: str, name: str) -> None:
        self.forgotten.append(name)


def drive(test: Callable[[Runtime], Any], active: Callable[[], bool] | None = None) -> None:
    """Run `test(runtime)` on an event loop with a thread pool; backoff is 1/100 of the real one."""

    async def main() -> None:
        with ThreadPoolExecutor(4) as pool:
            runtime = Runtime(lambda: pool, active=active, delays=lambda n: backoff(n) / 100)
            try:
                await test(runtime)
            finally:
                runtime.close()

    asyncio.run(main())


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    async def poll() -> None:
        while not check():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


async def settle(runtime: Runtime, controller: FakeController, rounds: int) -> None:
    await until(lambda: len(controller.passes) >= rounds)


def test_a_persistent_failure_backs_off_logs_one_traceback_then_marks_the_object(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outcomes: list[Exception | None] = [api_error(403, "exceeded quota")] * 5 + [None]

    def script(p: Pass) -> Requeue | None:
        error = outcomes.pop(0)
        if error is not None:
            raise error
        return None

    controller = FakeController(script)

    async def test(runtime: Runtime) -> None:
        await runtime.reconcile(controller, "ns", "x", apply=True)
        await settle(runtime, controller, 6)
        await asyncio.sleep(0.1)
        assert runtime.pending("Fake", "ns", "x") is None, "success: no retry left"

    with caplog.at_level(logging.INFO, logger="loraplane.operator.runtime"):
        drive(test)
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1, "one traceback per streak of failures"
    assert len(controller.passes) == 6 and all(p.apply for p in controller.passes), "retries keep the apply"
    marks = len(controller.reports)
    assert marks == 5 - FAILURES_BEFORE_CONDITION + 1
    assert "exceeded quota" in controller.reports[0] and "keeps retrying" in controller.reports[0]


def test_a_conflict_is_an_immediate_quiet_round_and_a_persistent_one_becomes_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    always_409 = FakeController(lambda p: (_ for _ in ()).throw(api_error(409)))

    async def test(runtime: Runtime) -> None:
        await runtime.reconcile(always_409, "ns", "x", apply=False)
        await settle(runtime, always_409, QUICK_RETRIES + 2)

    with caplog.at_level(logging.INFO, logger="loraplane.operator.runtime"):
        drive(test)
    quiet = [r for r in caplog.records if "another round at once" in r.getMessage()]
    assert len(quiet) == QUICK_RETRIES and not any(r.exc_info for r in quiet)
    assert [r for r in caplog.records if r.exc_info], "past the quick retries it is a failure, with its traceback"


def test_not_yet_waits_its_own_delay_quietly(caplog: pytest.LogCaptureFixture) -> None:
    answers: list[Exception | None] = [NotYet("waiting for cleanup Job x-cleanup", delay=0.3), None]
    controller = FakeController(lambda p: (_ for _ in ()).throw(e) if (e := answers.pop(0)) else None)

    async def test(runtime: Runtime) -> None:
        await runtime.reconcile(controller, "ns", "x", apply=False)
        due = runtime.pending("Fake", "ns", "x")
        assert due is not None and 0.1 < due <= 0.3, "NotYet's own delay, not the backoff"
        await settle(runtime, controller, 2)

    with caplog.at_level(logging.INFO, logger="loraplane.operator.runtime"):
        drive(test)
    assert not controller.reports and not [r for r in caplog.records if r.exc_info]
    assert any("waiting for cleanup Job" in r.getMessage() for r in caplog.records)


def test_the_earliest_follow_up_wins_and_a_requeue_comes_back() -> None:
    controller = FakeController(lambda p: Requeue(0.5, apply=True) if len(controller.passes) == 1 else None)

    async def test(runtime: Runtime) -> None:
        runtime.later(controller, "ns", "x", 5.0, apply=False)
        runtime.later(controller, "ns", "x", 0.05, apply=False)  # sooner: replaces it
        runtime.later(controller, "ns", "x", 1.0, apply=True)  # later: only its apply request sticks
        due = runtime.pending("Fake", "ns", "x")
        assert due is not None and due <= 0.05
        await settle(runtime, controller, 1)  # the 0.05 s follow-up fired ...
        await until(lambda: runtime.pending("Fake", "ns", "x") is not None)  # ... and its round asked for one
        due = runtime.pending("Fake", "ns", "x")
        assert due is not None and 0 < due <= 0.5, "the round asked for another in 0.5 s"
        await settle(runtime, controller, 2)

    drive(test)
    assert [p.apply for p in controller.passes] == [True, True]


def test_a_standby_replica_drops_its_follow_ups() -> None:
    checks: list[int] = []

    def active() -> bool:
        checks.append(1)
        return False

    controller = FakeController(lambda p: None)

    async def test(runtime: Runtime) -> None:
        runtime.later(controller, "ns", "x", 0.0, apply=True)
        await asyncio.sleep(0.2)
        assert runtime.pending("Fake", "ns", "x") is None

    drive(test, active=active)
    assert checks and controller.passes == []


def test_events_start_rounds_carry_a_create_body_once_and_forget_deleted_objects() -> None:
    controller = FakeController(lambda p: Requeue(60))
    meta: dict[str, Any] = {"namespace": "ns", "name": "x", "generation": 1}
    created: dict[str, Any] = {"metadata": meta, "spec": {"a": 1}}

    async def test(runtime: Runtime) -> None:
        await runtime.event(controller, "ADDED", created)
        status_back = {**created, "status": {"observedGeneration": 1}}
        await runtime.event(controller, "MODIFIED", status_back)  # our own write: no round
        edited = {"metadata": {**meta, "generation": 2}, "status": {"observedGeneration": 1}}
        await runtime.event(controller, "MODIFIED", edited)
        deleting = {"metadata": {**meta, "generation": 2, "deletionTimestamp": "2026-01-01T00:00:00Z"}}
        assert runtime.pending("Fake", "ns", "x") is not None  # the requeue ...
        await runtime.event(controller, "MODIFIED", deleting)  # ... does not delay the deletion round
        assert len(controller.passes) == 3
        controller.script = lambda p: (_ for _ in ()).throw(NotYet("the route goes first", delay=60))
        await runtime.event(controller, "MODIFIED", deleting)
        await runtime.event(controller, "MODIFIED", deleting)  # a deletion round waits already: no other
        assert len(controller.passes) == 4
        await runtime.event(controller, "DELETED", deleting)
        assert runtime.pending("Fake", "ns", "x") is None

    drive(test)
    assert [p.apply for p in controller.passes] == [True, True, False, False]
    assert controller.bodies == [created, None, None, None], "the create event's body serves the first pass only"
    assert controller.forgotten == ["x"]


# ---------------------------------------------------------------------------------------------- peering

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def peer(priority: int, seen_ago: float = 0, lifetime: int = 60) -> dict[str, Any]:
    return {"priority": priority, "lifetime": lifetime, "lastseen": (NOW - timedelta(seconds=seen_ago)).isoformat()}


@pytest.mark.parametrize(
    ("peers", "expected"),
    [
        ({}, False),  # not announced yet: nobody outranks us
        ({"me": peer(5)}, False),
        ({"me": peer(5), "other": peer(3)}, False),
        ({"me": peer(5), "other": peer(9)}, True),  # a live peer outranks us
        ({"me": peer(5), "other": peer(9, seen_ago=120)}, False),  # ... but it is dead
        ({"me": peer(5), "twin": peer(5)}, True),  # the same priority: kopf pauses both
        ({"me": peer(5), "bad": {"priority": 9, "lastseen": "yesterday"}}, False),
    ],
)
def test_a_replica_stands_by_as_kopf_decides(peers: dict[str, Any], expected: bool) -> None:
    assert standing_by(peers, 5, NOW) is expected
