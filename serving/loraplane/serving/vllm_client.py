"""The one module that talks to vLLM's admin HTTP API (models, LoRA load/unload).

Async, on a shared `aiohttp.ClientSession` the caller owns. A replica is its base URL, e.g.
"http://127.0.0.1:8001". vLLM's vocabulary is kept: `lora_name`, `lora_path`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import aiohttp

logger = logging.getLogger(__name__)

ALREADY_LOADED = "has already been loaded"
NOT_FOUND = "cannot be found"


class VllmError(Exception):
    """A vLLM admin call failed."""

    def __init__(self, replica: str, message: str, *, status: int | None = None) -> None:
        super().__init__(f"{replica}: {message}")
        self.replica = replica
        self.status = status
        self.detail = message


class ReplicaUnavailable(VllmError):
    """Connection refused/reset, timeout, or a 5xx: worth retrying (possibly on another replica)."""


class AdapterRejected(VllmError):
    """vLLM refused the adapter (4xx: bad path, incompatible rank or modules, name clash): retrying will not help."""


class ProtocolError(VllmError):
    """vLLM answered something this client does not understand (e.g. a 404 on the admin route when
    VLLM_ALLOW_RUNTIME_LORA_UPDATING is off)."""


@dataclass(frozen=True)
class ServedModels:
    """What /v1/models reports: the base model(s) and the adapters (entries whose parent is a base)."""

    bases: frozenset[str]
    adapters: dict[str, str]  # lora_name -> lora_path (the card's `root`)


def error_message(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:500] or "(empty body)"
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(data.get("detail"), str):
            return str(data["detail"])
        if isinstance(data.get("message"), str):
            return str(data["message"])
    return body.strip()[:500]


async def admin_call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    body: dict[str, Any] | None,
    replica: str,
    what: str,
    timeout: aiohttp.ClientTimeout,
) -> tuple[int, str]:
    """One admin call about `replica` (to its vLLM or its agent): (status, body) below 500; no answer or a 5xx
    is `ReplicaUnavailable` (worth retrying), described as `what`."""
    try:
        async with session.request(method, url, json=body, timeout=timeout) as resp:
            text = await resp.text()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise ReplicaUnavailable(replica, f"{what}: {exc.__class__.__name__}: {exc}") from exc
    if status >= 500:
        raise ReplicaUnavailable(replica, f"{what}: {status} {error_message(text)}", status=status)
    return status, text


class VllmClient:
    """vLLM admin API on a shared session; every failure becomes a :class:`VllmError` subclass."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        timeout: float = 60.0,
    ) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    async def _request(
        self, method: str, replica: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[int, str]:
        url = replica.rstrip("/") + path
        return await admin_call(self._session, method, url, body, replica, f"{method} {path}", self._timeout)

    async def served_models(self, replica: str) -> ServedModels:
        status, text = await self._request("GET", replica, "/v1/models")
        if status != 200:
            raise ProtocolError(replica, f"GET /v1/models: {status} {error_message(text)}", status=status)
        try:
            cards = json.loads(text)["data"]
            bases = frozenset(str(c["id"]) for c in cards if not c.get("parent"))
            adapters = {str(c["id"]): str(c.get("root") or "") for c in cards if c.get("parent") in bases}
        except (ValueError, KeyError, TypeError) as exc:
            raise ProtocolError(replica, f"GET /v1/models: unexpected body ({exc.__class__.__name__})") from exc
        return ServedModels(bases=bases, adapters=adapters)

    async def list_models(self, replica: str) -> frozenset[str]:
        """Names of the adapters loaded on `replica` (the /v1/models entries whose parent is the base)."""
        return frozenset((await self.served_models(replica)).adapters)

    async def load_adapter(self, replica: str, name: str, path: str) -> bool:
        """POST /v1/load_lora_adapter; True if it loaded now, False if it was already loaded."""
        status, text = await self._request(
            "POST", replica, "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path}
        )
        if status == 200:
            logger.info("loaded adapter %s from %s on %s", name, path, replica)
            return True
        message = error_message(text)
        if status == 400 and ALREADY_LOADED in message:
            return False
        if status == 404 and "lora" not in message.lower():
            raise ProtocolError(
                replica, f"no /v1/load_lora_adapter route (is VLLM_ALLOW_RUNTIME_LORA_UPDATING=True?): {message}"
            )
        raise AdapterRejected(replica, f"load {name} from {path}: {status} {message}", status=status)

    async def unload_adapter(self, replica: str, name: str) -> bool:
        """POST /v1/unload_lora_adapter; True if it was unloaded now, False if it was not loaded."""
        status, text = await self._request("POST", replica, "/v1/unload_lora_adapter", {"lora_name": name})
        if status == 200:
            logger.info("unloaded adapter %s on %s", name, replica)
            return True
        message = error_message(text)
        if status == 404 and NOT_FOUND in message:
            return False
        if status == 404:
            raise ProtocolError(
                replica, f"no /v1/unload_lora_adapter route (is VLLM_ALLOW_RUNTIME_LORA_UPDATING=True?): {message}"
            )
        raise AdapterRejected(replica, f"unload {name}: {status} {message}", status=status)
