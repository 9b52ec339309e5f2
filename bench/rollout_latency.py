"""How long from a FineTuneJob reaching Succeeded to its adapter answering through the router?

Starts its own control plane (hack/cluster.sh with KWOK nodes, a temporary state dir and free ports),
installs the manifests, runs the operator (as its ServiceAccount), the router and one real vLLM CPU
process of a tiny model on loopback, exactly as tests/operator/test_modelserver_e2e.py wires them: the
ModelServer's KWOK pod is annotated with the vLLM URL (`loraplane.io/endpoint`), adapters are written
where the adapter store would be mounted. Then, `--runs` times: a new FineTuneJob with the ModelServer's
selector labels runs on KWOK, its pod finishes with a trainer summary naming a fresh adapter, and the
benchmark measures from the moment a watch sees the FineTuneJob Succeeded to the first answer through
the router that came from the new version (a client polls the router's public model name throughout).

Then the same on the real node (`--real-runs`, 0 skips it; needs `make node-deps images`): a real-node
cluster with `manifests/overlays/local` installed, a ModelServer on the packaged SmolLM2 (one real vLLM
pod) selecting `loraplane.io/adapter=medical`, and each run a short real training in a trainer pod with a
new seed; from Succeeded to the first answer of the new version through the router pod's Service.

With a claim per run (the default, `--real-store job`) the ModelServer's pods must roll to mount the new
claim; with one claim for every run (`--real-store shared`, `spec.output.storageClaim`) the new version
loads into the running vLLM pod.

    python bench/rollout_latency.py [--runs 10] [--real-runs 3] [--real-store job|shared]

Last line: `rollout_latency p50_s=<f> p99_s=<f> real_p50_s=<f> real_p99_s=<f>`. Target: p99 <= 10 s.
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
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from loraplane.serving import proctree  # noqa: E402
from tests.support.bench import nearest_rank as percentile  # noqa: E402
from tests.support.kube import (  # noqa: E402
    Cluster,
    Kube,
    OperatorProcess,
    add_store,
    ftj,
    new_namespace,
    poll,
    service_account_kubeconfig,
    start_cluster,
)
from tests.support.ms_helpers import (  # noqa: E402
    Ms,
    RouterProcess,
    adapter_sha256,
    chat,
    modelserver,
    point_pods_at,
    selector,
    summary,
)
from tests.support.real_node import (  # noqa: E402
    IMAGES,
    install_local_overlay,
    registry_has,
    restricted_namespace,
    router_api_key,
    router_url,
)

LABELS = {"loraplane.io/adapter": "medical"}


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
    """Polls the router's public model until an answer comes from a version `wanted` accepts; remembers when."""

    def __init__(self, router_url: str, model: str, wanted: Callable[[str], bool], api_key: str | None = None) -> None:
        self.at: float | None = None
        self.version = ""
        self.errors = 0
        self.api_key = api_key
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(router_url, model, wanted), daemon=True)
        self.thread.start()

    def _run(self, url: str, model: str, wanted: Callable[[str], bool]) -> None:
        while not self.stopping.is_set() and self.at is None:
            status, body = chat(url, model, max_tokens=1, api_key=self.api_key)
            if status != 200:
                self.errors += 1
            elif wanted(str(body.get("model", ""))):
                self.version = str(body["model"])
                self.at = time.monotonic()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=60)


def measure(
    cluster: Cluster, namespace: str, router_url: str, job: dict[str, Any], wanted: Callable[[str], bool],
    timeout: float, finish: Callable[[], None] | None = None, api_key: str | None = None,
) -> tuple[float, FirstAnswer]:  # fmt: skip
    """Apply `job`; seconds from the watch seeing it Succeeded to the first answer from a version `wanted` accepts."""
    name = job["metadata"]["name"]
    cluster.apply(job, "-n", namespace)
    watch = SucceededWatch(cluster, namespace, name)
    answers = FirstAnswer(router_url, "medical", wanted, api_key)
    try:
        if finish is not None:
            finish()

        def done(w: SucceededWatch = watch, a: FirstAnswer = answers) -> bool:
            return w.at is not None and a.at is not None

        poll(f"{name} answering", done, timeout)
    finally:
        watch.stop()
        answers.stop()
    assert watch.at is not None and answers.at is not None
    return max(0.0, answers.at - watch.at), answers


SHARED_CLAIM = "adapters"


def real_job(i: int, shared: bool) -> dict[str, Any]:
    """A short real training of the packaged SmolLM2 (a new seed per run, so a new adapter version).

    shared: into one adapter claim for every run (`spec.output.storageClaim`); else a claim per run.
    """
    job: dict[str, Any] = {
        "apiVersion": "loraplane.io/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": f"medical-real-{i:02d}", "labels": LABELS},
        "spec": {
            "baseModel": {"uri": "builtin://smollm2-135m-instruct"},
            "dataset": {"uri": "builtin://medical", "maxSamples": 16, "validationSplit": 0.0},
            "lora": {"r": 8, "alpha": 16, "targetModules": ["all-linear"]},
            "training": {"epochs": 1, "maxSteps": 2, "batchSize": 4, "maxSeqLength": 64, "seed": 1000 + i},
            "evaluation": {"heldOutUri": "builtin://medical-heldout", "metric": "Contains", "maxSamples": 2},
        },
    }
    if shared:
        job["spec"]["output"] = {"storageClaim": SHARED_CLAIM}
    return job


def shared_claim() -> dict[str, Any]:
    """The adapter claim every run writes to. ReadWriteOnce suffices: trainer and vLLM pods share the one node."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": SHARED_CLAIM},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


def real_node(runs: int, timeout: float, work: Path, store: str) -> list[float]:
    """The same measurement on the real node: real trainer pods, a real vLLM pod, the router pod's Service.

    store "job": each run's adapter on a claim of its own (the default), so the vLLM pods roll to mount it;
    store "shared": every run on one claim, so the new version loads into the running vLLM pod.
    """
    shared = store == "shared"
    cluster, stop_cluster = start_cluster(work / "real-node", real_node=True)
    try:
        missing = [i for i in IMAGES if not registry_has(i)]
        if missing:
            raise SystemExit(f"not in the local registry: {missing}; run `make images`")
        install_local_overlay(cluster)
        namespace = restricted_namespace(cluster, "bench")
        url, key = router_url(cluster), router_api_key(cluster)
        if shared:
            cluster.apply(shared_claim(), "-n", namespace)
        first = real_job(0, shared)
        cluster.apply(first, "-n", namespace)
        Kube(cluster, namespace).wait_ftj(
            first["metadata"]["name"], lambda o: o["status"].get("phase") == "Succeeded", "Succeeded", timeout=1800
        )
        server = modelserver("medical", [selector("medical")], replicas=1, resources={})
        server["spec"]["baseModel"]["uri"] = "builtin://smollm2-135m-instruct"
        cluster.apply(server, "-n", namespace)
        Ms(cluster, namespace).wait_condition("medical", "Ready", "True", timeout=1800)
        latencies: list[float] = []
        for i in range(1, runs + 1):
            ms = cluster.get("ms", "medical", "-n", namespace)
            old = ms["status"]["adapters"][0]["version"]

            def new_version(v: str, old: str = old) -> bool:
                return v.startswith("medical-") and v != old

            job = real_job(i, shared)
            latency, answers = measure(cluster, namespace, url, job, new_version, timeout, api_key=key)
            latencies.append(latency)
            print(f"real run {i}: {old} -> {answers.version} answering {latency:.2f}s after Succeeded", flush=True)
        return latencies
    finally:
        stop_cluster()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=120, help="seconds one run may take")
    parser.add_argument("--real-runs", type=int, default=3, help="runs on the real node (0: skip)")
    parser.add_argument("--real-timeout", type=float, default=900, help="seconds one real run may take (training)")
    parser.add_argument(
        "--real-store",
        choices=("job", "shared"),
        default="job",
        help="real node: an adapter claim per run (the default; vLLM pods roll to mount it) or one shared claim",
    )
    ns = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rollout-latency-"))
    try:
        latencies = process_level(ns.runs, ns.timeout, work) if ns.runs else []
        real = real_node(ns.real_runs, ns.real_timeout, work, ns.real_store) if ns.real_runs else []
    finally:
        if "LORAPLANE_CLUSTER_DIR" not in os.environ:
            shutil.rmtree(work, ignore_errors=True)
    fields = [
        f"{k}p50_s={percentile(v, 50):.2f} {k}p99_s={percentile(v, 99):.2f}"
        for k, v in (("", latencies), ("real_", real))
        if v
    ]
    print(" ".join(["rollout_latency", *fields]), flush=True)


def process_level(runs: int, timeout: float, work: Path) -> list[float]:
    """The operator and router as processes, vLLM a process, the FineTuneJob's pod on KWOK."""
    state = Path(os.environ.get("LORAPLANE_CLUSTER_DIR", str(work / "cluster")))
    cluster, stop_cluster = start_cluster(state)
    # Heavy imports after the cluster build (torch is only needed for the tiny model and its adapters).
    from tests.support.serving import tiny_replica, write_adapter
    from tests.support.tiny import build_tiny_llama, build_tokenizer

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
        for i in range(1, runs + 1):
            name, sha = adapter(i)
            obj = ftj(name)
            obj["metadata"]["labels"] = LABELS

            def finish(name: str = name, sha: str = sha) -> None:  # the KWOK pod ends as the trainer would
                kube.finish_pod(kube.running_pod(name)["metadata"]["name"], 0, summary(sha))

            def this_version(v: str, want: str = f"medical-{sha[:12]}") -> bool:
                return v == want

            latency, answers = measure(cluster, namespace, router.url, obj, this_version, timeout, finish)
            latencies.append(latency)
            print(f"run {i}: {name} Succeeded -> answering in {latency:.2f}s ({answers.errors} non-200)", flush=True)
        return latencies
    finally:
        if operator is not None:
            operator.stop()
        router.stop()
        if vllm is not None:
            vllm.stop()
        stop_cluster()


if __name__ == "__main__":
    sys.exit(proctree.entry_point(main))  # SIGTERM, SIGHUP: the finally blocks stop every process and the cluster
