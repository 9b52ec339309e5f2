"""API keys: which public models each key may use (tenancy), and the separate admin key."""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from loraplane.serving.router.errors import forbidden, not_found, unauthorized

ALL = "*"
Keys = dict[str, frozenset[str] | None]  # API key -> the public models it may use (None: every model)


@dataclass(frozen=True)
class Caller:
    key: str | None
    models: frozenset[str] | None  # None = every model

    def may_use(self, model: str) -> bool:
        return self.models is None or model in self.models


OPEN = Caller(None, None)


def load_keys(path: Path | None) -> Keys | None:
    """Key -> allowed public models (None = all) from the keys file; None without a file (no authentication)."""
    if path is None:
        return None
    raw = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a JSON object of key -> {{'models': [...]}}")
    keys: Keys = {}
    for key, entry in raw.items():
        models = entry.get("models") if isinstance(entry, dict) else None
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise ValueError(f"{path}: key {key[:4]}…: expected {{'models': [names or '*']}}")
        keys[key] = None if ALL in models else frozenset(models)
    return keys


def bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def caller(headers: Mapping[str, str], keys: Keys | None) -> Caller:
    """Who is calling; RouterError 401 when keys are configured and the request has none or an unknown one."""
    if keys is None:
        return OPEN
    token = bearer(headers)
    if token is None or token not in keys:
        raise unauthorized()
    return Caller(token, keys[token])


def require_admin(headers: Mapping[str, str], admin_key: str | None) -> None:
    """Admin operations need the admin key itself; user keys never get through."""
    if admin_key is None:
        raise not_found("The admin API is disabled (no admin key configured).")
    token = bearer(headers)
    if token is None:
        raise unauthorized("The admin API needs Authorization: Bearer <admin key>.")
    if not hmac.compare_digest(token.encode(), admin_key.encode()):
        raise forbidden("This key may not use the admin API.")
