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
    trainer_service_account: str = Field(
        "loraplane-trainer", description="ServiceAccount of training pods (may patch its own pod's progress)."
    )
    field_manager: str = Field("loraplane-operator", description="Server-side apply field manager of every child.")
    backoff_limit: int = Field(3, ge=0, description="Job backoffLimit: retries after exit 1 or 15.")
    active_deadline_seconds: int = Field(7 * 86400, ge=1, description="Default Job activeDeadlineSeconds.")
    ttl_seconds_after_finished: int = Field(7 * 86400, ge=0, description="Job TTL after it finishes.")
    termination_grace_seconds: int = Field(
        900, ge=30, description="Grace period after SIGTERM: enough to finish a step and write a checkpoint."
    )
    adapter_storage_size: str = Field("20Gi", description="Size of the adapter-store claim the operator creates.")
    storage_class: str | None = Field(None, description="StorageClass of created claims; empty = cluster default.")
    pod_annotations: dict[str, str] = Field(
        default_factory=dict, description="Extra annotations on training pods (JSON object)."
    )
    max_workers: int = Field(32, ge=1, description="Threads running (synchronous) handlers.")
    metrics_port: int = Field(9090, ge=0, description="Prometheus metrics port; 0 disables.")

    @property
    def liveness_endpoint(self) -> str:
        return f"http://{self.liveness_host}:{self.liveness_port}/healthz"
