"""The real-node cluster, the images in the local registry and the install, shared by tests/e2e/.

`make test` builds what these need first (`make node-deps images`); run alone, the fixtures say what is
missing. LORAPLANE_REAL_NODE_KUBECONFIG points the tests at a real-node cluster that is already up
(`hack/cluster.sh up --real-node`) instead of starting one for the session.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.kube import Cluster, session_cluster
from tests.support.real_node import IMAGES, REGISTRY, install_local_overlay, registry_has, restricted_namespace


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
    with session_cluster(tmp_path_factory.mktemp("real-node"), real_node=True) as c:
        yield c


@pytest.fixture(scope="session")
def loraplane(real_cluster: Cluster, local_images: str) -> Cluster:
    """Loraplane installed with manifests/overlays/local; the operator and router pods Ready."""
    install_local_overlay(real_cluster)
    return real_cluster


@pytest.fixture(scope="module")
def user_namespace(real_cluster: Cluster) -> Iterator[str]:
    """A namespace for the user's objects that enforces Pod Security `restricted`."""
    name = restricted_namespace(real_cluster, "team")
    yield name
    real_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
