"""Session fixtures: the real control plane, our manifests installed in it, the operator running; a tiny model and
a learnable toy dataset for the trainer and local-mode tests; local mode as a process.

Markers follow from fixtures: a test is marked by what the fixtures it uses start (`STARTS`), so the markers
cannot drift from what the test does. Harnesses shared with the benchmarks are in tests/support/.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import local_mode
from tests.support.kube import (
    REPO,
    Cluster,
    OperatorProcess,
    new_namespace,
    service_account_kubeconfig,
    session_cluster,
)
from tests.support.registry import Registry, private_registry

# The serving fixtures (tiny base, adapters, the vLLM pair) are shared by tests/serving and tests/operator; the
# process plugin stops the session on SIGTERM/SIGHUP as on Ctrl-C and fails it if a process it started outlives it.
pytest_plugins = ["tests.serving.fixtures", "tests.procs.plugin"]

# What each marker means, as the fixtures that start it. A test using one of these, directly or through another
# fixture, gets the marker; `make test-unit` leaves out every test with one (and the `slow` ones).
STARTS: dict[str, frozenset[str]] = {
    # a real kube-apiserver (tests/e2e/conftest.py: `real_cluster`, with a real node)
    "cluster": frozenset({"cluster", "real_cluster"}),
    # real vLLM processes (tests/serving/fixtures.py; `loraplane serve` and `demo` start one too)
    # (`loraplane`: Loraplane installed on the real node, whose tests run vLLM and the trainer in pods)
    "vllm": frozenset({"vllm_pair", "vllm_api_server", "loraplane_serve", "loraplane_demo", "loraplane"}),
    # the trainer image's programs as processes (`python -m loraplane.trainer` and `.fetch`, tests/trainer/conftest.py),
    # or `loraplane run`/`demo`, which start the trainer
    "trainer": frozenset({"trainer", "loraplane_cli", "long_job", "loraplane"}),
    # a listening socket on loopback, or HTTP to a server process (and every `cluster` and `vllm` test)
    "network": frozenset(
        {
            "serve_router",  # the router app on a real port (tests/serving/fixtures.py)
            "serve_scripted",  # scripted vLLM stand-ins on real ports (tests/serving/fixtures.py)
            "serve_tcp",  # a raw TCP server scripted per connection (tests/serving/test_upstream.py)
            "stub_router",  # the router's admin API, stubbed (tests/operator/conftest.py)
            "stub",  # the same, for a module (tests/operator/test_modelserver_controller.py)
            "router",  # the router as a process (tests/operator/test_modelserver_e2e.py, tests/e2e/)
            "router_process",  # the same, signalled (tests/procs/test_entry_points.py)
            "silent_server",  # a socket that accepts and never answers (tests/procs/test_entry_points.py)
            "harness_session",  # a pytest session holding the router (tests/procs/test_entry_points.py)
            "fake_hub",  # a stand-in for huggingface.co and modelscope.cn (tests/trainer/test_models.py)
            "package_index",  # uv resolving against the package index (tests/test_layout.py)
            "oci_registry",  # docker-registry on a loopback port (tests/support/registry.py)
            "pod_registry",  # the same on the real node's bridge, for pods (tests/e2e/test_registry_path.py)
            "s3",  # versitygw, an S3-compatible server, on a loopback port (tests/support/s3.py)
        }
    ),
}


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        markers = {marker for marker, fixtures in STARTS.items() if used & fixtures}
        if markers & {"cluster", "vllm"}:
            markers.add("network")
        for marker in sorted(markers):
            item.add_marker(marker)


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A real kube-apiserver/etcd/controller-manager/scheduler + KWOK nodes, once per session.

    No skip: if it cannot start, every test that needs it errors with the reason.
    """
    with session_cluster(tmp_path_factory.mktemp("cluster")) as c:
        yield c


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
    name = new_namespace(installed)
    yield name
    installed.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def examples_dir() -> Path:
    return REPO / "examples"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama (head_dim 32) with a tokenizer trained on the fly, saved as a plain checkpoint."""
    from tests.support.tiny import build_tiny_base  # transformers: imported by the sessions that need it

    return build_tiny_base(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def oci_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """An open OCI registry (docker-registry) on a loopback port for the session (tests/support/registry.py)."""
    with private_registry(tmp_path_factory.mktemp("registry")) as registry:
        yield registry


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


@pytest.fixture(scope="session")
def loraplane_cli() -> local_mode.LoraplaneCli:
    """`loraplane_cli(store, *args, timeout=600, env=None)`: the `loraplane` command run to the end, output captured
    (tests/support/local_mode.py). `run` and `demo` start the trainer: tests using this are marked `trainer`."""
    return local_mode.loraplane
