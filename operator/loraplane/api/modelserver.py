"""`ModelServer` (short name `ms`): a vLLM deployment of one base model and the adapters it serves."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from loraplane.api.common import (
    CLAIM_PATTERN,
    DNS_LABEL_PATTERN,
    HUB_REPO_PATTERN,
    SAFE_PATH_HELP,
    SAFE_PATH_PATTERN,
    Conditions,
    CrdInfo,
    K8sModel,
    ModelSource,
    PodResources,
    PrinterColumn,
    Quantity,
    cel,
)
from loraplane.api.oci import OCI_PINNED_URI_HELP, OCI_PINNED_URI_PATTERN, login_secret_field
from loraplane.api.s3 import S3_PINNED_URI_HELP, S3_PINNED_URI_PATTERN, S3Spec

PUBLIC_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9._]*[a-z0-9])?$"
ADAPTER_URI_PATTERN = (
    rf"^(pvc://{CLAIM_PATTERN}/{SAFE_PATH_PATTERN}|file:///{SAFE_PATH_PATTERN}|(hf|modelscope)://{HUB_REPO_PATTERN})$"
    rf"|{OCI_PINNED_URI_PATTERN}|{S3_PINNED_URI_PATTERN}"
)


class LabelSelector(K8sModel):
    """Select FineTuneJobs by label."""

    match_labels: Annotated[
        dict[str, str], Field(min_length=1, max_length=16, description="Labels the FineTuneJob must carry.")
    ]


class AdapterSource(K8sModel):
    """Where one version of an adapter comes from; exactly one of fineTuneJob, uri or selector."""

    fine_tune_job: Annotated[
        str | None,
        Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="A named FineTuneJob (pins that version)."),
    ] = None
    uri: Annotated[
        str | None,
        Field(
            pattern=ADAPTER_URI_PATTERN,
            max_length=1024,
            description="An adapter artifact (PEFT directory with result.json): pvc://CLAIM/PATH, "
            "file:///PATH, hf://ORG/NAME[@REVISION], modelscope://ORG/NAME[@REVISION] or "
            + OCI_PINNED_URI_HELP
            + ", "
            + S3_PINNED_URI_HELP
            + "; "
            + SAFE_PATH_HELP
            + ".",
        ),
    ] = None
    selector: Annotated[
        LabelSelector | None,
        Field(description="The newest FineTuneJob with these labels that succeeded and passed its evaluation gate."),
    ] = None
    namespace: Annotated[
        str | None,
        Field(
            pattern=DNS_LABEL_PATTERN,
            max_length=63,
            description="Namespace of the FineTuneJob; default the ModelServer's own "
            "(others must be allowed in spec.allowedNamespaces).",
        ),
    ] = None


SOURCE_RULE = cel(
    "(has(self.fineTuneJob) ? 1 : 0) + (has(self.uri) ? 1 : 0) + (has(self.selector) ? 1 : 0) == 1",
    "set exactly one of fineTuneJob, uri or selector",
)


class Canary(K8sModel):
    """A second version that receives a share of the traffic."""

    source: Annotated[
        AdapterSource,
        Field(description="The canary version.", json_schema_extra={"x-kubernetes-validations": [SOURCE_RULE]}),
    ]
    weight: Annotated[int, Field(ge=0, le=100, description="Percent of requests sent to the canary (0-100).")]


class ServedAdapter(K8sModel):
    """One public adapter name and the version(s) behind it."""

    name: Annotated[
        str,
        Field(
            pattern=PUBLIC_NAME_PATTERN,
            max_length=63,
            description="Stable public model name clients ask for, e.g. medical.",
        ),
    ]
    source: Annotated[
        AdapterSource,
        Field(description="The stable version.", json_schema_extra={"x-kubernetes-validations": [SOURCE_RULE]}),
    ]
    canary: Annotated[Canary | None, Field(description="Optional canary version and its traffic weight.")] = None


class VllmSpec(K8sModel):
    """vLLM server settings."""

    image: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=512,
            description="vLLM OpenAI-server image; unset = the operator's default (its setting vllm_image: "
            "vllm/vllm-openai on GPU clusters, the vllm-cpu image on CPU ones).",
        ),
    ] = None
    max_loras: Annotated[
        int, Field(ge=1, le=256, description="Adapters resident on the GPU at once (--max-loras).")
    ] = 4
    max_lora_rank: Annotated[
        Literal[8, 16, 32, 64, 128, 256],
        Field(description="Largest adapter rank the server accepts (--max-lora-rank)."),
    ] = 16
    max_cpu_loras: Annotated[
        int | None,
        Field(
            ge=1,
            le=1024,
            description="Adapters cached in host memory (--max-cpu-loras); default max(maxLoras, adapters).",
        ),
    ] = None
    max_model_len: Annotated[int | None, Field(ge=16, le=1048576, description="Context length (--max-model-len).")] = (
        None
    )
    dtype: Annotated[
        Literal["auto", "bfloat16", "float16", "float32"], Field(description="Weights dtype (--dtype).")
    ] = "auto"
    gpu_memory_utilization: Annotated[
        float,
        Field(gt=0, le=1, description="Share of accelerator memory vLLM may use (--gpu-memory-utilization)."),
    ] = 0.9
    extra_args: Annotated[
        list[Annotated[str, Field(max_length=256)]] | None,
        Field(max_length=32, description="Extra vLLM arguments."),
    ] = None


class AdapterAgentSpec(K8sModel):
    """The adapter agent: a sidecar in every vLLM pod that pulls oci:// and s3:// adapter versions into a
    bounded cache, verifies every version (pulled or on a claim) and loads it into its replica
    (docs/adapter-agent.md)."""

    credentials_secret: Annotated[str | None, login_secret_field("agent container")] = None
    plain_http: Annotated[
        bool, Field(description="Pull over plain HTTP (a registry on the cluster's network, without TLS).")
    ] = False
    cache_size: Annotated[
        Quantity,
        Field(
            description="Size limit of each replica's adapter cache (an emptyDir); unloaded adapters are evicted "
            "least recently used first, and a load that does not fit next to the loaded ones is refused."
        ),
    ] = "2Gi"
    s3: Annotated[
        S3Spec | None,
        Field(description="The S3-compatible store s3:// versions are pulled from (endpoint, region, login)."),
    ] = None


class ModelServerSpec(K8sModel):
    """Desired state of a ModelServer."""

    base_model: Annotated[ModelSource, Field(description="The base model every adapter was trained on.")]
    replicas: Annotated[int, Field(ge=0, le=64, description="vLLM replicas.")] = 1
    resources: Annotated[PodResources, Field(description="Resources of each vLLM pod.")] = PodResources()
    vllm: Annotated[VllmSpec, Field(description="vLLM limits and settings.")] = VllmSpec()
    adapters: Annotated[
        list[ServedAdapter],
        Field(
            max_length=64,
            description="Adapters to serve, each under a stable public name.",
            json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
        ),
    ] = Field(default_factory=list)
    allowed_namespaces: Annotated[
        list[Annotated[str, Field(pattern=DNS_LABEL_PATTERN, max_length=63)]] | None,
        Field(max_length=64, description="Other namespaces whose FineTuneJobs this server may serve."),
    ] = None
    adapter_agent: Annotated[
        AdapterAgentSpec,
        Field(
            description="The adapter agent in every vLLM pod (always there: it pulls, verifies and loads the "
            "adapters): registry login, plain HTTP, cache size, S3 store."
        ),
    ] = AdapterAgentSpec()


class ResolvedAdapter(K8sModel):
    """The concrete version behind a public name, as the controller resolved it from spec.adapters[]."""

    name: Annotated[str, Field(description="Public model name.")]
    fine_tune_job: Annotated[
        str | None, Field(description="FineTuneJob of the stable version (namespace/name when not our own).")
    ] = None
    uri: Annotated[str, Field(description="Adapter artifact of the stable version.")] = ""
    sha256: Annotated[str, Field(description="Digest of the stable version (empty when the source gives none).")] = ""
    version: Annotated[
        str, Field(description="Name the stable version is loaded under on vLLM (<name>-<sha256[:12]>).")
    ] = ""
    canary_fine_tune_job: str | None = None
    canary_uri: str | None = None
    canary_sha256: str | None = None
    canary_version: str | None = None
    canary_weight: Annotated[int | None, Field(ge=0, le=100)] = None
    served: Annotated[
        bool, Field(description="Routed by the router and loaded on every ready replica at the desired version.")
    ] = False
    message: Annotated[
        str, Field(max_length=1024, description="Why the served version differs from what spec asks (drift).")
    ] = ""


class ReplicaAdapters(K8sModel):
    """Adapters loaded on one replica (as the router's adapter manager last observed them)."""

    pod: str
    url: str = ""
    healthy: bool = False
    loaded: list[str] = Field(default_factory=list)
    errors: Annotated[list[str], Field(description="adapter: message, for adapters that failed to load.")] = Field(
        default_factory=list
    )


class ModelServerStatus(K8sModel):
    """Observed state of a ModelServer."""

    observed_generation: Annotated[int | None, Field(ge=0)] = None
    conditions: Conditions = Field(default_factory=list)
    replicas: Annotated[int, Field(ge=0)] = 0
    ready_replicas: Annotated[int, Field(ge=0)] = 0
    adapters: list[ResolvedAdapter] = Field(default_factory=list)
    replica_adapters: list[ReplicaAdapters] = Field(default_factory=list)
    adapter_summary: Annotated[str, Field(max_length=1024, description="name=version list, for kubectl get.")] = ""
    router_key: Annotated[str, Field(description="This server's entry in the router's table (<namespace>.<name>).")] = (
        ""
    )


class ModelServer(K8sModel):
    """A vLLM deployment of one base model and the LoRA adapters it serves."""

    CRD: ClassVar[CrdInfo] = CrdInfo(
        kind="ModelServer",
        plural="modelservers",
        singular="modelserver",
        short_names=["ms"],
        description="ModelServer is a vLLM deployment of one base model serving many LoRA adapters behind one "
        "OpenAI-compatible endpoint.",
        printer_columns=[
            PrinterColumn(name="Ready", type="integer", json_path=".status.readyReplicas"),
            PrinterColumn(name="Replicas", type="integer", json_path=".spec.replicas"),
            PrinterColumn(name="Adapters", type="string", json_path=".status.adapterSummary"),
            PrinterColumn(name="Base", type="string", json_path=".spec.baseModel.uri", priority=1),
            PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
        ],
        root_rules=[
            cel(
                "size(self.metadata.name) <= 47",
                "metadata.name must be at most 47 characters (the Deployment and its pods derive their names from it)",
            ),
        ],
    )

    api_version: str = "loraplane.io/v1alpha1"
    kind: str = "ModelServer"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: ModelServerSpec
    status: ModelServerStatus | None = None
