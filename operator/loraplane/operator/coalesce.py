"""Per-object coalescing of reconcile triggers, shared by the FineTuneJob and ModelServer controllers.

Many triggers can arrive for one object at once (its own change, its children's events, the periodic
resync). One round runs at a time per object; a trigger that arrives while a round runs only asks for
one more round (re-reading everything) and returns at once. Nothing is lost: every round starts from
what the API server holds. `apply` requests are sticky: a round asked to apply children applies them
even when the trigger that asked was coalesced into the next round.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass
class _Slot:
    busy: bool = False
    again: bool = False
    apply: bool = False


class Coalescer(Generic[T]):
    def __init__(self) -> None:
        self._slots: dict[Hashable, _Slot] = {}
        self._guard = threading.Lock()

    def run(self, key: Hashable, round_: Callable[[bool], T], *, apply: bool) -> T | None:
        """Run `round_(apply)` until no trigger came in meanwhile; None when coalesced into a running one."""
        with self._guard:
            slot = self._slots.setdefault(key, _Slot())
            slot.apply = slot.apply or apply
            if slot.busy:
                slot.again = True
                return None
            slot.busy = True
        try:
            while True:
                with self._guard:
                    apply_now, slot.apply, slot.again = slot.apply, False, False
                result = round_(apply_now)
                with self._guard:
                    if not slot.again:
                        slot.busy = False
                        return result
        except BaseException:
            with self._guard:
                slot.busy = False
            raise

    def forget(self, key: Hashable, *, wait: float = 0.0) -> None:
        """Drop the object's slot, first waiting (at most `wait` seconds) for a running round to end."""
        deadline = time.monotonic() + wait
        while True:
            with self._guard:
                slot = self._slots.get(key)
                if slot is None or not slot.busy or time.monotonic() >= deadline:
                    self._slots.pop(key, None)
                    return
            time.sleep(0.05)
