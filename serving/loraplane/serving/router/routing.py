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


def pick_point(sticky_key: str | None, model: str, rng: Callable[[], float] = random.random) -> float:
    return sticky_point(sticky_key, model) if sticky_key else rng()


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
