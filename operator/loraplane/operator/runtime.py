"""The runtime both controllers share: how a trigger becomes reconcile rounds, and what follows a round.

kopf delivers watch events to plain handlers (:mod:`loraplane.operator.handlers`); each one asks this
runtime for a round of one object, now (`reconcile`) or after a delay (`later`). Invariants:

* **One round at a time per object.** Triggers that arrive while a round runs become one more round
  (:class:`Coalescer`); a request to apply children sticks until a round has applied them.
* **At most one follow-up pending per object, the earliest asked for.** A debounced child event, a
  requeue (the round said "not yet, again in N s": a rollout waiting for adapters to load, the periodic
  resync), a retry: whichever is due first runs, and that round asks for its own follow-up.
* **Nothing but pacing lives in memory.** Every round reads what it needs from the API server, so
  merging, delaying or dropping triggers never loses a change, and a restart starts from a full listing.
* **Blocking work runs in kopf's thread pool** with kopf's context (``kopf.event()`` finds its queue
  through context variables), never on the event loop.
* **Errors are classified** (:func:`classify`): a conflict or a gone object (409/404/410) → an immediate,
  quiet re-round (at most QUICK_RETRIES in a row); :class:`NotYet` → its own delay, quietly; anything
  else → backoff (1 s doubling to RETRY_MAX_S, for as long as it fails), one traceback per streak of
  failures, and from the FAILURES_BEFORE_CONDITION-th failure on the controller's `report_failure`
  (Degraded=True, reason ReconcileFailed, the error in its message), which the next good round clears.
* **A standby replica does not act.** kopf stops delivering events to a replica that peering paused; the
  follow-ups this runtime schedules ask `active()` first and are dropped while it says no (on resume kopf
  lists every object again, and those events bring the rounds back).

kopf keeps no state on our objects: no diffbase or progress annotations, no finalizer of its own (its
timers and daemons would add one). Deletion work is the controllers' own finalizer, done in a round.
"""

from __future__ import annotations

import asyncio
import contextvars
import enum
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Hashable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from loraplane.operator import kube, metrics

logger = logging.getLogger(__name__)

T = TypeVar("T")
Key = tuple[str, str, str]  # kind, namespace, name

RETRY_MAX_S = 60.0
QUICK_RETRIES = 3  # immediate re-rounds after 409/404 before such an error counts as a failure
FAILURES_BEFORE_CONDITION = 3  # failures in a row before the object shows ReconcileFailed (~3 s of backoff)
ACTIVE_CHECK_S = 5.0  # how long one answer of `active()` is trusted


# ---------------------------------------------------------------------------------------------- what a round is


@dataclass(frozen=True)
class Pass:
    """One pass of the round loop for one object."""

    apply: bool  # apply the children (some trigger of this pass, or of a coalesced one, asked for it)
    first: bool  # the first pass of this trigger: data the trigger carried is still the newest


@dataclass(frozen=True)
class Requeue:
    """A round's request for another round of the same object after `after` seconds."""

    after: float
    apply: bool = False


class NotYet(Exception):
    """The object waits on something outside this operator (a cleanup Job, the router): again after `delay` s."""

    def __init__(self, message: str, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


RoundFn = Callable[[Pass], Requeue | None]


class Controller(Protocol):
    """What the runtime needs from a controller (see finetunejob.reconcile and modelserver.reconcile)."""

    kind: str

    def round(self, namespace: str, name: str, body: Mapping[str, Any] | None) -> RoundFn:
        """The round of one object (called on the event loop; the function it returns runs in a thread).

        `body`: the object as the trigger carried it, usable on the first pass only (or None).
        """
        ...

    def report_failure(self, namespace: str, name: str, message: str) -> None:
        """Show a failing reconcile on the object: Degraded=True, reason ReconcileFailed (runs in a thread)."""
        ...

    def forget(self, namespace: str, name: str) -> None:
        """The object is gone: drop what the controller keeps about it in memory (metrics, pacing)."""
        ...


# ---------------------------------------------------------------------------------------------- decisions (pure)


class Failure(enum.Enum):
    RETRY_NOW = "retry now"  # a conflict or a gone object: the next round reads fresh and sees why
    NOT_YET = "not yet"  # waiting is expected: its own delay, no alarm
    FAILED = "failed"  # anything else: backoff, one traceback, then ReconcileFailed on the object


def classify(exc: BaseException) -> Failure:
    """How the retry loop treats an error a round raised."""
    if isinstance(exc, NotYet):
        return Failure.NOT_YET
    if kube.is_conflict_or_gone(exc):
        return Failure.RETRY_NOW
    return Failure.FAILED


def wants_round(event_type: str | None, body: Mapping[str, Any], last_generation: int | None) -> bool:
    """Whether a watch event of a live FineTuneJob or ModelServer asks for a round that applies the children.

    Yes for the operator's start-up listing (type None: converge whatever happened while it was down)
    and for a spec generation that neither the status has observed nor this process has started a round
    for (`last_generation`): a new object, or an edit. Every other event is a write of ours coming back
    (status, finalizer, a ReconcileFailed mark) or a metadata change: nothing to do, and a failing round
    is retried by the runtime, not by the events its own writes cause.
    """
    meta = body.get("metadata") or {}
    if event_type == "DELETED" or meta.get("deletionTimestamp"):
        return False
    generation = meta.get("generation")
    unobserved = (body.get("status") or {}).get("observedGeneration") != generation
    return event_type is None or (unobserved and generation != last_generation)


def backoff(failures: int) -> float:
    """Delay before the retry after the `failures`-th failure in a row: 1 s, 2 s, 4 s ... RETRY_MAX_S."""
    return float(min(2.0 ** max(failures - 1, 0), RETRY_MAX_S))


def failure_message(error: str) -> str:
    """The ReconcileFailed message a user reads in `kubectl describe`.

    The same for every failure with the same error: the mark is written once, not once per retry (each
    write would come back as a watch event)."""
    return f"the operator cannot reconcile this object and keeps retrying: {error}"


# ---------------------------------------------------------------------------------------------- coalescing


@dataclass
class _Slot:
    busy: bool = False
    again: bool = False
    apply: bool = False
    forgotten: bool = False


class Coalescer(Generic[T]):
    """Per-key coalescing of rounds, thread-safe: one round at a time, triggers meanwhile become one more."""

    def __init__(self) -> None:
        self._slots: dict[Hashable, _Slot] = {}
        self._guard = threading.Lock()

    def run(self, key: Hashable, round_: Callable[[Pass], T], *, apply: bool) -> tuple[bool, T | None]:
        """Run `round_` until no trigger came in meanwhile: (True, the last round's result), or (False, None)
        when coalesced into a round that runs already (it will run once more and see this trigger's change).
        A round that raises frees the key and keeps its apply request for the next round."""
        with self._guard:
            slot = self._slots.setdefault(key, _Slot())
            slot.apply = slot.apply or apply
            if slot.busy:
                slot.again = True
                return False, None
            slot.busy = True
        first = True
        try:
            while True:
                with self._guard:
                    apply_now, slot.apply, slot.again = slot.apply, False, False
                try:
                    result = round_(Pass(apply=apply_now, first=first))
                except BaseException:
                    with self._guard:
                        slot.apply = slot.apply or apply_now
                    raise
                first = False
                with self._guard:
                    if not slot.again:
                        return True, result
        finally:
            with self._guard:
                slot.busy = False
                if slot.forgotten and self._slots.get(key) is slot:
                    del self._slots[key]

    def forget(self, key: Hashable) -> None:
        """Drop the key's slot (once its running round, if any, has ended)."""
        with self._guard:
            slot = self._slots.get(key)
            if slot is not None and slot.busy:
                slot.forgotten = True
            else:
                self._slots.pop(key, None)


# ---------------------------------------------------------------------------------------------- the runtime


@dataclass
class _Due:
    when: float  # event-loop time
    apply: bool
    handle: asyncio.TimerHandle


@dataclass
class _Streak:
    failures: int = 0  # FAILED in a row
    quick: int = 0  # RETRY_NOW since the last good round (past QUICK_RETRIES they count as failures)


class Runtime:
    """Rounds, follow-ups and retries of every object of both controllers (one per operator process)."""

    def __init__(
        self,
        executor: Callable[[], Executor],
        active: Callable[[], bool] | None = None,
        delays: Callable[[int], float] = backoff,
    ) -> None:
        self._executor = executor  # kopf's thread pool (looked up per call: kopf may replace it)
        self._active = active  # None: always acting (no peering)
        self._backoff = delays
        self._rounds: Coalescer[Requeue | None] = Coalescer()
        self._due: dict[Key, _Due] = {}
        self._streaks: dict[Key, _Streak] = {}
        self._generations: dict[Key, int | None] = {}  # the last spec generation a round was started for
        self._tasks: set[asyncio.Task[None]] = set()
        self._active_until = 0.0
        self._active_lock = asyncio.Lock()

    async def in_executor(self, fn: Callable[[], T]) -> T:
        """Run blocking work in kopf's threads, with kopf's context (kopf.event() finds its queue there)."""
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self._executor(), context.run, fn)

    async def event(self, controller: Controller, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A watch event of one of the controller's own objects: the one entry point for both kinds.

        DELETED → forget it; being deleted → a round (it finalizes), unless one waits or retries already; a
        spec no round has seen → a round that applies the children (a create event's body serves its
        first pass: only we write the status, so nothing newer exists yet); anything else → nothing.
        """
        meta = body.get("metadata") or {}
        namespace, name = meta.get("namespace"), meta.get("name")
        if not namespace or not name:
            return
        key = (controller.kind, namespace, name)
        if event_type == "DELETED":
            self.forget(controller, namespace, name)
        elif meta.get("deletionTimestamp"):
            if not (key in self._streaks and key in self._due):  # else a round waits or retries already
                await self.reconcile(controller, namespace, name, apply=False)
        elif wants_round(event_type, body, self._generations.get(key)):
            self._generations[key] = meta.get("generation")
            carried = body if event_type == "ADDED" and not body.get("status") else None
            await self.reconcile(controller, namespace, name, apply=True, body=carried)

    async def reconcile(
        self, controller: Controller, namespace: str, name: str, *, apply: bool, body: Mapping[str, Any] | None = None
    ) -> None:
        """A round of the object now (or one more round of a running one), then whatever it asks for."""
        key = (controller.kind, namespace, name)
        round_ = controller.round(namespace, name, body)

        def timed(p: Pass) -> Requeue | None:
            started = time.monotonic()
            try:
                return round_(p)
            finally:
                metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)

        try:
            ran, requeue = await self.in_executor(lambda: self._rounds.run(key, timed, apply=apply))
        except Exception as exc:
            await self._failed(controller, key, exc, apply)
            return
        if not ran:
            return  # the round that runs reports for this trigger too
        self._streaks.pop(key, None)
        if requeue is not None:
            self.later(controller, namespace, name, requeue.after, apply=requeue.apply)

    def later(self, controller: Controller, namespace: str, name: str, delay: float, *, apply: bool) -> None:
        """A round of the object after `delay` seconds, unless one is due sooner (then that one applies, if asked)."""
        key = (controller.kind, namespace, name)
        loop = asyncio.get_running_loop()
        when = loop.time() + max(delay, 0.0)
        due = self._due.get(key)
        if due is not None and due.when <= when:
            due.apply = due.apply or apply
            return
        if due is not None:
            due.handle.cancel()
            apply = apply or due.apply
        handle = loop.call_at(when, self._fire, controller, key)
        self._due[key] = _Due(when, apply, handle)

    def forget(self, controller: Controller, namespace: str, name: str) -> None:
        """The object is gone: no follow-up, no retry, no memory of it."""
        key = (controller.kind, namespace, name)
        due = self._due.pop(key, None)
        if due is not None:
            due.handle.cancel()
        self._streaks.pop(key, None)
        self._generations.pop(key, None)
        self._rounds.forget(key)
        controller.forget(namespace, name)

    def close(self) -> None:
        """Cancel every pending follow-up and running follow-up task (the operator is stopping)."""
        for due in self._due.values():
            due.handle.cancel()
        self._due.clear()
        for task in list(self._tasks):
            task.cancel()

    def pending(self, kind: str, namespace: str, name: str) -> float | None:
        """Seconds until the object's pending follow-up (None: none is pending). For tests and logs."""
        due = self._due.get((kind, namespace, name))
        return None if due is None else due.when - asyncio.get_running_loop().time()

    # ------------------------------------------------------------------------------------------ internals

    def _fire(self, controller: Controller, key: Key) -> None:
        due = self._due.pop(key, None)
        if due is None:
            return
        self._spawn(self._follow_up(controller, key, due.apply))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _follow_up(self, controller: Controller, key: Key, apply: bool) -> None:
        if not await self._acting():
            logger.debug("standing by: dropped the follow-up round of %s %s/%s", *key)
            return
        await self.reconcile(controller, key[1], key[2], apply=apply)

    async def _acting(self) -> bool:
        """Whether this replica acts (kopf peering); one answer is trusted for ACTIVE_CHECK_S."""
        if self._active is None:
            return True
        async with self._active_lock:
            loop = asyncio.get_running_loop()
            if loop.time() < self._active_until:
                return True
            try:
                acting = await self.in_executor(self._active)
            except Exception as exc:  # cannot tell: act (kopf's own pause still holds back the events)
                logger.warning("cannot read the peering state (%s); acting", kube.error_text(exc))
                acting = True
            if acting:
                self._active_until = loop.time() + ACTIVE_CHECK_S
            return acting

    async def _failed(self, controller: Controller, key: Key, exc: Exception, apply: bool) -> None:
        kind, namespace, name = key
        what = f"{kind} {namespace}/{name}"
        failure = classify(exc)
        streak = self._streaks.setdefault(key, _Streak())
        if failure is Failure.RETRY_NOW and streak.quick < QUICK_RETRIES:
            streak.quick += 1
            logger.info("%s: %s; another round at once", what, kube.error_text(exc))
            self.later(controller, namespace, name, 0.0, apply=apply)
            return
        if failure is Failure.NOT_YET and isinstance(exc, NotYet):
            logger.info("%s: %s", what, exc)
            self.later(controller, namespace, name, exc.delay, apply=apply)
            return
        streak.failures += 1
        delay = self._backoff(streak.failures)
        metrics.RECONCILE_ERRORS.labels(kind=kind).inc()
        error = kube.error_text(exc)
        if streak.failures == 1:
            logger.error("%s: reconcile failed; retrying in %.0f s", what, delay, exc_info=exc)
        else:
            logger.warning("%s: reconcile failed again (%d in a row): %s", what, streak.failures, error)
        if streak.failures >= FAILURES_BEFORE_CONDITION:
            message = failure_message(error)
            try:
                await self.in_executor(lambda: controller.report_failure(namespace, name, message))
            except Exception as report_exc:
                logger.warning("%s: cannot report the failure: %s", what, kube.error_text(report_exc))
        self.later(controller, namespace, name, delay, apply=apply)
