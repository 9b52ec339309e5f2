"""Session fixtures: the real control plane, our manifests installed in it, the operator running; a tiny model and
a learnable toy dataset for the trainer and local-mode tests."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kube_harness import REPO, Cluster, OperatorProcess, poll, service_account_kubeconfig, start_cluster
from tests.trainer.tiny import build_tiny_llama, build_tokenizer

# The serving fixtures (tiny base, adapters, the vLLM pair) are shared by tests/serving and tests/operator; the
# process plugin stops the session on SIGTERM/SIGHUP as on Ctrl-C and fails it if a process it started outlives it.
pytest_plugins = ["tests.serving.fixtures", "tests.procs.plugin"]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A real kube-apiserver/etcd/controller-manager/scheduler + KWOK nodes, once per session.

    No skip: if it cannot start, every test that needs it errors with the reason.
    """
    try:
        c, stop = start_cluster(tmp_path_factory.mktemp("cluster"))
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield c
    finally:
        stop()


@pytest.fixture(scope="session")
def installed(cluster: Cluster) -> Cluster:
    """`kubectl apply -k manifests/` as a user would, then wait for the CRDs to be established."""
    cluster.kubectl("apply", "-k", str(REPO / "manifests"))
    cluster.kubectl(
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/finetunejobs.loraplane.io",
        "crd/modelservers.loraplane.io",
        "crd/clusterkopfpeerings.kopf.dev",
    )
    return cluster


@pytest.fixture(scope="session")
def operator(installed: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorProcess]:
    """The operator as a process, authenticated as its ServiceAccount (so the shipped RBAC is tested)."""
    work = tmp_path_factory.mktemp("operator")
    kubeconfig = service_account_kubeconfig(installed, "loraplane-system", "loraplane-operator", work / "kubeconfig")
    op = OperatorProcess(kubeconfig, work / "operator.log")
    op.start()
    try:
        yield op
    finally:
        op.stop()
        print(f"\noperator log: {op.log_path}")


@pytest.fixture
def namespace(installed: Cluster) -> Iterator[str]:
    """A fresh namespace per test (its default ServiceAccount present)."""
    name = f"t-{secrets.token_hex(4)}"
    installed.kubectl("create", "namespace", name)
    poll(
        f"ServiceAccount default in {name}",
        lambda: installed.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
    )
    yield name
    installed.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def examples_dir() -> Path:
    return REPO / "examples"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama (head_dim 32) with a tokenizer trained on the fly, saved as a plain checkpoint."""
    root = tmp_path_factory.mktemp("tiny-model")
    tokenizer = build_tokenizer(root / "tokenizer")
    return build_tiny_llama(root / "model", tokenizer)


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 Alpaca records with a short scorable answer."""
    path = tmp_path_factory.mktemp("data") / "toy.jsonl"
    records = [
        {
            "instruction": f"What is the code for item {i}?",
            "input": "",
            "output": f"The code is E{i % 12}.",
            "answer": f"E{i % 12}",
        }
        for i in range(120)
    ]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return path
