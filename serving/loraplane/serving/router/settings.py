"""Router settings: typed, read once from the environment (prefix LORAPLANE_ROUTER_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RouterSettings(BaseSettings):
    """Everything the router can be configured with."""

    model_config = SettingsConfigDict(env_prefix="LORAPLANE_ROUTER_")

    host: str = "0.0.0.0"
    port: int = Field(8000, ge=0, le=65535)
    admin_key: str | None = Field(None, description="Bearer key of the admin API; unset = admin API disabled.")
    api_keys_file: Path | None = Field(
        None,
        description='JSON {"<key>": {"models": ["medical", "*"]}}; unset = no authentication (local mode).',
    )
    routes_file: Path | None = Field(None, description='JSON {"<server>": ServerRoute} loaded at start.')
    reconcile_interval_s: float = Field(5.0, gt=0, description="Adapter reconcile period on every replica.")
    request_timeout_s: float = Field(600.0, gt=0, description="Upstream request budget (504 after).")
    connect_timeout_s: float = Field(5.0, gt=0)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="Larger request bodies get 413.")
    admin_timeout_s: float = Field(
        120.0, gt=0, description="Budget of one load, unload or list call on a replica (a load may pull first)."
    )
    drain_timeout_s: float = Field(30.0, ge=0, description="Wait for in-flight requests before unloading.")
    sticky_header: str = Field("x-session-id", description="Requests with this header stay on one version.")
    retry_after_s: int = Field(2, ge=1, description="Retry-After on 503.")
    log_format: str = Field("json", description="json or plain")
    access_log: bool = Field(True, description="One INFO line per request on the loraplane.router.access logger.")
