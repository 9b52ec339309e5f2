"""The router's side of the agent's API: put a replica's desired versions, read back what it holds."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
from pydantic import ValidationError

from loraplane.serving.adapter_manager import DesiredAdapter, ReplicaReport
from loraplane.serving.agent.protocol import DesiredSet, DesiredVersion, Residency
from loraplane.serving.vllm_client import ProtocolError, admin_call, error_message


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
        status, text = await admin_call(self._session, "PUT", url, body, replica, f"agent {agent}", self._timeout)
        if status != 200:
            message = f"agent {agent} refused the desired set: {status} {error_message(text)}"
            raise ProtocolError(replica, message, status=status)
        try:
            residency = Residency.model_validate_json(text)
        except ValidationError as exc:
            raise ProtocolError(replica, f"agent {agent}: unexpected residency ({exc.error_count()} errors)") from exc
        loaded = frozenset(a.name for a in residency.adapters)
        return ReplicaReport(replica, residency.healthy, loaded, residency.errors)
