"""Operator settings: typed, read once from the environment (prefix LORAPLANE_OPERATOR_)."""

from __future__ import annotations

import random

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from loraplane.api.common import GROUP


class OperatorSettings(BaseSettings):
    """Everything the operator can be configured with."""

    model_config = SettingsConfigDict(env_prefix="LORAPLANE_OPERATOR_")

    namespaces: list[str] = Field(default_factory=list, description="Namespaces to watch; empty = all.")
    peering_name: str = Field("loraplane", description="kopf peering object; replicas sharing it elect one leader.")
    priority: int = Field(
        default_factory=lambda: random.randint(1, 2**30),
        description="Peering priority; the highest live replica acts, the others stand by.",
    )
    liveness_host: str = "0.0.0.0"
    liveness_port: int = 8080
    log_format: str = Field("plain", description="plain or json")
    annotation_prefix: str = GROUP
    finalizer: str = f"{GROUP}/finalizer"
    trainer_image: str = "ghcr.io/loraplane/trainer:latest"

    @property
    def liveness_endpoint(self) -> str:
        return f"http://{self.liveness_host}:{self.liveness_port}/healthz"
