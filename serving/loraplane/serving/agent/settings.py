"""Adapter agent settings: typed, read once from the environment (prefix LORAPLANE_AGENT_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LORAPLANE_AGENT_")

    host: str = Field("0.0.0.0", description="Where the router reaches it: the pod IP.")
    port: int = Field(8001, ge=0, le=65535)
    vllm_url: str = Field("http://127.0.0.1:8000", description="This replica's vLLM (same pod).")
    vllm_timeout_s: float = Field(120.0, gt=0, description="Budget of one call to vLLM (a load reads the files).")
    cache_dir: Path = Field(Path("/var/cache/loraplane/adapters"), description="Pulled artifacts; vLLM reads them.")
    cache_limit_bytes: int = Field(2 * 1024**3, ge=1, description="Evict unloaded adapters beyond this.")
    base_model: str | None = Field(None, description="The ModelServer's spec.baseModel.uri: others are refused.")
    max_lora_rank: int = Field(16, ge=1, description="vLLM's --max-lora-rank: larger ranks are refused.")
    reconcile_interval_s: float = Field(5.0, gt=0, description="Reconcile period (a restarted vLLM is refilled).")
    drain_timeout_s: float = Field(30.0, ge=0, description="Wait for vLLM's requests of an adapter before unloading.")
    desired_wait_s: float = Field(
        60.0, ge=0, description="A PUT of a new desired set answers after its round, or after this long."
    )
    plain_http: bool = Field(False, description="Pull over plain HTTP (a registry without TLS).")
    log_format: str = Field("json", description="json or plain")
