"""Unit tests: the pydantic models, servability rules and admission validation (no cluster)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from loraplane.api import FineTuneJob, FineTuneJobSpec, ModelServer
from loraplane.api.lora_rules import default_target_modules, known_model
from loraplane.api.oci import BadReference, OciRef, layer_media_type, safe_layer_path
from loraplane.api.trainer_spec import oci_output
from loraplane.operator.finetunejob.validation import finetunejob_problems
from loraplane.operator.modelserver.validation import modelserver_problems
from tests.support.uris import OCI_SAFE, OCI_TRAVERSALS, SAFE_URIS, TRAVERSALS

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def base_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "baseModel": {"uri": "hf://Qwen/Qwen2.5-7B-Instruct@main"},
        "dataset": {"uri": "pvc://data/medical.jsonl"},
    }
    spec.update(overrides)
    return spec


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_parse_and_are_valid(path: Path) -> None:
    doc = yaml.safe_load(path.read_text())
    model = {"FineTuneJob": FineTuneJob, "ModelServer": ModelServer}[doc["kind"]]
    obj = model.model_validate(doc)
    problems = finetunejob_problems(doc["spec"]) if doc["kind"] == "FineTuneJob" else modelserver_problems(doc["spec"])
    assert problems == [], problems
    assert obj.spec.to_k8s()["baseModel"]["uri"] == doc["spec"]["baseModel"]["uri"]


def test_seed_medical_settings_are_expressible() -> None:
    job = FineTuneJob.model_validate(yaml.safe_load((EXAMPLES / "finetunejob-medical.yaml").read_text()))
    t, lora = job.spec.training, job.spec.lora
    assert (lora.r, lora.alpha, lora.dropout, lora.target_modules) == (8, 32, 0.05, ["q_proj", "v_proj"])
    assert (t.batch_size, t.learning_rate, t.epochs, t.max_seq_length) == (12, 2e-5, 5, 1024)
    assert (t.optimizer, t.lr_scheduler, t.gradient_accumulation_steps) == ("adamw_torch", "cosine", 4)


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"lora": {"r": 0}}, "lora.r"),
        ({"lora": {"r": 512}}, "lora.r"),
        ({"lora": {"alpha": 0}}, "lora.alpha"),
        ({"lora": {"dropout": 1.0}}, "lora.dropout"),
        ({"training": {"learningRate": -1e-4}}, "training.learningRate"),
        ({"training": {"epochs": 0}}, "training.epochs"),
        ({"training": {"batchSize": 0}}, "training.batchSize"),
        ({"training": {"maxSeqLength": 8}}, "training.maxSeqLength"),
        ({"training": {"optimizer": "adam"}}, "training.optimizer"),
        ({"baseModel": {"uri": "s3://bucket/model"}}, "baseModel.uri"),
        ({"baseModel": {"uri": "hf://just-a-name"}}, "baseModel.uri"),
        ({"dataset": {"uri": "ftp://x/y"}}, "dataset.uri"),
        ({"lora": {"rank": 8}}, "lora.rank"),
    ],
)
def test_model_rejects_bad_fields_naming_them(patch: dict[str, Any], field: str) -> None:
    spec = base_spec()
    for key, value in patch.items():
        spec[key] = {**spec.get(key, {}), **value}
    with pytest.raises(ValidationError) as info:
        FineTuneJobSpec.model_validate(spec)
    locs = [".".join(str(p) for p in e["loc"]) for e in info.value.errors()]
    assert any(loc.startswith(field) for loc in locs), locs
    problems = finetunejob_problems(spec)
    assert any(p.field.startswith(f"spec.{field}") for p in problems), problems


def test_defaults_fill_in() -> None:
    spec = FineTuneJobSpec.model_validate(base_spec())
    assert spec.lora.r == 8 and spec.lora.target_modules is None and spec.training.packing is True
    assert spec.to_k8s()["lora"]["bias"] == "none"


@pytest.mark.parametrize(
    ("patch", "field", "words"),
    [
        ({"lora": {"useDora": True}}, "spec.lora.useDora", "DoRA"),
        ({"lora": {"bias": "all"}}, "spec.lora.bias", "none"),
        ({"lora": {"modulesToSave": ["lm_head"]}}, "spec.lora.modulesToSave", "modules_to_save"),
        ({"training": {"precision": "bf16"}}, "spec.training.precision", "GPU"),
        (
            {
                "evaluation": {"gate": {"minScore": 0.5}},
                "dataset": {"uri": "pvc://d/x", "validationSplit": 0},
            },
            "spec.evaluation.gate",
            "held-out",
        ),
        (
            {"baseModel": {"uri": "file:///models/m", "tokenSecretRef": {"name": "hub"}}},
            "spec.baseModel.tokenSecretRef",
            "hf://",
        ),
        (
            {
                "baseModel": {"uri": "modelscope://qwen/Qwen-7B-Chat@v1.0.4", "trustRemoteCode": True},
                "lora": {"targetModules": ["q_proj", "v_proj"]},
            },
            "spec.lora.targetModules",
            "c_attn",
        ),
        (
            {"baseModel": {"uri": "modelscope://qwen/Qwen-7B@v1.0.4"}},
            "spec.baseModel.trustRemoteCode",
            "trustRemoteCode",
        ),
    ],
)
def test_operator_validation_names_field(patch: dict[str, Any], field: str, words: str) -> None:
    spec = base_spec()
    for key, value in patch.items():
        spec[key] = {**spec.get(key, {}), **value}
    problems = finetunejob_problems(spec)
    assert [p.field for p in problems] == [field], problems
    assert words in problems[0].message


def test_known_models_and_defaults() -> None:
    qwen1 = known_model("modelscope://qwen/Qwen-7B@v1.0.4")
    assert qwen1 is not None and qwen1.family == "qwen" and qwen1.needs_remote_code
    qwen25 = known_model("hf://Qwen/Qwen2.5-7B-Instruct")
    assert qwen25 is not None and qwen25.family == "qwen2" and not qwen25.needs_remote_code
    assert known_model("pvc://models/x") is None
    assert default_target_modules("qwen") == ["c_attn"]
    assert default_target_modules("llama") == ["q_proj", "v_proj"]


def test_modelserver_cross_namespace_needs_allow() -> None:
    spec = {
        "baseModel": {"uri": "hf://Qwen/Qwen2.5-7B-Instruct"},
        "adapters": [{"name": "medical", "source": {"fineTuneJob": "m1", "namespace": "other"}}],
    }
    problems = modelserver_problems(spec)
    assert [p.field for p in problems] == ["spec.adapters[0].source.namespace"]
    assert modelserver_problems({**spec, "allowedNamespaces": ["other"]}) == []


# ---------------------------------------------------------------------------------------------------------------------
# Path traversal: every URI field refuses it at admission, naming the field (the CRD side is in test_crds.py;
# the URIs: tests/support/uris.py)


def _set(doc: dict[str, Any], path: str, value: str) -> dict[str, Any]:
    node: Any = doc
    *parents, leaf = path.replace("[0]", ".0").split(".")
    for part in parents:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[leaf] = value
    return doc


def _ms_spec() -> dict[str, Any]:
    return {
        "baseModel": {"uri": "hf://Qwen/Qwen2.5-7B-Instruct"},
        "adapters": [
            {
                "name": "medical",
                "source": {"uri": "pvc://store/team-a/v1"},
                "canary": {"source": {"uri": "pvc://store/team-a/v2"}, "weight": 10},
            }
        ],
    }


URI_FIELDS = [
    ("FineTuneJob", "baseModel.uri"),
    ("FineTuneJob", "dataset.uri"),
    ("FineTuneJob", "evaluation.heldOutUri"),
    ("ModelServer", "baseModel.uri"),
    ("ModelServer", "adapters[0].source.uri"),
    ("ModelServer", "adapters[0].canary.source.uri"),
]


def _problems(kind: str, field: str, uri: str) -> list[Any]:
    if kind == "FineTuneJob":
        return finetunejob_problems(_set(base_spec(), field, uri))
    return modelserver_problems(_set(_ms_spec(), field, uri))


@pytest.mark.parametrize(("kind", "field"), URI_FIELDS)
@pytest.mark.parametrize("uri", TRAVERSALS)
def test_uri_fields_refuse_path_traversal_naming_the_field(kind: str, field: str, uri: str) -> None:
    """The model the CRD is generated from (and so local mode and the operator) refuses it, naming the field."""
    problems = _problems(kind, field, uri)
    assert [p.field for p in problems] == [f"spec.{field}"], problems
    assert str(problems[0]).startswith(f"spec.{field}: String should match pattern")


@pytest.mark.parametrize(("kind", "field"), URI_FIELDS)
@pytest.mark.parametrize("uri", SAFE_URIS)
def test_uri_fields_still_admit_safe_paths(kind: str, field: str, uri: str) -> None:
    assert _problems(kind, field, uri) == []


@pytest.mark.parametrize(
    ("field", "uri"),
    [
        ("dataset.uri", "hf://org/ds@main/../../x.jsonl"),
        ("dataset.uri", "hf://org/ds/data/./train.jsonl"),
        ("dataset.uri", "configmap://data/.."),
        ("dataset.uri", "configmap://data/."),
        ("evaluation.heldOutUri", "modelscope://org/ds/../x.jsonl"),
    ],
)
def test_dataset_only_uri_forms_refuse_traversal(field: str, uri: str) -> None:
    problems = finetunejob_problems(_set(base_spec(), field, uri))
    assert [p.field for p in problems] == [f"spec.{field}"], problems


def test_dataset_only_uri_forms_still_admit_files() -> None:
    for uri in ("hf://org/ds@main/data/train.jsonl", "configmap://data/.train.jsonl", "configmap://data/a..b"):
        assert finetunejob_problems(base_spec(dataset={"uri": uri})) == [], uri


# ---------------------------------------------------------------------------------------------------------------------
# spec.output.uri: an OCI reference to push to; the registry fields only with it


@pytest.mark.parametrize("uri", [*OCI_TRAVERSALS, "oci://r.example.com/a/b@sha256:" + "0" * 64, "pvc://store/x"])
def test_output_uri_refuses_what_is_not_a_push_reference(uri: str) -> None:
    problems = finetunejob_problems(base_spec(output={"uri": uri}))
    assert [p.field for p in problems] == ["spec.output.uri"], problems


@pytest.mark.parametrize("uri", OCI_SAFE)
def test_output_uri_admits_oci_references(uri: str) -> None:
    assert finetunejob_problems(base_spec(output={"uri": uri, "credentialsSecret": "push", "plainHttp": True})) == []


@pytest.mark.parametrize("output", [{"credentialsSecret": "push"}, {"plainHttp": True}])
def test_registry_fields_need_an_output_uri(output: dict[str, Any]) -> None:
    problems = finetunejob_problems(base_spec(output=output))
    assert [p.field for p in problems] == ["spec.output"], problems
    assert "set spec.output.uri" in str(problems[0])


def test_oci_references_parse_and_print_back() -> None:
    ref = OciRef.parse("oci://127.0.0.1:5000/adapters/medical:run-1@sha256:" + "a" * 64)
    assert (ref.registry, ref.repository, ref.tag, ref.digest) == (
        "127.0.0.1:5000",
        "adapters/medical",
        "run-1",
        "sha256:" + "a" * 64,
    )
    assert ref.reference == ref.digest and ref.target() == "127.0.0.1:5000/adapters/medical@sha256:" + "a" * 64
    assert str(ref) == "oci://127.0.0.1:5000/adapters/medical:run-1@sha256:" + "a" * 64
    assert OciRef.parse("oci://ghcr.io/acme/medical").reference == "latest"
    assert oci_output("clinic-notes", "oci://ghcr.io/acme/medical") == "oci://ghcr.io/acme/medical:clinic-notes"
    assert oci_output("clinic-notes", "oci://ghcr.io/acme/medical:v2") == "oci://ghcr.io/acme/medical:v2"
    for bad in OCI_TRAVERSALS:
        with pytest.raises(BadReference, match="expected oci://"):
            OciRef.parse(bad)


@pytest.mark.parametrize("path", ["../x", "/etc/passwd", "a/../../b", "a//b", "./a", "a\\b", "a\x00b", "", None])
def test_layer_paths_that_leave_the_adapter_directory_are_refused(path: str | None) -> None:
    with pytest.raises(ValueError, match="layer"):
        safe_layer_path(path)


def test_layer_media_types_follow_modelpack() -> None:
    assert layer_media_type("adapter_model.safetensors") == "application/vnd.cncf.model.weight.v1.raw"
    assert layer_media_type("adapter_config.json") == "application/vnd.cncf.model.weight.config.v1.raw"
    assert layer_media_type("tokenizer.json") == "application/vnd.cncf.model.weight.config.v1.raw"
    assert layer_media_type("result.json") == "application/vnd.cncf.model.doc.v1.raw"
    assert safe_layer_path("merged/model.safetensors") == "merged/model.safetensors"
