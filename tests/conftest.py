"""Session fixtures: the real control plane, our manifests installed in it, the operator running."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kube_harness import REPO, Cluster, OperatorProcess, poll, service_account_kubeconfig, start_cluster


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
