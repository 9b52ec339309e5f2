"""The install's bootstrap Job closes the router by default: against a real API server, with the shipped RBAC
(create Secrets only), it creates the admin key and the API keys once and never touches existing Secrets."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from loraplane.serving.router.auth import load_keys
from tests.support.kube import REPO, Cluster, new_namespace, service_account_kubeconfig

MANIFEST = REPO / "manifests" / "base" / "bootstrap.yaml"
SA = "loraplane-bootstrap"


def rbac_in(namespace: str) -> list[dict[str, Any]]:
    """The manifest's ServiceAccount, Role and RoleBinding, moved to `namespace`."""
    docs = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d["kind"] != "Job"]
    for doc in docs:
        doc["metadata"]["namespace"] = namespace
        for subject in doc.get("subjects", []):
            subject["namespace"] = namespace
    return docs


def bootstrap(kubeconfig: Path, namespace: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), "LORAPLANE_NAMESPACE": namespace}
    command = [sys.executable, "-m", "loraplane.operator.bootstrap"]  # the Job's command (bootstrap.yaml)
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


def secret_data(c: Cluster, namespace: str, name: str) -> dict[str, str]:
    data = c.get("secret", name, "-n", namespace)["data"]
    return {k: base64.b64decode(v).decode() for k, v in data.items()}


def test_bootstrap_creates_both_keys_once_and_only_with_create(cluster: Cluster, tmp_path: Path) -> None:
    ns = new_namespace(cluster)
    for doc in rbac_in(ns):
        cluster.apply(doc)
    kubeconfig = service_account_kubeconfig(cluster, ns, SA, tmp_path / "sa.kubeconfig")
    user = f"system:serviceaccount:{ns}:{SA}"
    for verb in ("get", "list", "update", "patch", "delete", "watch"):
        can = cluster.kubectl("auth", "can-i", verb, "secrets", "-n", ns, "--as", user, check=False)
        assert can.stdout.strip() == "no", f"the bootstrap Job may {verb} Secrets"

    first = bootstrap(kubeconfig, ns)
    assert first.returncode == 0, first.stderr
    assert first.stderr.count("created") == 2, first.stderr
    admin = secret_data(cluster, ns, "loraplane-router-admin")
    keys = secret_data(cluster, ns, "loraplane-router-keys")
    assert len(admin["key"]) >= 40
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(keys["keys.json"])
    parsed = load_keys(keys_file)  # the router's own reader accepts it
    assert parsed is not None and list(parsed.values()) == [None]  # one key, every model
    assert admin["key"] not in parsed

    again = bootstrap(kubeconfig, ns)
    assert again.returncode == 0, again.stderr
    assert again.stderr.count("exists; left as it is") == 2, again.stderr
    assert secret_data(cluster, ns, "loraplane-router-admin") == admin
    assert secret_data(cluster, ns, "loraplane-router-keys") == keys


def test_a_key_made_by_hand_is_kept(cluster: Cluster, tmp_path: Path) -> None:
    ns = new_namespace(cluster)
    for doc in rbac_in(ns):
        cluster.apply(doc)
    mine = json.dumps({"team-a-key": {"models": ["medical"]}})
    literal = f"--from-literal=keys.json={mine}"
    cluster.kubectl("create", "secret", "generic", "loraplane-router-keys", "-n", ns, literal)
    proc = bootstrap(service_account_kubeconfig(cluster, ns, SA, tmp_path / "sa.kubeconfig"), ns)
    assert proc.returncode == 0, proc.stderr
    assert secret_data(cluster, ns, "loraplane-router-keys") == {"keys.json": mine}
    assert "key" in secret_data(cluster, ns, "loraplane-router-admin")  # the missing one is still made
