"""Pure routing decisions: which version of a public model, then which replicas to try, in order."""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping, Sequence

from loraplane.serving.router.table import AdapterVersion, PublicModel


def sticky_point(key: str, model: str) -> float:
    """A stable point in [0, 1) for (session key, model): the same session always lands on the same version."""
    digest = hashlib.sha256(f"{model}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def choose_version(model: PublicModel, point: float) -> AdapterVersion:
    """The version whose cumulative weight band contains `point` (in [0, 1)); weight-0 versions never win."""
    edge = 0.0
    live = [v for v in model.versions if v.weight > 0]
    for version in live:
        edge += version.weight / 100
        if point < edge:
            return version
    return live[-1]


GOLDEN = (5**0.5 - 1) / 2


class SpreadPoints:
    """Points in [0, 1) for requests without a session: a golden-ratio (Weyl) sequence per public model.

    Consecutive points fill [0, 1) evenly, so any run of n requests splits by weight within a few requests
    (about 1 point in 400), where independent random draws miss a 70/30 split by more than 5 points in
    400 requests about 3% of the time. Each model starts at a random offset, so routers do not move in step.
    """

    def __init__(self, rng: Callable[[], float] = random.random) -> None:
        self._rng = rng
        self._next: dict[str, float] = {}

    def __call__(self, model: str) -> float:
        point = self._next.get(model)
        if point is None:
            point = self._rng()
        self._next[model] = (point + GOLDEN) % 1.0
        return point


def pick_point(sticky_key: str | None, model: str, spread: Callable[[str], float]) -> float:
    """Sticky sessions hash to a fixed point; everything else takes the model's next spread point."""
    return sticky_point(sticky_key, model) if sticky_key else spread(model)


def rank_replicas(
    replicas: Sequence[str],
    *,
    usable: Callable[[str], bool],
    outstanding: Mapping[str, int],
    exclude: frozenset[str] = frozenset(),
    rotation: int = 0,
) -> list[str]:
    """Replicas to try, best first: usable ones (healthy, holding the adapter, not draining it) not yet tried,
    fewest outstanding requests first; ties rotate so equal replicas share the load."""
    if not replicas:
        return []
    start = rotation % len(replicas)
    rotated = [*replicas[start:], *replicas[:start]]
    candidates = [r for r in rotated if r not in exclude and usable(r)]
    return sorted(candidates, key=lambda r: outstanding.get(r, 0))
