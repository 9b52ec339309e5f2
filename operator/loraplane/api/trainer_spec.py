"""The training spec: the one JSON document the trainer reads.

The operator renders it from a FineTuneJob (into a ConfigMap); local mode renders it from the same
YAML. It reuses the FineTuneJob's section models, so a field means the same thing everywhere.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from loraplane.api.common import K8sModel, ModelSource
from loraplane.api.finetunejob import DatasetSpec, EvaluationSpec, FineTuneJobSpec, LoraSpec, TrainingSpec
from loraplane.api.oci import OciRef
from loraplane.api.s3 import S3Ref

HUB_TOKEN_ENV = "LORAPLANE_HUB_TOKEN"  # where a pod finds the hub token (resolved by the kubelet from a Secret)


def oci_output(name: str, uri: str | None) -> str | None:
    """spec.output.uri with its tag: the one given, else the run's name."""
    if uri is None:
        return None
    ref = OciRef.parse(uri)
    return str(OciRef(ref.registry, ref.repository, ref.tag or name))


def s3_output(name: str, uri: str) -> str:
    """spec.output.uri of an S3 output in the run's own prefix, s3://BUCKET/PREFIX/<name>, always: an S3 key names
    no version, so a run pushing where another did would replace the objects that run's pinned s3Uri names."""
    ref = S3Ref.parse(uri)
    return str(S3Ref(ref.bucket, f"{ref.prefix}/{name}"))


def output_uri(name: str, uri: str | None) -> str | None:
    """Where the trainer pushes: spec.output.uri with the run's tag (oci://) or prefix (s3://) filled in."""
    if uri is not None and uri.startswith("s3://"):
        return s3_output(name, uri)
    return oci_output(name, uri)


class FetchEnv:
    """The environment of `python -m loraplane.trainer.fetch`, the ModelServer pods' init container."""

    BASE_MODEL = "LORAPLANE_BASE_MODEL"  # the ModelServer's spec.baseModel as JSON
    CACHE_DIR = "LORAPLANE_CACHE_DIR"  # the model cache; `<cache>/model` ends up pointing at the checkpoint
    PVC_ROOT = "LORAPLANE_PVC_ROOT"  # where pvc:// claims are mounted


class Mounts(K8sModel):
    """Where the pod (or local mode) finds what pvc:// and configmap:// URIs name."""

    pvc_root: Annotated[str, Field(description="pvc://CLAIM/PATH resolves to PVC_ROOT/CLAIM/PATH.")] = "/mnt/pvc"
    configmap_root: Annotated[str, Field(description="configmap://NAME/KEY resolves to CONFIGMAP_ROOT/NAME/KEY.")] = (
        "/mnt/configmap"
    )


class TrainerSpec(K8sModel):
    """Everything one training run needs."""

    name: Annotated[str, Field(min_length=1, max_length=253, description="Run name (the FineTuneJob's).")] = "local"
    namespace: str = ""
    base_model: ModelSource
    dataset: DatasetSpec
    lora: LoraSpec = LoraSpec()
    training: TrainingSpec = TrainingSpec()
    evaluation: EvaluationSpec = EvaluationSpec()
    merge: bool = False
    output_uri: Annotated[
        str | None,
        Field(
            description="oci://... or s3://...: push the finished adapter there (FineTuneJob spec.output.uri, "
            "with the run's tag or prefix filled in); an s3:// store is reached through the AWS_* environment."
        ),
    ] = None
    output_plain_http: bool = False
    output_dir: Annotated[str, Field(description="Adapter directory: adapter files, result.json, checkpoints/.")]
    cache_dir: Annotated[str, Field(description="Model cache (downloads, dequantized GGUF); makes re-runs offline.")]
    mounts: Mounts = Mounts()
    hub_token_env: Annotated[str, Field(description="Environment variable holding the hub token, if any.")] = (
        HUB_TOKEN_ENV
    )

    @classmethod
    def from_finetunejob(
        cls, name: str, namespace: str, spec: FineTuneJobSpec, *, output_dir: str, cache_dir: str, mounts: Mounts
    ) -> TrainerSpec:
        """The training spec of a FineTuneJob (pure; used by the operator and by local mode)."""
        return cls(
            name=name,
            namespace=namespace,
            base_model=spec.base_model,
            dataset=spec.dataset,
            lora=spec.lora,
            training=spec.training,
            evaluation=spec.evaluation,
            merge=spec.output.merge,
            output_uri=output_uri(name, spec.output.uri),
            output_plain_http=spec.output.plain_http,
            output_dir=output_dir,
            cache_dir=cache_dir,
            mounts=mounts,
        )


__all__ = [
    "HUB_TOKEN_ENV",
    "DatasetSpec",
    "EvaluationSpec",
    "FetchEnv",
    "LoraSpec",
    "Mounts",
    "TrainerSpec",
    "TrainingSpec",
]
