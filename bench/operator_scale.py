"""How fast does the operator turn FineTuneJobs into training Jobs, and how much memory does it use?

Starts its own control plane (hack/cluster.sh with KWOK nodes, on a free port range and a temporary
state dir unless LORAPLANE_CLUSTER_DIR / LORAPLANE_CLUSTER_PORT_BASE are set), installs the manifests,
runs the operator as its ServiceAccount, then creates N FineTuneJobs at once (8 client threads) and
measures, per object, the time from its creation to
  - its Job appearing in a watch (to_job), and
  - its status showing a running trainer pod (phase Downloading/Training; to_running),
plus the operator's peak RSS.

    python bench/operator_scale.py [--jobs 200]

Last line: `operator_scale jobs=<n> p50_to_job_s=<f> p99_to_job_s=<f> p99_to_running_s=<f> rss_mb=<f>`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loraplane.serving import proctree  # noqa: E402
from tests.support.bench import nearest_rank  # noqa: E402
from tests.support.kube import (  # noqa: E402
    Cluster,
    OperatorProcess,
    add_store,
    poll,
    service_account_kubeconfig,
    start_cluster,
)

NAMESPACE = "bench"


class Watch:
    """`kubectl get -w` in the background (restarted if it exits); remembers when each name first
    satisfied `accept`."""

    def __init__(self, cluster: Cluster, args: list[str], accept: Any) -> None:
        self.first: dict[str, float] = {}
        self.cmd = [str(cluster.bin_dir / "kubectl"), "--kubeconfig", str(cluster.kubeconfig), *args]
        self.env = cluster.env
        self.accept = accept
        self.stopped = False
        self.proc: subprocess.Popen[str] | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stopped:
            self.proc = proctree.spawn(
                self.cmd, name="kubectl", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=self.env
            )
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                now = time.monotonic()
                name = self.accept(line.split())
                if name and name not in self.first:
                    self.first[name] = now
            proctree.wait(self.proc)

    def stop(self) -> None:
        self.stopped = True
        if self.proc is not None:
            proctree.stop(self.proc, 10)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "loraplane.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "baseModel": {"uri": "hf://HuggingFaceTB/SmolLM2-135M-Instruct@main"},
            "dataset": {"uri": "builtin://medical"},
            "output": {"storageClaim": "store"},
        },
    }


def setup(cluster: Cluster) -> None:
    cluster.kubectl("apply", "-k", str(REPO / "manifests"))
    cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/finetunejobs.loraplane.io")
    cluster.kubectl("create", "namespace", NAMESPACE)
    poll("default SA", lambda: cluster.kubectl("get", "sa", "default", "-n", NAMESPACE, check=False).returncode == 0)
    add_store(cluster, NAMESPACE, Path("/tmp/bench-store"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--timeout", type=float, default=600)
    ns = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="operator-scale-"))
    state = Path(os.environ.get("LORAPLANE_CLUSTER_DIR", str(work / "cluster")))
    cluster, stop_cluster = start_cluster(state)
    operator: OperatorProcess | None = None
    try:
        setup(cluster)
        kubeconfig = service_account_kubeconfig(cluster, "loraplane-system", "loraplane-operator", work / "kubeconfig")
        operator = OperatorProcess(kubeconfig, work / "operator.log")
        operator.start()
        time.sleep(3)  # let the operator finish its start-up (peering, watches) before the burst
        assert operator.proc is not None
        pid = operator.proc.pid
        jobs = Watch(
            cluster,
            ["get", "jobs", "-n", NAMESPACE, "-w", "-o", "name"],
            lambda f: f[0].rsplit("/", 1)[-1].removesuffix("-train") if f else None,
        )
        running = Watch(
            cluster,
            [
                "get",
                "ftj",
                "-n",
                NAMESPACE,
                "-w",
                "--no-headers",
                "-o",
                "custom-columns=N:.metadata.name,P:.status.phase",
            ],
            lambda f: f[0] if len(f) == 2 and f[1] in ("Downloading", "Training") else None,
        )
        time.sleep(1)
        peak = rss_mb(pid)
        created: dict[str, float] = {}
        # The operator's own API module (admin credentials from KUBECONFIG) creates the objects.
        os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
        from loraplane.operator import kube

        def create(i: int) -> None:
            name = f"ftj-{i:04d}"
            kube.apply(body(name), "bench")
            created[name] = time.monotonic()

        start = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(create, range(ns.jobs)))
        print(f"created {ns.jobs} FineTuneJobs in {time.monotonic() - start:.1f}s", file=sys.stderr)
        deadline = time.monotonic() + ns.timeout
        while time.monotonic() < deadline and (len(jobs.first) < ns.jobs or len(running.first) < ns.jobs):
            peak = max(peak, rss_mb(pid))
            time.sleep(0.5)
        peak = max(peak, rss_mb(pid))
        jobs.stop()
        running.stop()
        missing = ns.jobs - min(len(jobs.first), len(running.first))
        if missing:
            print(f"{missing} objects did not reach Job/Running within {ns.timeout}s", file=sys.stderr)
        to_job = [max(0.0, jobs.first[n] - created[n]) for n in created if n in jobs.first]
        to_running = [max(0.0, running.first[n] - created[n]) for n in created if n in running.first]
        print(
            f"to_job mean={statistics.mean(to_job):.2f}s max={max(to_job):.2f}s; "
            f"to_running mean={statistics.mean(to_running):.2f}s max={max(to_running):.2f}s",
            file=sys.stderr,
        )
        print(
            f"operator_scale jobs={ns.jobs} p50_to_job_s={nearest_rank(to_job, 50):.3f} "
            f"p99_to_job_s={nearest_rank(to_job, 99):.3f} p99_to_running_s={nearest_rank(to_running, 99):.3f} "
            f"rss_mb={peak:.1f}"
        )
    finally:
        if operator is not None:
            operator.stop()
        stop_cluster()


if __name__ == "__main__":
    sys.exit(proctree.entry_point(main))  # SIGTERM, SIGHUP: the finally blocks stop the operator and the cluster
