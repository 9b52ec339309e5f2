"""Contract: the Job the operator wrote runs the real trainer, and its termination message closes the loop.

The Job is read from the API server; its trainer command runs here as a process with the same arguments
and environment. Every absolute path of the pod maps to <tmp>/root/<path> (the volumes become
directories there). The trainer reports progress to the simulated pod with the trainer ServiceAccount's
token, exactly as in a cluster; its termination message is handed back through the KWOK pod.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from loraplane.api.artifact import verify
from tests.support.kube import Kube, OperatorProcess, condition, ftj
from tests.support.tiny import build_tiny_llama, build_tokenizer

pytestmark = pytest.mark.slow


def _map(value: Any, root: Path) -> Any:
    """Pod paths → local paths, recursively (strings that are absolute paths get the root prefix)."""
    if isinstance(value, str) and value.startswith("/"):
        return str(root) + value
    if isinstance(value, dict):
        return {k: _map(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [_map(v, root) for v in value]
    return value


def _api_server(kube: Kube, sa_dir: Path) -> tuple[str, str]:
    """Host and port of the API server; its CA certificate written to sa_dir/ca.crt."""
    config = yaml.safe_load(kube.c.kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    host, port = cluster["server"].removeprefix("https://").rsplit(":", 1)
    if "certificate-authority-data" in cluster:
        (sa_dir / "ca.crt").write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    else:
        ca = Path(cluster["certificate-authority"])
        shutil.copy(ca if ca.is_absolute() else kube.c.kubeconfig.parent / ca, sa_dir / "ca.crt")
    return host, port


def test_operator_job_runs_the_trainer_and_its_result_completes_the_finetunejob(
    kube: Kube, operator: OperatorProcess, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    store = root / "mnt/pvc/store"
    # The adapter store holds the base model and the data (pvc:// URIs), as a shared volume would.
    build_tiny_llama(store / "model", build_tokenizer(tmp_path / "tokenizer"))
    records = [
        {"instruction": f"What is the code for item {i}?", "input": "", "output": f"The code is E{i % 12}."}
        for i in range(120)
    ]
    (store / "data").mkdir(parents=True)
    (store / "data/toy.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    body = ftj(
        "contract",
        baseModel={"uri": "pvc://store/model"},
        dataset={"uri": "pvc://store/data/toy.jsonl", "validationSplit": 0.1},
        lora={"r": 8, "alpha": 16},
        training={"epochs": 1, "batchSize": 8, "learningRate": 0.003, "maxSeqLength": 128, "checkpointSteps": 5},
        evaluation={"maxSamples": 8},
        resources={"gpus": 0},
    )
    kube.c.apply(body, "-n", kube.ns)
    pod = kube.running_pod("contract")
    job = kube.get("job", "contract-train")
    (container,) = job["spec"]["template"]["spec"]["containers"]

    # The volumes: the rendered spec from the ConfigMap the Job mounts, the rest as empty directories.
    for mount in container["volumeMounts"]:
        Path(str(root) + mount["mountPath"]).mkdir(parents=True, exist_ok=True)
    cm = kube.get("configmap", "contract-spec")
    rendered = json.loads(cm["data"]["spec.json"])
    (root / "etc/loraplane/spec.json").write_text(json.dumps(_map(rendered, root)))
    (root / "dev").mkdir(exist_ok=True)

    # The environment: literal values mapped, the downward API resolved to the simulated pod, and the
    # trainer ServiceAccount's credentials where a pod would find them.
    sa_dir = tmp_path / "serviceaccount"
    sa_dir.mkdir()
    host, port = _api_server(kube, sa_dir)
    token = kube.c.kubectl("create", "token", "loraplane-trainer", "-n", kube.ns).stdout.strip()
    (sa_dir / "token").write_text(token)
    downward = {"metadata.name": pod["metadata"]["name"], "metadata.namespace": kube.ns}
    env = {**os.environ, "KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}
    env.update(LORAPLANE_SERVICEACCOUNT_DIR=str(sa_dir), LORAPLANE_PROGRESS_INTERVAL="0")
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = _map(var["value"], root)
        else:
            env[var["name"]] = downward[var["valueFrom"]["fieldRef"]["fieldPath"]]
    command = [sys.executable if c == "python" else c for c in _map(container["command"], root)]
    assert command[1:3] == ["-m", "loraplane.trainer"]
    proc = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]

    # The trainer itself reported progress to its pod; the operator turned it into status.progress.
    obj = kube.wait_ftj("contract", lambda o: (o["status"].get("progress") or {}).get("totalSteps", 0) > 0, "progress")
    assert obj["status"]["progress"]["step"] > 0

    out_dir = root / "mnt/pvc/store" / kube.ns / "contract"
    assert verify(out_dir) == []
    result = json.loads((out_dir / "result.json").read_text())
    message = (root / "dev/termination-log").read_text()
    assert len(message.encode()) <= 4096
    kube.finish_pod(pod["metadata"]["name"], 0, message)
    kube.c.kubectl("wait", "-n", kube.ns, "--for=condition=Succeeded", "--timeout=120s", "ftj/contract")
    obj = kube.get("ftj", "contract")
    assert obj["status"]["adapter"]["sha256"] == result["adapter"]["sha256"]
    assert obj["status"]["adapter"]["uri"] == f"pvc://store/{kube.ns}/contract"
    assert obj["status"]["adapter"]["trainableParams"] == result["trainable_params"]
    ev = obj["status"]["evaluation"]  # base vs adapter: task metric and held-out loss, as the trainer measured
    assert (ev["baseScore"], ev["adapterScore"]) == (
        result["evaluation"]["base_score"],
        result["evaluation"]["adapter_score"],
    )
    assert (ev["baseLoss"], ev["adapterLoss"]) == (
        result["evaluation"]["base_loss"],
        result["evaluation"]["adapter_loss"],
    )
    gate = condition(obj, "EvaluationPassed")
    assert gate and gate["status"] == ("True" if result["evaluation"]["passed"] else "False")
