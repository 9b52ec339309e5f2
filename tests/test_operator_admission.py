"""Against the real control plane: CRDs installed with `kubectl apply -k`, the operator as its
ServiceAccount, samples accepted, malformed manifests refused with the field named, restarts harmless."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.kube import Cluster, OperatorProcess, poll

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def example(name: str) -> dict[str, Any]:
    return dict(yaml.safe_load((EXAMPLES / name).read_text()))


def minimal_ftj(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "loraplane.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {
            "baseModel": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct@main"},
            "dataset": {"uri": "builtin://medical"},
        },
    }


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in obj.get("status", {}).get("conditions", []) if c["type"] == type_), None)


def test_samples_are_accepted_and_shown_by_kubectl_get(
    installed: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    for sample in sorted(EXAMPLES.glob("*.yaml")):
        installed.kubectl("apply", "-n", namespace, "-f", str(sample))
    for kind, name in [("ftj", "medical-qwen7b-v1"), ("ftj", "finance-qwen7b-v1"), ("ms", "qwen7b")]:
        installed.kubectl("wait", "-n", namespace, "--for=condition=Accepted", "--timeout=60s", f"{kind}/{name}")
    job = installed.get("ftj", "medical-qwen7b-v1", "-n", namespace)
    assert job["status"]["phase"] == "Pending"
    assert job["status"]["observedGeneration"] == job["metadata"]["generation"] == 1
    accepted = condition(job, "Accepted")
    assert accepted and accepted["status"] == "True" and accepted["observedGeneration"] == 1
    # The API server filled in the defaults the models declare.
    assert job["spec"]["training"]["packing"] is True and job["spec"]["lora"]["bias"] == "none"
    table = installed.kubectl("get", "ftj", "-n", namespace).stdout
    assert table.split("\n")[0].split() == ["NAME", "PHASE", "PROGRESS", "LOSS", "ADAPTER", "AGE"]
    assert "medical-qwen7b-v1   Pending" in table
    everything = installed.kubectl("get", "loraplane", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(everything) == sorted(
        [
            "finetunejob.loraplane.io/finance-qwen7b-v1",
            "finetunejob.loraplane.io/medical-qwen7b-v1",
            "modelserver.loraplane.io/qwen7b",
        ]
    )


def test_kubectl_explain_shows_field_descriptions(installed: Cluster) -> None:
    out = installed.kubectl("explain", "finetunejob.spec.lora").stdout
    assert "LoRA adapter shape" in out and "targetModules" in out
    rank = installed.kubectl("explain", "ftj.spec.lora.r").stdout
    assert "LoRA rank (1-256)" in rank


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(obj: dict[str, Any]) -> None:
        node = obj
        keys = path.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        if value is _DELETE:
            node.pop(keys[-1])
        else:
            node[keys[-1]] = value

    return mutate


_DELETE = object()

# (id, mutation of a valid FineTuneJob, text the API server's error must contain)
API_REJECTS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("rank-zero", _set("spec.lora.r", 0), "spec.lora.r"),
    ("rank-too-big", _set("spec.lora.r", 1024), "spec.lora.r"),
    ("rank-wrong-type", _set("spec.lora.r", "eight"), "spec.lora.r"),
    ("alpha-zero", _set("spec.lora.alpha", 0), "spec.lora.alpha"),
    ("dropout-one", _set("spec.lora.dropout", 1.0), "spec.lora.dropout"),
    ("negative-lr", _set("spec.training.learningRate", -2e-5), "spec.training.learningRate"),
    ("zero-epochs", _set("spec.training.epochs", 0), "spec.training.epochs"),
    ("zero-batch", _set("spec.training.batchSize", 0), "spec.training.batchSize"),
    ("short-seq", _set("spec.training.maxSeqLength", 4), "spec.training.maxSeqLength"),
    ("unknown-optimizer", _set("spec.training.optimizer", "adam"), "spec.training.optimizer"),
    ("unknown-scheme", _set("spec.baseModel.uri", "s3://models/qwen"), "spec.baseModel.uri"),
    ("dataset-traversal", _set("spec.dataset.uri", "pvc://data/../../etc/passwd"), "spec.dataset.uri"),
    ("base-model-traversal", _set("spec.baseModel.uri", "file:///models/../etc"), "spec.baseModel.uri"),
    ("held-out-traversal", _set("spec.evaluation.heldOutUri", "pvc://data/./x/../../y"), "spec.evaluation.heldOutUri"),
    ("output-uri-traversal", _set("spec.output.uri", "oci://registry.example.com/a/../b"), "spec.output.uri"),
    ("output-login-without-uri", _set("spec.output.credentialsSecret", "push"), "set spec.output.uri"),
    ("missing-base-model", _set("spec.baseModel", _DELETE), "spec.baseModel"),
    ("unknown-field", _set("spec.lora.rank", 8), 'unknown field "spec.lora.rank"'),
    (
        "two-templates",
        _set("spec.dataset.template", {"builtin": "medical-en", "inline": "You are a doctor."}),
        "spec.dataset.template",
    ),
    ("name-too-long", _set("metadata.name", "x" * 60), "metadata.name"),
]


@pytest.mark.parametrize(
    ("mutate", "expected"), [(m, e) for _, m, e in API_REJECTS], ids=[i for i, _, _ in API_REJECTS]
)
def test_api_server_rejects_malformed_finetunejob(
    installed: Cluster, namespace: str, mutate: Callable[[dict[str, Any]], None], expected: str
) -> None:
    obj = minimal_ftj("bad")
    mutate(obj)
    proc = installed.apply(obj, "-n", namespace, check=False)
    assert proc.returncode != 0, f"accepted: {proc.stdout}"
    assert expected in proc.stderr, proc.stderr
    assert installed.kubectl("get", "ftj", "-n", namespace, "-o", "name").stdout.strip() == ""


def test_api_server_rejects_adapter_with_two_sources(installed: Cluster, namespace: str) -> None:
    ms = example("modelserver.yaml")
    ms["spec"]["adapters"][0]["source"]["fineTuneJob"] = "medical-qwen7b-v1"  # and a selector
    proc = installed.apply(ms, "-n", namespace, check=False)
    assert proc.returncode != 0
    assert "spec.adapters[0].source" in proc.stderr and "exactly one of fineTuneJob, uri or selector" in proc.stderr


def test_api_server_admits_an_oci_adapter_only_pinned_by_digest(installed: Cluster, namespace: str) -> None:
    ms = example("modelserver.yaml")
    pinned = f"oci://registry.example.com/adapters/medical@sha256:{'a' * 64}"
    ms["spec"]["adapters"][0]["source"] = {"uri": pinned}
    installed.apply(ms, "-n", namespace)  # every vLLM pod has the adapter agent, which pulls it
    tagged = "oci://registry.example.com/adapters/medical:v1"  # a tag can move: not a version
    ms["spec"]["adapters"][0]["source"] = {"uri": tagged}
    proc = installed.apply(ms, "-n", namespace, check=False)
    assert proc.returncode != 0 and "spec.adapters[0].source.uri" in proc.stderr


# (id, mutation, field named in the operator's condition message)
OPERATOR_REJECTS: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("dora", _set("spec.lora.useDora", True), "spec.lora.useDora"),
    ("bias", _set("spec.lora.bias", "all"), "spec.lora.bias"),
    ("fp16-on-cpu", _set("spec.training.precision", "fp16"), "spec.training.precision"),
    (
        "qwen1-q-proj",
        lambda o: o["spec"].update(
            baseModel={"uri": "modelscope://qwen/Qwen-7B-Chat@v1.0.4", "trustRemoteCode": True},
            lora={"targetModules": ["q_proj", "v_proj"]},
        ),
        "spec.lora.targetModules",
    ),
    (
        "remote-code",
        _set("spec.baseModel.uri", "modelscope://qwen/Qwen-7B@v1.0.4"),
        "spec.baseModel.trustRemoteCode",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "field"), [(m, f) for _, m, f in OPERATOR_REJECTS], ids=[i for i, _, _ in OPERATOR_REJECTS]
)
def test_operator_marks_unservable_spec_invalid(
    installed: Cluster,
    operator: OperatorProcess,
    namespace: str,
    mutate: Callable[[dict[str, Any]], None],
    field: str,
) -> None:
    obj = minimal_ftj("unservable")
    mutate(obj)
    installed.apply(obj, "-n", namespace)
    installed.kubectl("wait", "-n", namespace, "--for=condition=Failed", "--timeout=60s", "ftj/unservable")
    job = installed.get("ftj", "unservable", "-n", namespace)
    failed, accepted = condition(job, "Failed"), condition(job, "Accepted")
    assert failed and failed["reason"] == "InvalidSpec" and field in failed["message"]
    assert accepted and accepted["status"] == "False"
    assert job["status"]["phase"] == "Failed"
    events = poll(
        "an Event naming the field",
        lambda: [
            e
            for e in installed.get("events", "-n", namespace, "--field-selector", "involvedObject.name=unservable")[
                "items"
            ]
            if field in e.get("message", "")
        ],
    )
    assert events[0]["type"] == "Warning"


def test_modelserver_cross_namespace_refused_by_operator(
    installed: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    ms = example("modelserver.yaml")
    ms["spec"]["adapters"][1]["source"]["namespace"] = "someone-else"
    installed.apply(ms, "-n", namespace)
    installed.kubectl("wait", "-n", namespace, "--for=condition=Failed", "--timeout=60s", "ms/qwen7b")
    failed = condition(installed.get("ms", "qwen7b", "-n", namespace), "Failed")
    assert failed and "spec.adapters[1].source.namespace" in failed["message"]


def test_identity_fields_immutable_but_suspend_editable(
    installed: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    obj = minimal_ftj("immutable")
    installed.apply(obj, "-n", namespace)
    installed.kubectl("wait", "-n", namespace, "--for=condition=Accepted", "--timeout=60s", "ftj/immutable")
    for path, value, message in [
        ("spec.lora.r", 16, "spec.lora is immutable"),
        ("spec.baseModel.uri", "hf://Qwen/Qwen2.5-7B-Instruct@main", "spec.baseModel is immutable"),
        ("spec.training.learningRate", 1e-3, "spec.training is immutable"),
        ("spec.dataset.uri", "builtin://finance", "spec.dataset is immutable"),
    ]:
        edited = copy.deepcopy(obj)
        _set(path, value)(edited)
        proc = installed.apply(edited, "-n", namespace, check=False)
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr
    edited = copy.deepcopy(obj)
    edited["spec"]["suspend"] = True
    installed.apply(edited, "-n", namespace)
    poll(
        "observedGeneration 2",
        lambda: installed.get("ftj", "immutable", "-n", namespace).get("status", {}).get("observedGeneration") == 2,
    )


def _snapshot(cluster: Cluster, namespace: str, *, skip: str = "") -> tuple[dict[str, str], int]:
    """resourceVersion per FineTuneJob and the number of FineTuneJob Events, both without object `skip`."""
    objs = cluster.get("ftj", "-n", namespace)["items"]
    events = cluster.get("events", "-n", namespace, "--field-selector", "involvedObject.kind=FineTuneJob")["items"]
    versions = {o["metadata"]["name"]: o["metadata"]["resourceVersion"] for o in objs if o["metadata"]["name"] != skip}
    return versions, sum(1 for e in events if e["involvedObject"]["name"] != skip)


def test_killed_operator_restarts_without_reprocessing(
    installed: Cluster, operator: OperatorProcess, namespace: str
) -> None:
    for name in ("first", "second"):
        installed.apply(minimal_ftj(name), "-n", namespace)
    for name in ("first", "second"):
        installed.kubectl("wait", "-n", namespace, "--for=condition=Accepted", "--timeout=60s", f"ftj/{name}")
        # Settled: the adapter claim the operator created never binds here, so the pod stays unschedulable.
        installed.kubectl(
            "wait",
            "-n",
            namespace,
            "--timeout=90s",
            f"ftj/{name}",
            '--for=jsonpath={.status.conditions[?(@.type=="Running")].reason}=Unschedulable',
        )
    before = _snapshot(installed, namespace)
    operator.kill()
    operator.start()
    # A new object is handled: the restarted operator is active and past its resume pass.
    installed.apply(minimal_ftj("third"), "-n", namespace)
    installed.kubectl("wait", "-n", namespace, "--for=condition=Accepted", "--timeout=90s", "ftj/third")
    versions, events = _snapshot(installed, namespace, skip="third")  # one read: third's Events keep coming
    assert versions == before[0], "existing objects were written again"
    assert events == before[1], "the restart posted new Events for old objects"
    assert (
        installed.kubectl("get", "ftj", "-n", namespace, "-o", "name")
        .stdout.split()
        .count("finetunejob.loraplane.io/first")
        == 1
    )


def test_peering_object_lists_the_operator(installed: Cluster, operator: OperatorProcess) -> None:
    peering = poll(
        "the operator in the peering object",
        lambda: installed.get("clusterkopfpeering", "loraplane").get("status"),
        timeout=60,
    )
    assert len(peering) >= 1
