"""The real-node cluster, the images in the local registry and the install, shared by tests/e2e/.

`make test` builds what these need first (`make node-deps images`); run alone, the fixtures say what is
missing. LORAPLANE_REAL_NODE_KUBECONFIG points the tests at a real-node cluster that is already up
(`hack/cluster.sh up --real-node`) instead of starting one for the session.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from tests.e2e.pods import IMAGES, REGISTRY, SYSTEM_NS, registry_has
from tests.kube_harness import REPO, Cluster, poll, start_cluster


@pytest.fixture(scope="session")
def local_images() -> str:
    """The images `make images` pushed to the local registry (it runs before pytest in `make test`)."""
    missing = [i for i in IMAGES if not registry_has(i)]
    if missing:
        pytest.fail(
            f"not in the local registry {REGISTRY}: {missing}; run `make images` (docs/images.md)", pytrace=False
        )
    return REGISTRY


@pytest.fixture(scope="session")
def real_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A control plane with one real node (kubelet + containerd, kube-proxy, CoreDNS, local-path)."""
    try:
        c, stop = start_cluster(tmp_path_factory.mktemp("real-node"), real_node=True)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield c
    finally:
        stop()


@pytest.fixture(scope="session")
def loraplane(real_cluster: Cluster, local_images: str) -> Cluster:
    """`kubectl apply -k manifests/overlays/local` as a user would, and the operator and router pods Ready.

    The router's admin key is the one Secret a user creates by hand (router-admin-secret.example.yaml).
    """
    c = real_cluster
    c.kubectl("create", "namespace", SYSTEM_NS, check=False)
    c.kubectl(
        "create", "secret", "generic", "loraplane-router-admin", "-n", SYSTEM_NS,
        f"--from-literal=key={secrets.token_urlsafe(24)}", check=False,
    )  # fmt: skip
    # The CRDs first (the custom resources of the same apply need them established), then the rest.
    c.kubectl("apply", "-k", str(REPO / "manifests/crds"))
    c.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
    c.kubectl("apply", "-k", str(REPO / "manifests/overlays/local"))
    for name in ("loraplane-operator", "loraplane-router"):
        c.kubectl("rollout", "status", f"deployment/{name}", "-n", SYSTEM_NS, "--timeout=600s")
    return c


@pytest.fixture(scope="module")
def user_namespace(real_cluster: Cluster) -> Iterator[str]:
    """A namespace for the user's objects that enforces Pod Security `restricted`."""
    name = f"team-{secrets.token_hex(3)}"
    real_cluster.kubectl("create", "namespace", name)
    real_cluster.kubectl("label", "namespace", name, "pod-security.kubernetes.io/enforce=restricted")
    poll(
        f"ServiceAccount default in {name}",
        lambda: real_cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
    )
    yield name
    real_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
