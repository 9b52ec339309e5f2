"""spec.output.uri: s3://BUCKET/PREFIX: admission (the pydantic model, and the CRD's CEL rules on a real API server),
the run's own prefix, the training pod's S3 login, and the pinned location in the status."""

from __future__ import annotations

import json
from typing import Any

import pytest

from loraplane.api.finetunejob import FineTuneJobSpec, FineTuneJobStatus
from loraplane.api.s3 import S3Ref
from loraplane.api.trainer_spec import TrainerSpec, output_uri
from loraplane.operator.finetunejob import builders
from loraplane.operator.finetunejob.status import Snapshot, finetunejob_status
from loraplane.operator.finetunejob.validation import finetunejob_problems
from loraplane.operator.owner import Owner
from loraplane.operator.settings import OperatorSettings
from tests.support.kube import Cluster

OWNER = Owner(kind="FineTuneJob", name="med", namespace="team-a", uid="u-1")
SETTINGS = OperatorSettings(priority=1, trainer_image="trainer:test")
S3 = {"endpoint": "http://minio.storage.svc:9000/", "region": "eu-central-1", "credentialsSecret": "s3-login"}
SHA = "ab" * 32


def spec(**output: Any) -> dict[str, Any]:
    return {
        "baseModel": {"uri": "hf://Qwen/Qwen2.5-7B-Instruct@main"},
        "dataset": {"uri": "pvc://data/medical.jsonl"},
        "output": output,
    }


def problems(**output: Any) -> list[tuple[str, str]]:
    return [(p.field, p.message) for p in finetunejob_problems(spec(**output))]


# ---------------------------------------------------------------------------------------------------------------------
# admission (pydantic: local mode and the operator's Accepted condition)


@pytest.mark.parametrize(
    "output",
    [
        {"uri": "s3://adapters/medical", "s3": S3},
        {"uri": "s3://my.bucket-1/teams/a/medical/", "s3": {"credentialsSecret": "s3-login"}},
        {"uri": "s3://adapters/medical"},  # boto3's own credential chain (web identity, instance role)
        {"uri": "oci://registry.example.com/adapters/medical", "credentialsSecret": "push", "plainHttp": True},
    ],
)
def test_an_s3_or_oci_output_with_its_own_fields_is_admitted(output: dict[str, Any]) -> None:
    assert problems(**output) == []


@pytest.mark.parametrize(
    "uri",
    [
        "s3://adapters",  # no prefix
        "s3://adapters/",
        "s3://adapters/../etc",
        "s3://adapters/a//b",
        "s3://adapters/./a",
        "s3://Adapters/medical",  # bucket names are lowercase
        "s3://ab/medical",  # too short for a bucket
        "s3://10.0.0.1/medical",  # an IP address is no bucket name (S3Ref, not the pattern)
        "s3://my..bucket/medical",
        "s3://adapters/a b",
        f"s3://adapters/medical@sha256:{SHA}",  # a pin is what the push reports, not where it goes
        "s3://adapters/" + "p" * 460,  # no room left for the appended /<name>
        "s3:/adapters/medical",
        "gs://adapters/medical",
    ],
)
def test_output_uri_refuses_what_is_not_an_s3_push_location(uri: str) -> None:
    assert [field for field, _ in problems(uri=uri)] == ["spec.output.uri"]


@pytest.mark.parametrize("registry_field", [{"credentialsSecret": "push"}, {"plainHttp": True}])
def test_registry_fields_are_refused_with_an_s3_output(registry_field: dict[str, Any]) -> None:
    ((field, message),) = problems(uri="s3://adapters/medical", **registry_field)
    assert field == "spec.output"
    assert "spec.output.credentialsSecret and spec.output.plainHttp apply to an OCI output" in message
    assert "set spec.output.uri to oci://" in message and "spec.output.s3.credentialsSecret" in message


@pytest.mark.parametrize("uri", [None, "oci://registry.example.com/adapters/medical"])
def test_the_s3_store_is_refused_without_an_s3_output(uri: str | None) -> None:
    output: dict[str, Any] = {"s3": S3} if uri is None else {"uri": uri, "s3": S3}
    ((field, message),) = problems(**output)
    assert field == "spec.output"
    assert message.endswith("spec.output.s3 applies to an S3 output: set spec.output.uri to s3://BUCKET/PREFIX")


def test_the_s3_store_fields_are_checked() -> None:
    found = problems(uri="s3://adapters/medical", s3={"endpoint": "minio:9000", "region": "EU"})
    assert sorted(field for field, _ in found) == ["spec.output.s3.endpoint", "spec.output.s3.region"]


# ---------------------------------------------------------------------------------------------------------------------
# where the trainer pushes: every run in its own prefix


def test_each_run_pushes_under_its_own_prefix() -> None:
    assert output_uri("med-v2", "s3://adapters/medical") == "s3://adapters/medical/med-v2"
    assert output_uri("med-v2", "s3://adapters/medical/") == "s3://adapters/medical/med-v2"
    assert output_uri("med-v3", "s3://adapters/medical") != output_uri("med-v2", "s3://adapters/medical")
    assert output_uri("med-v2", "oci://r.example.com/a") == "oci://r.example.com/a:med-v2"  # OCI: the tag
    assert output_uri("med-v2", None) is None
    # the longest admitted prefix with the longest name is still a location the trainer can push to
    longest = "s3://adapters/" + "p" * 459
    assert problems(uri=longest) == []
    pushed = output_uri("n" * 52, longest)
    assert pushed is not None and S3Ref.parse(pushed).prefix == "p" * 459 + "/" + "n" * 52


# ---------------------------------------------------------------------------------------------------------------------
# the training pod: the S3 login mounted into the trainer container only, the store's endpoint and region


def test_the_s3_output_reaches_the_trainer_and_only_its_pod_mounts_the_login() -> None:
    s = FineTuneJobSpec.model_validate(spec(uri="s3://adapters/medical", s3=S3))
    rendered = TrainerSpec.model_validate(json.loads(builders.spec_configmap(OWNER, s)["data"]["spec.json"]))
    assert rendered.output_uri == "s3://adapters/medical/med"
    pod = builders.training_job(OWNER, s, SETTINGS)["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"] == {"secretName": "s3-login", "items": [{"key": "credentials", "path": "credentials"}]}
    (c,) = pod["containers"]
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == volume["name"]]
    assert mount == {"name": volume["name"], "mountPath": "/etc/loraplane/s3", "readOnly": True}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["AWS_SHARED_CREDENTIALS_FILE"] == mount["mountPath"] + "/credentials"  # the mounted key
    assert env["AWS_ENDPOINT_URL_S3"] == "http://minio.storage.svc:9000"
    assert env["AWS_REGION"] == "eu-central-1"
    assert "DOCKER_CONFIG" not in env and not pod.get("initContainers")
    cleanup = builders.cleanup_job(OWNER, s, SETTINGS)["spec"]["template"]["spec"]
    assert not [v for v in cleanup.get("volumes", []) if "secret" in v]
    assert not [e for c in cleanup["containers"] for e in c.get("env", []) if e["name"].startswith("AWS_")]


def test_without_an_s3_login_nothing_is_mounted() -> None:
    s = FineTuneJobSpec.model_validate(spec(uri="s3://adapters/medical", s3={"endpoint": "https://s3.example.com"}))
    pod = builders.training_job(OWNER, s, SETTINGS)["spec"]["template"]["spec"]
    assert not [v for v in pod["volumes"] if "secret" in v]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["AWS_ENDPOINT_URL_S3"] == "https://s3.example.com"
    assert "AWS_SHARED_CREDENTIALS_FILE" not in env and "AWS_REGION" not in env
    plain = FineTuneJobSpec.model_validate(spec(uri="s3://adapters/medical"))
    (bare,) = builders.training_job(OWNER, plain, SETTINGS)["spec"]["template"]["spec"]["containers"]
    assert not [e for e in bare["env"] if e["name"].startswith("AWS_")]  # boto3's own chain in the pod


# ---------------------------------------------------------------------------------------------------------------------
# the status: the pinned location from the termination summary


def _finished(summary: dict[str, Any]) -> FineTuneJobStatus:
    pod = {
        "metadata": {"name": "med-train-a", "creationTimestamp": "2026-01-01T00:00:00Z", "annotations": {}},
        "status": {
            "phase": "Succeeded",
            "startTime": "2026-01-01T00:00:00Z",
            "containerStatuses": [
                {"name": "trainer", "state": {"terminated": {"exitCode": 0, "message": json.dumps(summary)}}}
            ],
        },
    }
    job = {
        "metadata": {"name": "med-train", "uid": "j"},
        "spec": {},
        "status": {"conditions": [{"type": "Complete", "status": "True", "reason": "CompletionsReached"}]},
    }
    snap = Snapshot(
        generation=1,
        problems=[],
        suspend=False,
        adapter_uri="pvc://med-adapter/team-a/med",
        job=job,
        pods=[pod],
        base_model="hf://o/m@rev",
    )
    return finetunejob_status(FineTuneJobStatus(), snap, "2026-01-01T00:05:00Z")


def test_the_pinned_s3_location_reaches_the_status() -> None:
    pushed = f"s3://adapters/medical/med@sha256:{SHA}"
    summary = {"ok": True, "code": 0, "reason": "Succeeded", "adapter": {"sha256": SHA}, "s3_uri": pushed}
    status = _finished(summary)
    assert status.phase == "Succeeded" and status.adapter is not None
    wire = status.adapter.to_k8s()
    assert wire["s3Uri"] == pushed and wire["sha256"] == SHA and wire["uri"] == "pvc://med-adapter/team-a/med"
    assert "ociUri" not in wire and "digest" not in wire  # no registry push, no manifest digest
    unpushed = _finished({**summary, "s3_uri": None})
    assert unpushed.adapter is not None and "s3Uri" not in unpushed.adapter.to_k8s()


# ---------------------------------------------------------------------------------------------------------------------
# the CRD's CEL rules, on a real API server (after `make manifests`)


def _ftj(name: str, output: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "loraplane.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": spec(**output),
    }


CEL_CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("s3-output", {"uri": "s3://adapters/medical", "s3": S3}, None),
    ("oci-output", {"uri": "oci://registry.example.com/a", "credentialsSecret": "push", "plainHttp": True}, None),
    ("login-with-s3", {"uri": "s3://adapters/medical", "credentialsSecret": "push"}, "set spec.output.uri to oci://"),
    ("plain-http-with-s3", {"uri": "s3://adapters/medical", "plainHttp": True}, "set spec.output.uri to oci://"),
    ("s3-with-oci", {"uri": "oci://registry.example.com/a", "s3": S3}, "set spec.output.uri to s3://BUCKET/PREFIX"),
    ("s3-without-uri", {"s3": S3}, "set spec.output.uri to s3://BUCKET/PREFIX"),
    ("s3-traversal", {"uri": "s3://adapters/../etc"}, "spec.output.uri"),
]


@pytest.mark.parametrize(("output", "refused"), [(o, r) for _, o, r in CEL_CASES], ids=[i for i, _, _ in CEL_CASES])
def test_the_api_server_applies_the_same_output_rules(
    installed: Cluster, namespace: str, output: dict[str, Any], refused: str | None
) -> None:
    assert (refused is None) == (problems(**output) == [])  # the model agrees with the case
    proc = installed.apply(_ftj("out", output), "-n", namespace, "--dry-run=server", check=False)
    if refused is None:
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode != 0, f"accepted: {proc.stdout}"
        assert refused in proc.stderr, proc.stderr
