"""Each replica kept holding the versions its server's route names.

A replica with an adapter agent (its route names `agent_port`) manages itself: the router puts its desired
versions to the agent and reads back what it holds; it never loads, unloads or reads adapter files there.
A replica without one (local mode, a claim in the server's own namespace) is managed from here, by the same
:class:`AdapterManager` the agent runs.

One loop per replica, woken by every change of the routing table or of what a replica was seen to hold, and
otherwise every `reconcile_interval_s`; `adapter_manager` runs them (and their HTTP session) for the
duration of a block: the app's lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import aiohttp

from loraplane.serving.adapter_manager import AdapterManager, DesiredAdapter, ReplicaReport, in_background
from loraplane.serving.agent.client import AgentClient
from loraplane.serving.router.settings import RouterSettings
from loraplane.serving.router.state import RouterState
from loraplane.serving.vllm_client import VllmClient, VllmError

logger = logging.getLogger("loraplane.router")


@dataclass(frozen=True)
class Managers:
    direct: AdapterManager  # replicas without an agent
    agents: AgentClient  # replicas with one

    async def reconcile(self, state: RouterState, replica: str, desired: Mapping[str, DesiredAdapter]) -> ReplicaReport:
        agent = state.agent_url(replica)
        if agent is None:
            return await self.direct.reconcile(replica, desired)
        try:
            report = await self.agents.put_desired(replica, agent, desired)
        except VllmError as exc:
            logger.warning("replica %s: %s", replica, exc)
            report = ReplicaReport(replica, False, frozenset(), MappingProxyType(dict.fromkeys(desired, str(exc))))
        state.observed(replica, report.loaded, report.healthy)
        return report


async def reconcile_replica(
    state: RouterState, manager: Managers, replica: str, interval: float, wake: asyncio.Event
) -> None:
    """Keep one replica holding its server's versions: after every change, else every `interval`.

    One loop per replica, so a replica that hangs or restarts never delays the others.
    """
    try:
        while True:
            wake.clear()
            desired = state.desired().get(replica)
            if desired is None:
                return  # no longer part of any route
            try:
                state.reports[replica] = await manager.reconcile(state, replica, desired)
            except Exception:  # keep the loop alive; the next round starts from what the replica reports
                logger.exception("adapter reconcile on %s failed", replica)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=interval)
    finally:
        state.drop_listener(wake)


async def reconcile_forever(state: RouterState, manager: Managers, interval: float) -> None:
    """Start a reconcile loop for every replica named in the table (and again if one ended)."""
    loops: dict[str, asyncio.Task[None]] = {}
    wake = state.listener()
    try:
        while True:
            wake.clear()
            for replica in state.desired():
                if replica not in loops or loops[replica].done():
                    loops[replica] = asyncio.create_task(
                        reconcile_replica(state, manager, replica, interval, state.listener())
                    )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=interval)
    finally:
        for task in loops.values():
            task.cancel()
        await asyncio.gather(*loops.values(), return_exceptions=True)
        state.drop_listener(wake)


@contextlib.asynccontextmanager
async def adapter_manager(state: RouterState, settings: RouterSettings) -> AsyncIterator[None]:
    """The reconcile loops over a pooled aiohttp session to the replicas (or their agents), stopped when the block
    ends."""
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",)) as session:
        manager = Managers(
            AdapterManager(
                VllmClient(session, timeout=settings.admin_timeout_s),
                state,
                drain_timeout=settings.drain_timeout_s,
            ),
            AgentClient(session, timeout=settings.admin_timeout_s),
        )
        async with in_background(reconcile_forever(state, manager, settings.reconcile_interval_s)):
            yield
