"""The replica's adapter cache: pulled, verified artifacts under one directory, bounded in bytes.

One entry per version digest (`<root>/<digest hex>/`: an OCI manifest digest, or the adapter sha256 an s3://
version is pinned by), so two names of the same artifact share it. An entry
that a loaded adapter uses is pinned; the others are evicted least recently used first when a pull needs
room. When the entries in use alone fill the cache, the pull is refused with :class:`CacheFull` (the load
fails, the router reports it, and the adapters already loaded keep serving). Entries found on disk at start
(an agent restart with the emptyDir kept) are re-verified before they count.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from loraplane.api.artifact import verify
from loraplane.api.result import TrainingResult

logger = logging.getLogger("loraplane.agent")

Fetch = Callable[[Path], TrainingResult]  # pull one version into this (new) directory, verified; its result.json


class CacheFull(Exception):
    """No room for the artifact: the entries in use fill the cache."""


@dataclass
class Entry:
    digest: str
    path: Path
    size: int
    result: TrainingResult
    last_used: float = field(default_factory=time.monotonic)
    users: set[str] = field(default_factory=set)  # lora_names loaded from this entry


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class AdapterCache:
    """Thread-safe; `pull` blocks (call it in a worker thread), one pull per digest at a time."""

    def __init__(self, root: Path, limit_bytes: int) -> None:
        self.root = root
        self.limit = limit_bytes
        self._entries: dict[str, Entry] = {}
        self._lock = threading.Lock()
        self._pulling: dict[str, threading.Lock] = {}
        self.evictions = 0
        root.mkdir(parents=True, exist_ok=True)
        self._adopt()

    def _adopt(self) -> None:
        """Keep what an earlier run of the agent left, if it still verifies; drop the rest."""
        for path in sorted(self.root.iterdir()):
            if path.name.startswith("."):
                shutil.rmtree(path, ignore_errors=True)  # a staging dir of an interrupted pull
                continue
            result = TrainingResult.read(path)
            if result is None or verify(path):
                logger.warning("cache: dropping %s (does not verify)", path.name)
                shutil.rmtree(path, ignore_errors=True)
                continue
            digest = f"sha256:{path.name}"
            self._entries[digest] = Entry(digest, path, _size(path), result)

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(e.size for e in self._entries.values())

    def entries(self) -> list[Entry]:
        with self._lock:
            return sorted(self._entries.values(), key=lambda e: e.last_used)

    def get(self, digest: str, fetch: Fetch) -> tuple[Entry, bool]:
        """The entry of the version `digest` (`sha256:<hex>`), fetched first when missing; True when fetched now."""
        with self._lock:
            gate = self._pulling.setdefault(digest, threading.Lock())
        with gate:
            with self._lock:
                entry = self._entries.get(digest)
                if entry is not None:
                    entry.last_used = time.monotonic()
                    return entry, False
            dest = self.root / digest.removeprefix("sha256:")
            result = fetch(dest)
            size = _size(dest)
            with self._lock:
                try:
                    self._make_room(size)
                except CacheFull:
                    shutil.rmtree(dest, ignore_errors=True)
                    raise
                entry = self._entries[digest] = Entry(digest, dest, size, result)
                return entry, True

    def _make_room(self, size: int) -> None:
        """Evict unused entries, least recently used first, until `size` more bytes fit (lock held)."""
        used = sum(e.size for e in self._entries.values())
        for entry in sorted(self._entries.values(), key=lambda e: e.last_used):
            if used + size <= self.limit:
                break
            if entry.users:
                continue
            logger.info("cache: evicting %s (%d bytes, unused)", entry.digest[:19], entry.size)
            shutil.rmtree(entry.path, ignore_errors=True)
            del self._entries[entry.digest]
            used -= entry.size
            self.evictions += 1
        if used + size > self.limit:
            raise CacheFull(
                f"the adapter cache is full: {used} bytes in use by loaded adapters + {size} new > limit {self.limit}"
            )

    def use(self, digest: str, name: str) -> None:
        with self._lock:
            if digest in self._entries:
                self._entries[digest].users.add(name)
                self._entries[digest].last_used = time.monotonic()

    def release(self, name: str) -> None:
        """`name` was unloaded: its entry may be evicted once no other name uses it."""
        with self._lock:
            for entry in self._entries.values():
                if name in entry.users:
                    entry.users.discard(name)
                    entry.last_used = time.monotonic()

    def forget_users(self, loaded: set[str]) -> None:
        """Keep only the users vLLM reports loaded (after a vLLM restart nothing is)."""
        with self._lock:
            for entry in self._entries.values():
                entry.users &= loaded
