"""Drain from vLLM's own view: an adapter is busy while vLLM's scheduler runs or queues a request for it.

vLLM exports that as `vllm:lora_requests_info`, a gauge whose labels `running_lora_adapters` and
`waiting_lora_adapters` list adapter names (comma-separated) and whose value is the time it was set; the
sample set last (the largest value) is the current state, and vLLM sets one after the last request of a
round finishes. Requests from any client count (the router, an endpoint picker, a direct caller), which the
router's own in-flight counts could not see.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

logger = logging.getLogger("loraplane.agent")

LORA_INFO = "vllm:lora_requests_info"
POLL_S = 0.05


def busy_adapters(metrics: str) -> frozenset[str]:
    """The adapters vLLM runs or queues requests for, from its /metrics text (none when it reports none)."""
    latest: tuple[float, frozenset[str]] | None = None
    for family in text_string_to_metric_families(metrics):
        if family.name != LORA_INFO:
            continue
        for sample in family.samples:
            labels = sample.labels
            names = {
                name
                for key in ("running_lora_adapters", "waiting_lora_adapters")
                for name in labels.get(key, "").split(",")
                if name
            }
            if latest is None or sample.value > latest[0]:
                latest = (sample.value, frozenset(names))
    return latest[1] if latest else frozenset()


class VllmDrain:
    """The adapter manager's RoutingHooks inside the agent: routing is the router's (it stops naming a version
    before the agent is told to drop it); waiting is done on vLLM's metrics."""

    def __init__(self, vllm_url: str, session: aiohttp.ClientSession) -> None:
        self._metrics_url = vllm_url.rstrip("/") + "/metrics"
        self._session = session
        self.healthy = False

    def observed(self, replica: str, loaded: frozenset[str], healthy: bool) -> None:
        self.healthy = healthy

    def stop_routing(self, replica: str, adapter: str) -> None:
        return None

    async def busy(self) -> frozenset[str]:
        try:
            async with self._session.get(self._metrics_url) as resp:
                return busy_adapters(await resp.text()) if resp.status == 200 else frozenset()
        except (aiohttp.ClientError, TimeoutError) as exc:  # vLLM gone: nothing runs on it
            logger.info("drain: vLLM metrics unavailable (%s); nothing to wait for", exc)
            return frozenset()

    async def wait_idle(self, replica: str, adapter: str, timeout: float) -> bool:
        started = time.monotonic()
        deadline = started + timeout
        waited = False
        while adapter in await self.busy():
            if not waited:
                logger.info("drain: %s has requests in vLLM; waiting up to %gs before unloading", adapter, timeout)
                waited = True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_S)
        if waited:
            logger.info("drain: %s idle in vLLM after %.2fs", adapter, time.monotonic() - started)
        return True
