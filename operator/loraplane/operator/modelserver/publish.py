"""Publishing a ModelServer's route, one safe step per round, and how soon the next round should look.

A round publishes what :func:`~loraplane.operator.modelserver.route.next_step` allows now (a new version
is staged at weight 0 until every replica reports it loaded, then traffic shifts) and never waits: while
a staged version loads, the round asks the runtime for another round (`Requeue`) instead of sleeping.

Invariant: what is published follows only from the desired route and what the router reports; the one
thing kept in memory is pacing (since when a version has been loading), and losing it only means the
next rounds come quickly again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from loraplane.api.route import ServerRoute, ServerStatus
from loraplane.operator.modelserver.route import next_step, same_route
from loraplane.operator.router_client import RouterClient

logger = logging.getLogger(__name__)

ROLLOUT_POLL_SECONDS = 0.5  # while a staged version loads: how soon the next round looks again
MAX_STEPS = 2  # publications in one round: stage, and shift at once when the replicas load instantly


@dataclass(frozen=True)
class Published:
    state: ServerStatus | None  # what the router holds afterwards
    pending: tuple[str, ...]  # staged versions still loading on some replica (empty: the route is final)


def publish(router: RouterClient, key: str, desired: ServerRoute) -> Published:
    """Publish the next safe steps towards `desired`, without waiting for any adapter to load."""
    state = router.get(key)
    step = next_step(desired, state)
    for _ in range(MAX_STEPS):
        if state is not None and same_route(step.route, state.route):
            break
        router.put(key, step.route)
        state = router.get(key)
        step = next_step(desired, state)
    if step.pending:
        logger.info("%s: loading %s; traffic shifts once every replica has it", key, ", ".join(step.pending))
    return Published(state, step.pending)


class RolloutPacer:
    """How soon to look again while versions load: every ROLLOUT_POLL_SECONDS for `fast_for` seconds after
    they were staged (settings.rollout_wait_seconds), then at the periodic resync."""

    def __init__(self) -> None:
        self._since: dict[str, tuple[tuple[str, ...], float]] = {}

    def next_round(self, key: str, pending: tuple[str, ...], *, fast_for: float, resync: float) -> float:
        if not pending:
            self._since.pop(key, None)
            return resync
        seen, since = self._since.get(key, ((), 0.0))
        if seen != pending:
            since = time.monotonic()
            self._since[key] = (pending, since)
        return ROLLOUT_POLL_SECONDS if time.monotonic() - since < fast_for else resync

    def forget(self, key: str) -> None:
        self._since.pop(key, None)
