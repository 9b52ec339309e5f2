"""`FineTuneJob` (short name `ftj`): one immutable training run that yields one adapter version."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

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
    cel,
    immutable,
)
from loraplane.api.oci import OCI_PUSH_URI_HELP, OCI_PUSH_URI_PATTERN, login_secret_field
from loraplane.api.s3 import S3_PUSH_URI_HELP, S3_PUSH_URI_PATTERN, S3Ref, S3Spec

DATASET_URI_PATTERN = (
    rf"^(hf|modelscope)://{HUB_REPO_PATTERN}(/{SAFE_PATH_PATTERN})?$"
    rf"|^pvc://{CLAIM_PATTERN}/{SAFE_PATH_PATTERN}$"
    r"|^configmap://[a-z0-9]([-a-z0-9.]*[a-z0-9])?/\.*[-_a-zA-Z0-9][-._a-zA-Z0-9]*$"
    rf"|^file:///{SAFE_PATH_PATTERN}$"
    r"|^builtin://[a-z0-9-]+$"
)
DATASET_URI_HELP = (
    "one of hf://ORG/NAME[@REVISION][/FILE], modelscope://ORG/NAME[@REVISION][/FILE], pvc://CLAIM/PATH, "
    "configmap://NAME/KEY, file:///PATH or builtin://NAME (demo data shipped with Loraplane); " + SAFE_PATH_HELP
)

BuiltinTemplate = Literal[
    "finance-analyst-zh",
    "finance-analyst-en",
    "medical-zh",
    "medical-en",
    "legal-zh",
    "legal-en",
]


class PromptTemplate(K8sModel):
    """The instruction wrapped around every example: a built-in industry template or an inline one."""

    builtin: Annotated[
        BuiltinTemplate | None,
        Field(description="A built-in industry template (e.g. finance-analyst-zh: 你作为资深金融分析师…)."),
    ] = None
    inline: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=8192,
            description="An inline system prompt; {instruction} and {input} are replaced per example.",
        ),
    ] = None


class DatasetSpec(K8sModel):
    """Domain training data."""

    uri: Annotated[
        str,
        Field(
            pattern=DATASET_URI_PATTERN,
            max_length=1024,
            description="Training data (JSON or JSONL): " + DATASET_URI_HELP + ".",
        ),
    ]
    format: Annotated[
        Literal["Auto", "InputOutput", "Alpaca", "Chat"],
        Field(
            description="Record format: InputOutput ({input, output}), Alpaca ({instruction, input, output}), "
            "Chat ({messages: [{role, content}]}) or Auto (detected from the first record)."
        ),
    ] = "Auto"
    template: Annotated[
        PromptTemplate | None,
        Field(
            description="Prompt template; exactly one of builtin or inline.",
            json_schema_extra={
                "x-kubernetes-validations": [
                    cel(
                        "has(self.builtin) != has(self.inline)",
                        "set exactly one of template.builtin or template.inline",
                    )
                ]
            },
        ),
    ] = None
    general_mix_ratio: Annotated[
        float,
        Field(
            ge=0,
            le=0.9,
            description="Share of general instruction data mixed in against forgetting (0.1 = 10%).",
        ),
    ] = 0.0
    validation_split: Annotated[
        float, Field(ge=0, le=0.5, description="Share of the data held out for validation and evaluation.")
    ] = 0.1
    max_samples: Annotated[int | None, Field(ge=1, description="Use at most this many training records.")] = None


class LoraSpec(K8sModel):
    """LoRA adapter shape. Only what vLLM can serve is accepted."""

    r: Annotated[
        int, Field(ge=1, le=256, description="LoRA rank (1-256); must not exceed the server's maxLoraRank.")
    ] = 8
    alpha: Annotated[float, Field(gt=0, le=4096, description="LoRA alpha (scaling = alpha / r), > 0.")] = 16
    dropout: Annotated[float, Field(ge=0, lt=1, description="Dropout on the LoRA path, in [0, 1).")] = 0.05
    target_modules: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=128)]] | None,
        Field(
            min_length=1,
            max_length=64,
            description="Modules to adapt. Omit for the architecture's default (q_proj/v_proj for "
            "Qwen2/Llama/Mistral, c_attn for Qwen-7B v1); [all-linear] adapts every linear layer.",
        ),
    ] = None
    bias: Annotated[
        Literal["none", "all", "lora_only"],
        Field(description="Which biases to train. vLLM serves only 'none'."),
    ] = "none"
    use_dora: Annotated[bool, Field(description="DoRA. vLLM cannot serve DoRA adapters; must stay false.")] = False
    modules_to_save: Annotated[
        list[Annotated[str, Field(max_length=128)]] | None,
        Field(max_length=16, description="Extra fully-trained modules. vLLM cannot serve them; must stay empty."),
    ] = None


class TrainingSpec(K8sModel):
    """Optimisation settings (Hugging Face Trainer vocabulary)."""

    epochs: Annotated[int, Field(ge=1, le=1000, description="Passes over the training data, >= 1.")] = 3
    max_steps: Annotated[
        int | None, Field(ge=1, description="Stop after this many optimizer steps (overrides epochs).")
    ] = None
    batch_size: Annotated[int, Field(ge=1, le=4096, description="Examples per device per step, >= 1.")] = 8
    gradient_accumulation_steps: Annotated[int, Field(ge=1, le=1024, description="Steps to accumulate, >= 1.")] = 1
    learning_rate: Annotated[float, Field(gt=0, le=1, description="Peak learning rate, > 0.")] = 2e-4
    max_seq_length: Annotated[
        int,
        Field(
            ge=16,
            le=131072,
            description="Tokens per example after the template (16-131072); longer ones are truncated and counted.",
        ),
    ] = 1024
    optimizer: Annotated[
        Literal["adamw_torch", "adamw_torch_fused", "adamw_8bit", "adafactor", "sgd"],
        Field(description="Optimizer name as in transformers TrainingArguments.optim."),
    ] = "adamw_torch"
    lr_scheduler: Annotated[
        Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"],
        Field(description="Learning-rate schedule."),
    ] = "cosine"
    warmup_ratio: Annotated[float, Field(ge=0, le=0.5, description="Share of steps used for warm-up.")] = 0.03
    weight_decay: Annotated[float, Field(ge=0, le=1, description="AdamW weight decay.")] = 0.0
    precision: Annotated[
        Literal["auto", "bf16", "fp16", "fp32"],
        Field(description="Compute precision; auto picks bf16 where the GPU supports it, fp32 on CPU."),
    ] = "auto"
    packing: Annotated[bool, Field(description="Pack short examples into full sequences instead of padding.")] = True
    gradient_checkpointing: Annotated[bool, Field(description="Trade compute for memory.")] = False
    seed: Annotated[int, Field(ge=0, le=2**31 - 1, description="Random seed.")] = 42
    checkpoint_steps: Annotated[
        int, Field(ge=1, le=1_000_000, description="Save a resumable checkpoint every N optimizer steps.")
    ] = 200


class TrainingResources(PodResources):
    """Resources of the training pods."""

    nodes: Annotated[int, Field(ge=1, le=64, description="Training nodes (pods); > 1 runs multi-node torchrun.")] = 1
    queue_name: Annotated[
        str | None,
        Field(
            pattern=DNS_LABEL_PATTERN,
            max_length=63,
            description="Kueue LocalQueue (kueue.x-k8s.io/queue-name).",
        ),
    ] = None
    active_deadline_seconds: Annotated[
        int | None,
        Field(
            ge=1,
            le=90 * 86400,
            description="Fail the run after this many seconds of wall-clock time (Job activeDeadlineSeconds); "
            "default: the operator's setting (7 days).",
        ),
    ] = None


class EvaluationGate(K8sModel):
    """When the adapter counts as good enough to serve."""

    min_score: Annotated[
        float | None, Field(ge=0, le=1, description="Adapter task score must be at least this (0-1).")
    ] = None
    min_improvement_over_base: Annotated[
        float | None, Field(ge=-1, le=1, description="Adapter score minus base score must be at least this.")
    ] = None


class EvaluationSpec(K8sModel):
    """Held-out evaluation of the base model and the adapter side by side."""

    held_out_uri: Annotated[
        str | None,
        Field(
            pattern=DATASET_URI_PATTERN,
            max_length=1024,
            description="Separate held-out data (same URI forms as spec.dataset.uri); default: the validation split.",
        ),
    ] = None
    metric: Annotated[
        Literal["ExactMatch", "Contains", "RougeL"],
        Field(description="Task metric on generated answers (loss/perplexity are always reported)."),
    ] = "Contains"
    max_samples: Annotated[int, Field(ge=1, le=100000, description="Evaluate at most this many examples.")] = 200
    gate: Annotated[EvaluationGate | None, Field(description="Pass/fail rule; without a gate every run passes.")] = None
    measure_retention: Annotated[
        bool,
        Field(description="Also score base and adapter on a general held-out set (general-ability retention)."),
    ] = False


OUTPUT_URI_PATTERN = rf"{OCI_PUSH_URI_PATTERN}|{S3_PUSH_URI_PATTERN}"  # where to push: a registry or a store
FINETUNEJOB_NAME_MAX = 52  # metadata.name (the root rule below): the training Job and its pods derive names from it
S3_OUTPUT_PREFIX_MAX = 512 - 1 - FINETUNEJOB_NAME_MAX  # S3Ref's key prefix limit, minus the appended /<name>
OCI_OUTPUT_MESSAGE = (
    "spec.output.credentialsSecret and spec.output.plainHttp apply to an OCI output: set spec.output.uri to "
    "oci://REGISTRY/REPOSITORY[:TAG] (an s3:// output takes its login from spec.output.s3.credentialsSecret)"
)
S3_OUTPUT_MESSAGE = "spec.output.s3 applies to an S3 output: set spec.output.uri to s3://BUCKET/PREFIX"


class OutputSpec(K8sModel):
    """Where the adapter is stored."""

    storage_claim: Annotated[
        str | None,
        Field(
            pattern=DNS_LABEL_PATTERN,
            max_length=253,
            description="Existing PersistentVolumeClaim for the adapter store; default: one the operator creates.",
        ),
    ] = None
    merge: Annotated[bool, Field(description="Also write a merged full model (merge_and_unload).")] = False
    uri: Annotated[
        str | None,
        Field(
            pattern=OUTPUT_URI_PATTERN,
            max_length=1024,
            description="Also push the finished adapter (its files and result.json): to a registry as an OCI "
            "artifact, CNCF ModelPack layout, " + OCI_PUSH_URI_HELP + ", the tag defaulting to the FineTuneJob's "
            "name (status.adapter.ociUri, pinned by the manifest digest); or to an S3-compatible store, "
            + S3_PUSH_URI_HELP
            + ", one object per file under PREFIX/<FineTuneJob name>/ so runs never overwrite each other "
            "(status.adapter.s3Uri, pinned by the adapter sha256).",
        ),
    ] = None
    credentials_secret: Annotated[str | None, login_secret_field("training pod")] = None
    plain_http: Annotated[
        bool, Field(description="Talk to the registry over plain HTTP (a registry on the cluster's network).")
    ] = False
    s3: Annotated[
        S3Spec | None,
        Field(
            description="The S3-compatible store of an s3:// output: endpoint, region and the login Secret, "
            "mounted only into the training pod."
        ),
    ] = None

    @field_validator("uri")
    @classmethod
    def _s3_uri_is_a_reference(cls, uri: str | None) -> str | None:
        """What the pattern cannot say of an s3:// uri: S3Ref's rules, and room for the appended /<name>."""
        if uri is not None and uri.startswith("s3://"):
            ref = S3Ref.parse(uri)  # ValueError naming what is wrong (an IP-like bucket, '..' in it)
            if len(ref.prefix.encode()) > S3_OUTPUT_PREFIX_MAX:
                raise ValueError(
                    f"key prefix longer than {S3_OUTPUT_PREFIX_MAX} bytes (the run's /<name> is appended to it)"
                )
        return uri

    @model_validator(mode="after")
    def _store_fields_match_the_uri(self) -> OutputSpec:
        oci = self.uri is not None and self.uri.startswith("oci://")
        s3 = self.uri is not None and self.uri.startswith("s3://")
        if (self.credentials_secret or self.plain_http) and not oci:
            raise ValueError(OCI_OUTPUT_MESSAGE)
        if self.s3 is not None and not s3:
            raise ValueError(S3_OUTPUT_MESSAGE)
        return self


OUTPUT_RULES = [
    cel(
        "(!has(self.credentialsSecret) && !(has(self.plainHttp) && self.plainHttp))"
        " || (has(self.uri) && self.uri.startsWith('oci://'))",
        OCI_OUTPUT_MESSAGE,
    ),
    cel("!has(self.s3) || (has(self.uri) && self.uri.startsWith('s3://'))", S3_OUTPUT_MESSAGE),
]


class FineTuneJobSpec(K8sModel):
    """Desired state of a FineTuneJob."""

    base_model: Annotated[
        ModelSource, Field(description="The base model.", json_schema_extra=immutable("spec.baseModel"))
    ]
    dataset: Annotated[
        DatasetSpec, Field(description="Domain training data.", json_schema_extra=immutable("spec.dataset"))
    ]
    lora: Annotated[
        LoraSpec,
        Field(
            description="LoRA adapter shape (rank, alpha, dropout, target modules); "
            "only what vLLM can serve is accepted.",
            json_schema_extra=immutable("spec.lora"),
        ),
    ] = LoraSpec()
    training: Annotated[
        TrainingSpec, Field(description="Training settings.", json_schema_extra=immutable("spec.training"))
    ] = TrainingSpec()
    resources: Annotated[TrainingResources, Field(description="Resources and placement of the training pods.")] = (
        TrainingResources()
    )
    evaluation: Annotated[EvaluationSpec, Field(description="Evaluation and promotion gate.")] = EvaluationSpec()
    output: Annotated[
        OutputSpec,
        Field(
            description="Adapter storage.",
            json_schema_extra={"x-kubernetes-validations": OUTPUT_RULES},
        ),
    ] = OutputSpec()
    suspend: Annotated[bool, Field(description="Pause the run (the training Job is suspended, progress kept).")] = False
    retention_policy: Annotated[
        Literal["Retain", "Delete"],
        Field(description="What happens to the adapter artifact when the FineTuneJob is deleted."),
    ] = "Retain"


Phase = Literal["Pending", "Downloading", "Training", "Evaluating", "Succeeded", "Failed"]


class Progress(K8sModel):
    """Training progress, updated while the trainer runs."""

    step: Annotated[int, Field(ge=0)] = 0
    total_steps: Annotated[int, Field(ge=0)] = 0
    epoch: float = 0.0
    loss: float | None = None
    learning_rate: float | None = None
    tokens_per_second: float | None = None
    eta_seconds: Annotated[int | None, Field(ge=0)] = None
    summary: Annotated[str, Field(max_length=64, description="step/total (percent), for kubectl get.")] = ""


class AdapterArtifact(K8sModel):
    """The adapter this run produced."""

    uri: str
    sha256: Annotated[str, Field(max_length=64, description="Digest over the adapter's files (see result.json).")]
    size_bytes: Annotated[int, Field(ge=0)] = 0
    trainable_params: Annotated[int, Field(ge=0)] = 0
    base_model: str = ""
    base_model_revision: str = ""
    oci_uri: Annotated[
        str | None, Field(max_length=1100, description="The pushed OCI artifact, pinned by its manifest digest.")
    ] = None
    digest: Annotated[str | None, Field(max_length=71, description="The OCI manifest digest (sha256:...).")] = None
    s3_uri: Annotated[
        str | None,
        Field(
            max_length=1200,
            description="The pushed S3 location, pinned by the adapter sha256: s3://BUCKET/PREFIX@sha256:...",
        ),
    ] = None


class EvaluationResult(K8sModel):
    """Base vs adapter on the held-out set."""

    metric: str
    base_score: float
    adapter_score: float
    base_loss: float | None = None
    adapter_loss: float | None = None
    passed: bool


class FineTuneJobStatus(K8sModel):
    """Observed state of a FineTuneJob."""

    phase: Annotated[Phase | None, Field(description="Summary for humans; conditions are authoritative.")] = None
    observed_generation: Annotated[int | None, Field(ge=0)] = None
    conditions: Conditions = Field(default_factory=list)
    progress: Progress | None = None
    adapter: AdapterArtifact | None = None
    evaluation: EvaluationResult | None = None
    job_name: str | None = None
    start_time: Annotated[str | None, Field(json_schema_extra={"format": "date-time"})] = None
    completion_time: Annotated[str | None, Field(json_schema_extra={"format": "date-time"})] = None


class FineTuneJob(K8sModel):
    """One immutable training run that yields one adapter version."""

    CRD: ClassVar[CrdInfo] = CrdInfo(
        kind="FineTuneJob",
        plural="finetunejobs",
        singular="finetunejob",
        short_names=["ftj"],
        description="FineTuneJob is one immutable LoRA training run of a base model on domain data; "
        "it yields one evaluated, checksummed adapter version.",
        printer_columns=[
            PrinterColumn(name="Phase", type="string", json_path=".status.phase"),
            PrinterColumn(name="Progress", type="string", json_path=".status.progress.summary"),
            PrinterColumn(name="Loss", type="number", json_path=".status.progress.loss"),
            PrinterColumn(name="Adapter", type="string", json_path=".status.adapter.uri"),
            PrinterColumn(name="Base", type="string", json_path=".spec.baseModel.uri", priority=1),
            PrinterColumn(name="Age", type="date", json_path=".metadata.creationTimestamp"),
        ],
        root_rules=[
            cel(
                f"size(self.metadata.name) <= {FINETUNEJOB_NAME_MAX}",
                f"metadata.name must be at most {FINETUNEJOB_NAME_MAX} characters "
                "(the training Job and its pods derive their names from it)",
            )
        ],
    )

    api_version: str = "loraplane.io/v1alpha1"
    kind: str = "FineTuneJob"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: FineTuneJobSpec
    status: FineTuneJobStatus | None = None
