"""The adapter manager at work for the router: each replica kept holding the versions its server's route names.

One loop per replica, woken by every change of the routing table or of what a replica was seen to hold, and
otherwise every `reconcile_interval_s`; `adapter_manager` runs them (and their HTTP session) for the
duration of a block: the app's lifespan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp

from loraplane.serving.adapter_manager import AdapterManager
from loraplane.serving.router.settings import RouterSettings
from loraplane.serving.router.state import RouterState
from loraplane.serving.vllm_client import VllmClient

logger = logging.getLogger("loraplane.router")


async def reconcile_replica(
    state: RouterState, manager: AdapterManager, replica: str, interval: float, wake: asyncio.Event
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
                state.reports[replica] = await manager.reconcile(replica, desired)
            except Exception:  # keep the loop alive; the next round starts from what the replica reports
                logger.exception("adapter reconcile on %s failed", replica)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=interval)
    finally:
        state.drop_listener(wake)


async def reconcile_forever(state: RouterState, manager: AdapterManager, interval: float) -> None:
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
    """The reconcile loops over a pooled aiohttp session to the replicas' admin API, stopped when the block ends."""
    connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60)
    async with aiohttp.ClientSession(connector=connector, skip_auto_headers=("User-Agent",)) as session:
        manager = AdapterManager(
            VllmClient(session, timeout=settings.admin_timeout_s, admin_url=state.admin_url),
            state,
            drain_timeout=settings.drain_timeout_s,
            verify=settings.verify_adapter_files,
        )
        task = asyncio.create_task(reconcile_forever(state, manager, settings.reconcile_interval_s))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
