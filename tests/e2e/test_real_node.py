"""Smoke check of the real node (`hack/cluster.sh up --real-node`, docs/real-node.md).

A pod from an image in the local registry runs on the real node in a namespace that enforces Pod
Security `restricted`; `kubectl logs`, `exec` and `port-forward` work; a pod resolves and reaches the
`kubernetes` Service and another pod's ClusterIP Service by DNS name; a PVC binds through local-path.

Runs in `make test`, which builds the node's binaries and the images first (cached outside the clone).
Set LORAPLANE_REAL_NODE_KUBECONFIG to use a real-node cluster that is already up.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.kube import REPO, Cluster, free_port_base, poll
from tests.support.real_node import NODE, REGISTRY, TAG, restricted_namespace, wait_pods_ready

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

IMAGE = os.environ.get("LORAPLANE_SMOKE_IMAGE", f"{REGISTRY}/router:{TAG}")

RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
}

SERVER = """\
import http.server, os
os.chdir("/srv")
http.server.ThreadingHTTPServer(("", 8080), http.server.SimpleHTTPRequestHandler).serve_forever()
"""

# Resolves and reaches both Services by name; prints one JSON line, then stays up for exec.
CLIENT = """\
import json, socket, ssl, time, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
out = {"ip": {name: socket.gethostbyname(name) for name in ("kubernetes.default.svc.cluster.local", "web")}}
ctx = ssl.create_default_context(cafile=f"{sa}/ca.crt")
req = urllib.request.Request("https://kubernetes.default.svc/version",
                             headers={"Authorization": "Bearer " + open(f"{sa}/token").read()})
out["version"] = json.load(urllib.request.urlopen(req, context=ctx, timeout=10))["gitVersion"]
out["web"] = urllib.request.urlopen("http://web/hello.txt", timeout=10).read().decode().strip()
print("RESULT " + json.dumps(out), flush=True)
time.sleep(3600)
"""


def pod(name: str, script: str, *, volumes: list[dict] | None = None, mounts: list[dict] | None = None) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "securityContext": RESTRICTED_POD,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": IMAGE,
                    "command": ["python", "-c", script],
                    "securityContext": RESTRICTED_CONTAINER,
                    "volumeMounts": mounts or [],
                }
            ],
            "volumes": volumes or [],
        },
    }


@pytest.fixture
def restricted_ns(real_cluster: Cluster, local_images: str) -> Iterator[str]:
    name = restricted_namespace(real_cluster, "smoke")
    yield name
    real_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def wait_ready(c: Cluster, ns: str, name: str, timeout: float = 300) -> dict:
    return wait_pods_ready(c, ns, f"app={name}", 1, timeout)[0]


def test_restricted_pod_on_real_node(real_cluster: Cluster, restricted_ns: str) -> None:
    c, ns = real_cluster, restricted_ns
    # Pod Security `restricted` is enforced: a pod asking for root is refused at admission.
    bad = pod("root", "pass")
    bad["spec"]["securityContext"] = {"runAsUser": 0}
    refused = c.apply(bad, "-n", ns, check=False)
    assert refused.returncode != 0 and "restricted" in refused.stderr, refused.stderr

    # A web server pod (files from an emptyDir) behind a ClusterIP Service.
    server = pod(
        "server",
        "import pathlib; pathlib.Path('/srv/hello.txt').write_text('hello from the server pod\\n')\n" + SERVER,
        volumes=[{"name": "srv", "emptyDir": {}}],
        mounts=[{"name": "srv", "mountPath": "/srv"}],
    )
    c.apply(server, "-n", ns)
    c.apply(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": {"app": "server"}, "ports": [{"port": 80, "targetPort": 8080}]},
        },
        "-n",
        ns,
    )
    p = wait_ready(c, ns, "server")
    assert p["spec"]["nodeName"] == NODE

    # A client pod: DNS names of both Services, the apiserver through `kubernetes`, the web Service.
    c.apply(pod("client", CLIENT), "-n", ns)
    wait_ready(c, ns, "client")

    def result() -> dict | None:
        logs = c.kubectl("logs", "client", "-n", ns, check=False).stdout
        m = re.search(r"^RESULT (.*)$", logs, re.M)
        return json.loads(m.group(1)) if m else None

    out = poll("the client pod's RESULT line (kubectl logs)", result, timeout=60, interval=0.5)
    assert out["ip"]["kubernetes.default.svc.cluster.local"] == "10.0.0.1"
    assert out["ip"]["web"] == c.get("service", "web", "-n", ns)["spec"]["clusterIP"]
    assert out["web"] == "hello from the server pod"
    assert out["version"].startswith("v1.")

    # kubectl exec
    assert c.kubectl("exec", "client", "-n", ns, "--", "python", "-c", "print('exec ok')").stdout.strip() == "exec ok"

    # kubectl port-forward
    pf = subprocess.Popen(
        [
            str(c.bin_dir / "kubectl"),
            "--kubeconfig",
            str(c.kubeconfig),
            "port-forward",
            "-n",
            ns,
            "pod/server",
            ":8080",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=c.env,
    )
    try:
        assert pf.stdout is not None
        line = pf.stdout.readline()
        m = re.search(r"127\.0\.0\.1:(\d+)", line)
        assert m, f"port-forward said: {line!r} {pf.stderr.read() if pf.poll() is not None and pf.stderr else ''}"
        body = urllib.request.urlopen(f"http://127.0.0.1:{m.group(1)}/hello.txt", timeout=10).read().decode()
        assert body.strip() == "hello from the server pod"
    finally:
        pf.terminate()
        pf.wait(10)


def test_pvc_binds_through_local_path(real_cluster: Cluster, restricted_ns: str) -> None:
    c, ns = real_cluster, restricted_ns
    c.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "64Mi"}}},
        },
        "-n",
        ns,
    )
    writer = pod(
        "writer",
        "import pathlib, time; p = pathlib.Path('/data/x.txt'); p.write_text('persisted'); "
        "print('WROTE ' + p.read_text(), flush=True); time.sleep(3600)",
        volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
        mounts=[{"name": "data", "mountPath": "/data"}],
    )
    c.apply(writer, "-n", ns)
    wait_ready(c, ns, "writer")
    pvc = c.get("pvc", "data", "-n", ns)
    assert pvc["status"]["phase"] == "Bound"
    assert pvc["spec"]["storageClassName"] == "local-path"
    poll(
        "the writer's WROTE line",
        lambda: "WROTE persisted" in c.kubectl("logs", "writer", "-n", ns, check=False).stdout,
        timeout=60,
    )


def test_a_second_real_node_is_refused_and_its_down_spares_the_first(real_cluster: Cluster, tmp_path: Path) -> None:
    """One real node per machine: a second `up --real-node` stops at the host lock, and the refused
    cluster's `down` leaves the running node's bridge, pods and lock alone."""
    c = real_cluster
    lock = Path("/run/loraplane-real-node.owner")
    owner = lock.read_text()
    script = str(REPO / "hack/cluster.sh")
    env = {
        **c.env,
        "LORAPLANE_CLUSTER_DIR": str(tmp_path / "second"),
        "LORAPLANE_CLUSTER_PORT_BASE": str(free_port_base(10)),
    }
    up = subprocess.run([script, "up", "--real-node"], capture_output=True, text=True, timeout=300, env=env)
    assert up.returncode == 1, up.stderr[-2000:]
    assert f"a real node of the cluster in {owner.strip()} owns this machine's node state" in up.stderr
    down = subprocess.run([script, "down", "--purge"], capture_output=True, text=True, timeout=300, env=env)
    assert down.returncode == 0, down.stderr[-2000:]
    assert "deleting bridge" not in down.stderr and "killing processes" not in down.stderr, down.stderr
    assert lock.read_text() == owner
    assert subprocess.run(["ip", "link", "show", "lpbr0"], capture_output=True).returncode == 0
    node = c.get("node", NODE)
    assert {x["type"]: x["status"] for x in node["status"]["conditions"]}["Ready"] == "True"
    dns = c.get("pods", "-n", "kube-system", "-l", "k8s-app=kube-dns")["items"]
    assert dns and all(p["status"]["phase"] == "Running" for p in dns)
