"""Test harness: a real control plane (hack/cluster.sh), the operator as a real process, and polling helpers over
kubectl for one namespace (`Kube`, `ftj`).

Set LORAPLANE_TEST_KUBECONFIG to run the same tests against any cluster you already have (the CRDs
and RBAC are applied to it); otherwise a control plane built from Go modules is started on loopback.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from loraplane.serving import proctree

REPO = Path(__file__).resolve().parents[2]
KWOK_DURATION = "kwok.loraplane.io/duration"
HOLD_RUNNING = "100000h"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_port_base(span: int = 8) -> int:
    """A port p such that p..p+span-1 are all free on loopback right now."""
    for _ in range(200):
        base = 20000 + secrets.randbelow(20000)
        try:
            for port in range(base, base + span):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free port range on loopback")


def poll(what: str, check: Callable[[], Any], timeout: float = 60, interval: float = 0.25) -> Any:
    """Call `check` until it returns something truthy; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last value: {last!r})")


@dataclass
class Cluster:
    kubeconfig: Path
    bin_dir: Path
    env: dict[str, str] = field(default_factory=dict)

    def kubectl(
        self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
        return proc

    def get(self, *args: str) -> dict[str, Any]:
        return dict(yaml.safe_load(self.kubectl("get", "-o", "yaml", *args).stdout))

    def apply(
        self, manifest: dict[str, Any] | str, *extra: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        return self.kubectl("apply", "-f", "-", *extra, input=text, check=check)


def build_bin_dir() -> Path:
    proc = subprocess.run([str(REPO / "hack/build-control-plane.sh")], capture_output=True, text=True, timeout=3600)
    if proc.returncode != 0:
        raise RuntimeError(f"building the control plane failed:\n{proc.stderr[-4000:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


def start_cluster(state_dir: Path, *, real_node: bool = False) -> tuple[Cluster, Callable[[], None]]:
    """Start (or attach to) a cluster; returns it and a function that stops it.

    real_node: `hack/cluster.sh up --real-node` (a kubelet + containerd node next to the KWOK nodes; the
    first start on a machine also installs Debian packages and builds the node's binaries and images).
    """
    bin_dir = build_bin_dir()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    external = os.environ.get("LORAPLANE_REAL_NODE_KUBECONFIG" if real_node else "LORAPLANE_TEST_KUBECONFIG")
    if external:
        return Cluster(Path(external), bin_dir, env), lambda: None
    # a real node uses ports base+6..base+9 too (kubelet, kube-proxy)
    port_base = free_port_base(10 if real_node else 8)
    env.update(LORAPLANE_CLUSTER_DIR=str(state_dir), LORAPLANE_CLUSTER_PORT_BASE=str(port_base))
    script = str(REPO / "hack/cluster.sh")
    up = [script, "up", "--real-node"] if real_node else [script, "up"]
    proc = subprocess.run(up, capture_output=True, text=True, timeout=3600 if real_node else 900, env=env)
    if proc.returncode != 0:
        subprocess.run([script, "down"], capture_output=True, timeout=300, env=env)
        raise RuntimeError(
            f"the control plane did not start (hack/cluster.sh up exited {proc.returncode}):\n{proc.stderr[-6000:]}"
        )
    kubeconfig = Path(proc.stdout.strip().splitlines()[-1])
    # hack/cluster.sh starts each component in a session of its own, to outlive the script: the guard stops them
    # if this process dies before `down` does
    components = {f.stem: int(f.read_text()) for f in (state_dir / "pids").glob("*.pid")}
    for name, pid in components.items():
        proctree.adopt(pid, name)

    def stop() -> None:
        # a failed down leaves host state (mounts, the real node's lock) behind: the run's summary says so
        timeout = 300 if real_node else 120
        down = subprocess.run([script, "down"], capture_output=True, text=True, timeout=timeout, env=env)
        if down.returncode != 0:
            msg = f"hack/cluster.sh down of {state_dir} exited {down.returncode}:\n{down.stderr[-3000:]}"
            warnings.warn(msg, stacklevel=2)
        for pid in components.values():
            proctree.release(pid)

    return Cluster(kubeconfig, bin_dir, env), stop


def service_account_kubeconfig(cluster: Cluster, namespace: str, name: str, out: Path) -> Path:
    """A kubeconfig that authenticates as a ServiceAccount (so tests exercise the shipped RBAC)."""
    token = cluster.kubectl("create", "token", name, "-n", namespace, "--duration", "6h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    ctx = admin["contexts"][0]["context"]
    cl = next(c for c in admin["clusters"] if c["name"] == ctx["cluster"])
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cl],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": name, "context": {"cluster": cl["name"], "user": name}}],
        "current-context": name,
    }
    # Relative certificate paths in the admin kubeconfig are relative to its own folder.
    ca = cl["cluster"].get("certificate-authority")
    if ca and not os.path.isabs(ca):
        cl["cluster"]["certificate-authority"] = str(cluster.kubeconfig.parent / ca)
    out.write_text(yaml.safe_dump(config))
    return out


class OperatorProcess:
    """`python -m loraplane.operator` against the test cluster, started, killed and restarted at will."""

    def __init__(self, kubeconfig: Path, log_path: Path, env: dict[str, str] | None = None) -> None:
        self.kubeconfig = kubeconfig
        self.log_path = log_path
        self.extra_env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        self.metrics_port = free_port()
        self.starts = 0

    def start(self) -> None:
        env = {
            **os.environ,
            "KUBECONFIG": str(self.kubeconfig),
            "LORAPLANE_OPERATOR_LIVENESS_HOST": "127.0.0.1",
            "LORAPLANE_OPERATOR_LIVENESS_PORT": str(self.port),
            "LORAPLANE_OPERATOR_METRICS_PORT": str(self.metrics_port),
            # Training pods stay Running on KWOK until a test annotates them (see hack/kwok/pod-stages.yaml).
            "LORAPLANE_OPERATOR_POD_ANNOTATIONS": json.dumps({KWOK_DURATION: HOLD_RUNNING}),
            **self.extra_env,
        }
        self.starts += 1
        log = self.log_path.open("ab")
        log.write(f"\n===== operator start #{self.starts} =====\n".encode())
        log.flush()
        self.proc = proctree.spawn(
            [sys.executable, "-m", "loraplane.operator"],
            name="operator",
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
        poll("the operator's liveness endpoint", self._alive, timeout=90)

    def _alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"the operator exited early; log:\n{self.log()[-4000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def kill(self) -> None:
        """kill -9: no chance to clean up, as when a node dies."""
        if self.proc:
            proctree.kill(self.proc)

    def stop(self) -> None:
        if self.proc:
            proctree.stop(self.proc, 30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def store_host_dir(namespace: str) -> Path:
    """Where `add_store`'s volume of `namespace` lives on the host by default (its hostPath)."""
    return Path(f"/tmp/{namespace}-store")


def add_store(cluster: Cluster, namespace: str, host_dir: Path | None = None) -> None:
    """PVC `store` in `namespace`, bound to a hostPath PV (no provisioner runs in the test cluster)."""
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {"name": f"{namespace}-store"},
            "spec": {
                "capacity": {"storage": "1Gi"},
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "manual",
                "hostPath": {"path": str(host_dir or store_host_dir(namespace))},
                "claimRef": {"namespace": namespace, "name": "store"},
            },
        }
    )
    cluster.apply(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "store", "namespace": namespace},
            "spec": {
                "accessModes": ["ReadWriteMany"],
                "storageClassName": "manual",
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
    )


def new_namespace(cluster: Cluster) -> str:
    """A fresh namespace (its default ServiceAccount present)."""
    name = f"t-{secrets.token_hex(4)}"
    cluster.kubectl("create", "namespace", name)
    poll(
        f"ServiceAccount default in {name}",
        lambda: cluster.kubectl("get", "sa", "default", "-n", name, check=False).returncode == 0,
    )
    return name


# ------------------------------------------------------------------------------------------ FineTuneJobs


def ftj(name: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "baseModel": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct@main"},
        "dataset": {"uri": "builtin://medical"},
        "resources": {"gpus": 1},
        "output": {"storageClaim": "store"},
    }
    body.update(spec)
    return {"apiVersion": "loraplane.io/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": name}, "spec": body}


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions", []) if c["type"] == type_), None)


def assert_applied_child_of(child: dict[str, Any], owner: dict[str, Any]) -> None:
    """`child` was server-side applied by the operator and is controlled by `owner` (garbage-collected with it)."""
    (ref,) = child["metadata"]["ownerReferences"]
    meta = owner["metadata"]
    assert (ref["kind"], ref["name"], ref["uid"], ref["controller"]) == (owner["kind"], meta["name"], meta["uid"], True)
    managers = [(m["manager"], m["operation"]) for m in child["metadata"]["managedFields"]]
    assert ("loraplane-operator", "Apply") in managers, managers


def no_room_for(resource: str) -> dict[str, Any]:
    """A ResourceQuota that allows no object of `resource` (e.g. count/jobs.batch): its creates get 403."""
    name = "no-" + resource.removeprefix("count/").split(".")[0]
    return {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": name}, "spec": {"hard": {resource: "0"}}}


class Kube:
    """Small, polling helpers over kubectl for one namespace."""

    def __init__(self, cluster: Cluster, namespace: str) -> None:
        self.c, self.ns = cluster, namespace

    def get(self, *args: str) -> dict[str, Any]:
        return self.c.get(*args, "-n", self.ns)

    def maybe(self, kind: str, name: str) -> dict[str, Any] | None:
        proc = self.c.kubectl("get", kind, name, "-n", self.ns, "-o", "json", "--show-managed-fields", check=False)
        return json.loads(proc.stdout) if proc.returncode == 0 else None

    def pods(self, ftj_name: str) -> list[dict[str, Any]]:
        items = self.get("pods", "-l", f"loraplane.io/finetunejob={ftj_name}")["items"]
        return sorted(items, key=lambda p: p["metadata"]["creationTimestamp"])

    def running_pod(self, ftj_name: str, exclude: set[str] | None = None, timeout: float = 90) -> dict[str, Any]:
        def find() -> dict[str, Any] | None:
            for p in self.pods(ftj_name):
                if p["metadata"]["name"] in (exclude or set()) or p["metadata"].get("deletionTimestamp"):
                    continue
                if p.get("status", {}).get("phase") == "Running":
                    return p
            return None

        result: dict[str, Any] = poll(f"a Running pod of {ftj_name}", find, timeout=timeout)
        return result

    def finish_pod(self, pod: str, exit_code: int, message: str | None = None, reason: str | None = None) -> None:
        """What the kubelet would report when the trainer exits (KWOK reads these annotations)."""
        args = [f"kwok.loraplane.io/exit-code={exit_code}", "kwok.loraplane.io/duration=0s"]
        if message is not None:
            args.append(f"kwok.loraplane.io/message={message}")
        if reason is not None:
            args.append(f"kwok.loraplane.io/reason={reason}")
        self.c.kubectl("annotate", "pod", pod, "-n", self.ns, "--overwrite", *args)

    def wait_ftj(
        self, name: str, check: Callable[[dict[str, Any]], Any], what: str, timeout: float = 90
    ) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            obj = self.get("ftj", name)
            obj.setdefault("status", {})
            return obj if check(obj) else None

        result: dict[str, Any] = poll(f"{name}: {what}", probe, timeout=timeout)
        return result

    def events(self, name: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.get(
            "events", "--field-selector", f"involvedObject.name={name},involvedObject.kind=FineTuneJob"
        )["items"]
        return items


@contextlib.contextmanager
def session_cluster(state_dir: Path, *, real_node: bool = False) -> Iterator[Cluster]:
    """`start_cluster` for a pytest fixture: no skip, every test that needs it errors with the reason."""
    import pytest

    try:
        c, stop = start_cluster(state_dir, real_node=real_node)
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield c
    finally:
        stop()
