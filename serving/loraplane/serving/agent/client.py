"""The router's side of the agent's API: put a replica's desired versions, read back what it holds."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
from pydantic import ValidationError

from loraplane.serving.adapter_manager import DesiredAdapter, ReplicaReport
from loraplane.serving.agent.protocol import DesiredSet, DesiredVersion, Residency
from loraplane.serving.vllm_client import ProtocolError, ReplicaUnavailable


class AgentClient:
    """Calls to replicas' agents on a shared session; failures are `VllmError`s named after the replica."""

    def __init__(self, session: aiohttp.ClientSession, timeout: float) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def put_desired(self, replica: str, agent: str, desired: Mapping[str, DesiredAdapter]) -> ReplicaReport:
        """PUT `desired` to `replica`'s agent at `agent`; the replica as the agent reports it afterwards."""
        body = DesiredSet(
            adapters=[DesiredVersion(name=a.name, source=a.path, sha256=a.sha256) for a in desired.values()]
        ).wire()
        url = agent.rstrip("/") + "/v1/desired"
        try:
            async with self._session.put(url, json=body, timeout=self._timeout) as resp:
                text = await resp.text()
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ReplicaUnavailable(replica, f"agent {agent}: {exc.__class__.__name__}: {exc}") from exc
        if status >= 500:
            raise ReplicaUnavailable(replica, f"agent {agent}: {status} {text[:300]}", status=status)
        if status != 200:
            raise ProtocolError(replica, f"agent {agent} refused the desired set: {status} {text[:300]}", status=status)
        try:
            residency = Residency.model_validate_json(text)
        except ValidationError as exc:
            raise ProtocolError(replica, f"agent {agent}: unexpected residency ({exc.error_count()} errors)") from exc
        loaded = frozenset(a.name for a in residency.adapters)
        return ReplicaReport(replica, residency.healthy, loaded, residency.errors)
