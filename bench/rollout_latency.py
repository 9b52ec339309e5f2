"""How long from a FineTuneJob reaching Succeeded to its adapter answering through the router?

Starts its own control plane (hack/cluster.sh with KWOK nodes, a temporary state dir and free ports),
installs the manifests, runs the operator (as its ServiceAccount), the router and one real vLLM CPU
process of a tiny model on loopback, exactly as tests/operator/test_modelserver_e2e.py wires them: the
ModelServer's KWOK pod is annotated with the vLLM URL (`loraplane.io/endpoint`), adapters are written
where the adapter store would be mounted. Then, `--runs` times: a new FineTuneJob with the ModelServer's
selector labels runs on KWOK, its pod finishes with a trainer summary naming a fresh adapter, and the
benchmark measures from the moment a watch sees the FineTuneJob Succeeded to the first answer through
the router that came from the new version (a client polls the router's public model name throughout).

    python bench/rollout_latency.py [--runs 10]

Last line: `rollout_latency p50_s=<f> p99_s=<f>`. Target: p99 <= 10 s.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loraplane.serving import proctree  # noqa: E402
from tests.kube_harness import (  # noqa: E402
    Cluster,
    OperatorProcess,
    add_store,
    poll,
    service_account_kubeconfig,
    start_cluster,
)
from tests.operator.conftest import Kube, ftj  # noqa: E402
from tests.operator.ms_helpers import (  # noqa: E402
    Ms,
    RouterProcess,
    adapter_sha256,
    chat,
    modelserver,
    new_namespace,
    point_pods_at,
    selector,
    summary,
)

LABELS = {"loraplane.io/adapter": "medical"}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class SucceededWatch:
    """`kubectl get ftj NAME -w`: the monotonic time the FineTuneJob is first seen Succeeded."""

    def __init__(self, cluster: Cluster, namespace: str, name: str) -> None:
        self.at: float | None = None
        cmd = [
            str(cluster.bin_dir / "kubectl"),
            "--kubeconfig",
            str(cluster.kubeconfig),
            "get",
            "ftj",
            name,
            "-n",
            namespace,
            "-w",
            "--no-headers",
            "-o",
            "custom-columns=P:.status.phase",
        ]
        self.proc = proctree.spawn(
            cmd, name="kubectl", stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=cluster.env
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip() == "Succeeded" and self.at is None:
                self.at = time.monotonic()

    def stop(self) -> None:
        proctree.stop(self.proc, 10)


class FirstAnswer:
    """Polls the router's public model until an answer comes from `version`; remembers when."""

    def __init__(self, router_url: str, model: str, version: str) -> None:
        self.at: float | None = None
        self.errors = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(router_url, model, version), daemon=True)
        self.thread.start()

    def _run(self, url: str, model: str, version: str) -> None:
        while not self.stopping.is_set() and self.at is None:
            status, body = chat(url, model, max_tokens=1)
            if status != 200:
                self.errors += 1
            elif body.get("model") == version:
                self.at = time.monotonic()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=120, help="seconds one run may take")
    ns = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rollout-latency-"))
    state = Path(os.environ.get("LORAPLANE_CLUSTER_DIR", str(work / "cluster")))
    cluster, stop_cluster = start_cluster(state)
    # Heavy imports after the cluster build (torch is only needed for the tiny model and its adapters).
    from tests.serving.fixtures import tiny_replica, write_adapter
    from tests.trainer.tiny import build_tiny_llama, build_tokenizer

    store_root = work / "adapter-mounts"
    router = RouterProcess(work / "router.log")
    operator: OperatorProcess | None = None
    vllm = None
    try:
        cluster.kubectl("apply", "-k", str(REPO / "manifests"))
        cluster.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/modelservers.loraplane.io")
        base = build_tiny_llama(work / "model", build_tokenizer(work / "tokenizer"))
        vllm = tiny_replica(base, work / "vllm.log")
        vllm.spawn()
        router.start()
        kubeconfig = service_account_kubeconfig(cluster, "loraplane-system", "loraplane-operator", work / "kubeconfig")
        operator = OperatorProcess(
            kubeconfig,
            work / "operator.log",
            env={
                "LORAPLANE_OPERATOR_ROUTER_URL": router.url,
                "LORAPLANE_OPERATOR_ROUTER_ADMIN_KEY": router.admin_key,
                "LORAPLANE_OPERATOR_ADAPTER_MOUNT_ROOT": str(store_root),
                "LORAPLANE_OPERATOR_TRUST_ENDPOINT_ANNOTATION": "true",
                "LORAPLANE_OPERATOR_ROLLOUT_WAIT_SECONDS": "60",
            },
        )
        operator.start()
        namespace = new_namespace(cluster)
        add_store(cluster, namespace)
        ms, kube = Ms(cluster, namespace), Kube(cluster, namespace)
        vllm.wait_ready()

        def adapter(i: int) -> tuple[str, str]:
            name = f"medical-{i:02d}"
            path = write_adapter(base, store_root / "store" / namespace / name, name=name, seed=1000 + i)
            return name, adapter_sha256(path)

        first, sha = adapter(0)
        ms.finetunejob(first, sha, labels=LABELS)
        cluster.apply(modelserver("qwen", [selector("medical")], replicas=1, resources={"gpus": 0}), "-n", namespace)
        point_pods_at(ms, "qwen", [vllm.url])
        ms.wait_condition("qwen", "Ready", "True", timeout=240)

        latencies: list[float] = []
        for i in range(1, ns.runs + 1):
            name, sha = adapter(i)
            version = f"medical-{sha[:12]}"
            obj = ftj(name)
            obj["metadata"]["labels"] = LABELS
            cluster.apply(obj, "-n", namespace)
            pod = kube.running_pod(name)["metadata"]["name"]
            watch = SucceededWatch(cluster, namespace, name)
            answers = FirstAnswer(router.url, "medical", version)
            try:
                kube.finish_pod(pod, 0, summary(sha))

                def done(w: SucceededWatch = watch, a: FirstAnswer = answers) -> bool:
                    return w.at is not None and a.at is not None

                poll(f"{name} answering", done, ns.timeout)
            finally:
                watch.stop()
                answers.stop()
            assert watch.at is not None and answers.at is not None
            latency = max(0.0, answers.at - watch.at)
            latencies.append(latency)
            print(f"run {i}: {name} Succeeded -> answering in {latency:.2f}s ({answers.errors} non-200)", flush=True)
        print(
            f"rollout_latency p50_s={percentile(latencies, 50):.2f} p99_s={percentile(latencies, 99):.2f}",
            flush=True,
        )
    finally:
        if operator is not None:
            operator.stop()
        router.stop()
        if vllm is not None:
            vllm.stop()
        stop_cluster()
        if "LORAPLANE_CLUSTER_DIR" not in os.environ:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(proctree.entry_point(main))  # SIGTERM, SIGHUP: the finally blocks stop every process and the cluster
