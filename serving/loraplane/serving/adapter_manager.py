"""Make the set of adapters loaded on a vLLM replica equal to the desired set.

Level-triggered: every :meth:`AdapterManager.reconcile` observes the replica (what it lists) and then
loads what is missing and unloads what is extra, so a restarted replica (which lists no adapters) gets
them back on the next call. Before unloading, new requests stop and in-flight ones finish (bounded wait,
`RoutingHooks`). What a load checks first is the `ReplicaApi`'s business.

Two users: the adapter agent, for its own replica (`ReplicaApi` = the agent's pull-verify-fit-load over
vLLM, drained on vLLM's metrics), and the router, only for a bare vLLM replica put by hand without an
agent (`ReplicaApi` = vLLM's admin API, which reads the path itself; drained on the router's in-flight
counts). The router never reads adapter files.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

from loraplane.serving.vllm_client import ReplicaUnavailable, VllmError

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class DesiredAdapter:
    name: str  # lora_name on vLLM (a concrete version, e.g. "medical-v3" or "medical@<sha12>")
    path: str  # source: adapter directory (PEFT dir + result.json) or an oci:// artifact
    sha256: str | None = None  # expected adapter digest (result.json adapter.sha256); None = trust result.json's own


@dataclass(frozen=True)
class ReplicaReport:
    replica: str
    healthy: bool
    loaded: frozenset[str]
    errors: Mapping[str, str]  # adapter name -> message


class ReplicaApi(Protocol):
    """What the manager calls on a replica: vLLM's admin API (`VllmClient`) or the agent's loader over it.
    Failures are `VllmError`s (`ReplicaUnavailable` is retried) or `AdapterRefused`."""

    async def list_models(self, replica: str) -> frozenset[str]: ...
    async def load_adapter(self, replica: str, name: str, path: str) -> bool: ...
    async def unload_adapter(self, replica: str, name: str) -> bool: ...


class RoutingHooks(Protocol):
    """Implemented by the router's state, and by the agent's drain on vLLM's metrics."""

    def observed(self, replica: str, loaded: frozenset[str], healthy: bool) -> None: ...
    def stop_routing(self, replica: str, adapter: str) -> None: ...
    async def wait_idle(self, replica: str, adapter: str, timeout: float) -> bool: ...


class NoRouting:
    """RoutingHooks for standalone use (nothing in front to drain)."""

    def observed(self, replica: str, loaded: frozenset[str], healthy: bool) -> None:
        return None

    def stop_routing(self, replica: str, adapter: str) -> None:
        return None

    async def wait_idle(self, replica: str, adapter: str, timeout: float) -> bool:
        return True


class AdapterRefused(Exception):
    """The replica will not load the adapter: it does not verify (tampered, incomplete, missing) or fit."""


class AdapterManager:
    """Loads and unloads adapters through a :class:`ReplicaApi` until each replica holds exactly the desired set."""

    def __init__(
        self,
        client: ReplicaApi,
        hooks: RoutingHooks,
        *,
        drain_timeout: float = 30.0,
        attempts: int = 4,
        backoff: float = 0.5,
    ) -> None:
        self._client = client
        self._hooks = hooks
        self._drain_timeout = drain_timeout
        self._attempts = max(1, attempts)
        self._backoff = backoff
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def _lock(self, replica: str, name: str) -> asyncio.Lock:
        return self._locks.setdefault((replica, name), asyncio.Lock())

    async def _retry(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """Retry `call` on connection errors and 5xx with exponential backoff; other errors pass through."""
        for attempt in range(1, self._attempts + 1):
            try:
                return await call()
            except ReplicaUnavailable as exc:
                if attempt == self._attempts:
                    raise
                delay = self._backoff * 2 ** (attempt - 1)
                logger.info("%s failed (%s); retry %s/%s in %.1fs", what, exc, attempt, self._attempts - 1, delay)
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def _load(self, replica: str, adapter: DesiredAdapter) -> None:
        async with self._lock(replica, adapter.name):
            await self._retry(
                f"load {adapter.name} on {replica}",
                lambda: self._client.load_adapter(replica, adapter.name, adapter.path),
            )

    async def _unload(self, replica: str, name: str) -> None:
        async with self._lock(replica, name):
            self._hooks.stop_routing(replica, name)
            if not await self._hooks.wait_idle(replica, name, self._drain_timeout):
                logger.warning(
                    "adapter %s on %s still busy after %ss; unloading anyway", name, replica, self._drain_timeout
                )
            await self._retry(f"unload {name} on {replica}", lambda: self._client.unload_adapter(replica, name))

    async def reconcile(self, replica: str, desired: Mapping[str, DesiredAdapter]) -> ReplicaReport:
        """Load the missing and unload the extra adapters on `replica`; report what it holds afterwards."""
        wanted = {adapter.name: adapter for adapter in desired.values()}
        try:
            before = await self._retry(f"observe {replica}", lambda: self._client.list_models(replica))
        except VllmError as exc:
            logger.warning("replica %s unavailable: %s", replica, exc)
            self._hooks.observed(replica, frozenset(), False)
            return ReplicaReport(replica, False, frozenset(), MappingProxyType(dict.fromkeys(wanted, str(exc))))

        errors: dict[str, str] = {}
        loads = [name for name in wanted if name not in before]
        unloads = [name for name in before if name not in wanted]
        outcomes = await asyncio.gather(
            *(self._load(replica, wanted[name]) for name in loads),
            *(self._unload(replica, name) for name in unloads),
            return_exceptions=True,
        )
        for name, outcome in zip([*loads, *unloads], outcomes, strict=True):
            if isinstance(outcome, AdapterRefused | VllmError):
                logger.warning("adapter %s on %s: %s", name, replica, outcome)
                errors[name] = str(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome

        try:
            loaded = await self._retry(f"observe {replica}", lambda: self._client.list_models(replica))
            healthy = True
        except VllmError as exc:
            logger.warning("replica %s unavailable after reconcile: %s", replica, exc)
            loaded, healthy = frozenset(), False
            for name in wanted:
                errors.setdefault(name, str(exc))
        self._hooks.observed(replica, loaded, healthy)
        return ReplicaReport(replica, healthy, loaded, MappingProxyType(errors))


@contextlib.asynccontextmanager
async def in_background(loop: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run a reconcile `loop` as a task for the duration of the block (an app's lifespan), cancelled after."""
    task = asyncio.create_task(loop)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
