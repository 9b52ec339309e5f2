"""Fixtures for the controller tests against the real control plane (helpers: tests/support/kube.py)."""

from __future__ import annotations

import pytest

from tests.support.kube import Cluster, Kube, add_store
from tests.support.ms_helpers import StubRouter


@pytest.fixture
def kube(installed: Cluster, namespace: str) -> Kube:
    """The namespace with an adapter store (a PVC bound to a hostPath PV, as no provisioner runs here)."""
    add_store(installed, namespace)
    return Kube(installed, namespace)


@pytest.fixture
def stub_router() -> type[StubRouter]:
    """`with stub_router() as stub:` the router's admin API, stubbed, on a free loopback port for the block
    (tests/support/ms_helpers.py). Tests that take it are marked `network`."""
    return StubRouter
