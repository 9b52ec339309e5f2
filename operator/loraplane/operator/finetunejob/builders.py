"""Desired children of a FineTuneJob: pure functions from the spec to plain Kubernetes dicts.

Nothing here talks to the API. Names are deterministic (derived from the FineTuneJob's name), every
child carries a controller owner reference, and the reconciler applies the dicts with server-side apply.

Layout inside a training pod:
    /etc/loraplane/spec.json      the rendered TrainerSpec (ConfigMap <name>-spec)
    /mnt/pvc/<claim>/...          every PVC a pvc:// URI names; the adapter store is one of them
    /mnt/configmap/<name>/<key>   every ConfigMap a configmap:// URI names
    /var/cache/loraplane          model cache (emptyDir: re-downloaded by a retry on another node)
    /etc/loraplane/registry       spec.output.credentialsSecret's login ($DOCKER_CONFIG), when set
    /etc/loraplane/s3/credentials spec.output.s3.credentialsSecret's login ($AWS_SHARED_CREDENTIALS_FILE), when set
The output directory is /mnt/pvc/<store>/<namespace>/<name>: a retry finds its checkpoints there and resumes.
"""

from __future__ import annotations

import json
from typing import Any

from loraplane.api.exit_codes import PERMANENT, ExitCode
from loraplane.api.finetunejob import FineTuneJobSpec
from loraplane.api.trainer_spec import TrainerSpec
from loraplane.operator import pods
from loraplane.operator.names import (
    LABEL_COMPONENT,
    LABEL_DELETED,
    LABEL_FINETUNEJOB,
    LABEL_MANAGED_BY,
    LABEL_QUEUE,
    MANAGED_BY,
)
from loraplane.operator.owner import Owner
from loraplane.operator.settings import OperatorSettings

KIND = "FineTuneJob"
CONTAINER = "trainer"
SPEC_DIR = "/etc/loraplane"
SPEC_FILE = "spec.json"
TERMINATION_LOG = "/dev/termination-log"
RENDEZVOUS_PORT = 29500
TRAINER_CLUSTER_ROLE = "loraplane-trainer"


def job_name(name: str) -> str:
    return f"{name}-train"


def spec_configmap_name(name: str) -> str:
    return f"{name}-spec"


def store_claim_name(name: str, spec: FineTuneJobSpec) -> str:
    """The adapter-store claim: the one the spec names, else <name>-adapter (created by the operator)."""
    return spec.output.storage_claim or f"{name}-adapter"


def output_dir(owner: Owner, spec: FineTuneJobSpec) -> str:
    return f"{pods.MOUNTS.pvc_root}/{store_claim_name(owner.name, spec)}/{owner.namespace}/{owner.name}"


def adapter_uri(owner: Owner, spec: FineTuneJobSpec) -> str:
    return f"pvc://{store_claim_name(owner.name, spec)}/{owner.namespace}/{owner.name}"


def labels(owner: Owner) -> dict[str, str]:
    return {LABEL_FINETUNEJOB: owner.name, LABEL_COMPONENT: "trainer", LABEL_MANAGED_BY: MANAGED_BY}


def trainer_spec(owner: Owner, spec: FineTuneJobSpec) -> TrainerSpec:
    return TrainerSpec.from_finetunejob(
        owner.name,
        owner.namespace,
        spec,
        output_dir=output_dir(owner, spec),
        cache_dir=pods.CACHE_DIR,
        mounts=pods.MOUNTS,
    )


def spec_configmap(owner: Owner, spec: FineTuneJobSpec) -> dict[str, Any]:
    """ConfigMap <name>-spec holding the rendered training spec (spec.json)."""
    rendered = json.dumps(trainer_spec(owner, spec).to_k8s(), indent=2, sort_keys=True)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": owner.child_meta(spec_configmap_name(owner.name), labels(owner)),
        "data": {SPEC_FILE: rendered},
    }


def store_claim(owner: Owner, spec: FineTuneJobSpec, settings: OperatorSettings) -> dict[str, Any] | None:
    """The adapter-store PVC the operator creates, or None when the spec names an existing claim.

    Owned by the FineTuneJob only with retentionPolicy Delete: then garbage collection removes the
    adapter with it. With Retain (the default) the claim stays after the FineTuneJob is deleted.
    """
    if spec.output.storage_claim:
        return None
    # With Retain the adapter outlives the FineTuneJob: garbage collection must not take its claim.
    meta = owner.child_meta(store_claim_name(owner.name, spec), labels(owner), owned=spec.retention_policy != "Retain")
    claim: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": meta,
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": settings.adapter_storage_size}},
        },
    }
    if settings.storage_class:
        claim["spec"]["storageClassName"] = settings.storage_class
    return claim


def _uri_configmaps(uri: str | None) -> list[str]:
    if uri and uri.startswith("configmap://"):
        return [uri[len("configmap://") :].split("/", 1)[0]]
    return []


def _volumes(owner: Owner, spec: FineTuneJobSpec) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    store = store_claim_name(owner.name, spec)
    volumes: list[dict[str, Any]] = [
        {"name": "spec", "configMap": {"name": spec_configmap_name(owner.name)}},
        {"name": "cache", "emptyDir": {}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "store", "persistentVolumeClaim": {"claimName": store}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": "spec", "mountPath": SPEC_DIR, "readOnly": True},
        {"name": "cache", "mountPath": pods.CACHE_DIR},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "store", "mountPath": f"{pods.MOUNTS.pvc_root}/{store}"},
    ]
    if spec.output.credentials_secret:  # the registry login, for this pod only (the operator never reads it)
        volume, mount, _ = pods.registry_auth(spec.output.credentials_secret)
        volumes.append(volume)
        mounts.append(mount)
    if spec.output.s3:  # the S3 login, likewise for this pod only
        s3_volumes, s3_mounts, _ = pods.s3_access(spec.output.s3)
        volumes += s3_volumes
        mounts += s3_mounts
    if spec.resources.gpus > 1 or spec.resources.nodes > 1:
        volumes.append({"name": "dshm", "emptyDir": {"medium": "Memory"}})
        mounts.append({"name": "dshm", "mountPath": "/dev/shm"})
    uris = [spec.base_model.uri, spec.dataset.uri, spec.evaluation.held_out_uri]
    claims = sorted({c for u in uris if (c := pods.pvc_claim(u))} - {store})
    for i, claim in enumerate(claims):
        volumes.append({"name": f"data-{i}", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}})
        mounts.append({"name": f"data-{i}", "mountPath": f"{pods.MOUNTS.pvc_root}/{claim}", "readOnly": True})
    for i, cm in enumerate(sorted({c for u in uris for c in _uri_configmaps(u)})):
        volumes.append({"name": f"cm-{i}", "configMap": {"name": cm}})
        mounts.append({"name": f"cm-{i}", "mountPath": f"{pods.MOUNTS.configmap_root}/{cm}", "readOnly": True})
    return volumes, mounts


def _env(spec: FineTuneJobSpec) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "LORAPLANE_POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "LORAPLANE_POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "HF_HOME", "value": f"{pods.CACHE_DIR}/hf"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    if spec.output.credentials_secret:
        env.append(pods.registry_auth(spec.output.credentials_secret)[2])
    if spec.output.s3:  # AWS_SHARED_CREDENTIALS_FILE, AWS_ENDPOINT_URL_S3, AWS_REGION for s3_store
        env += pods.s3_access(spec.output.s3)[2]
    return env + pods.hub_token_env(spec.base_model.token_secret_ref)


def trainer_command(owner: Owner, spec: FineTuneJobSpec) -> list[str]:
    """The trainer invocation: plain python for one node, torchrun with a static rendezvous otherwise."""
    args = ["-m", "loraplane.trainer", "--spec", f"{SPEC_DIR}/{SPEC_FILE}", "--termination-log", TERMINATION_LOG]
    nodes, gpus = spec.resources.nodes, spec.resources.gpus
    if nodes == 1 and gpus <= 1:
        return ["python", *args]
    launcher = ["torchrun", f"--nproc-per-node={max(gpus, 1)}"]
    if nodes > 1:
        head = f"{job_name(owner.name)}-0.{job_name(owner.name)}.{owner.namespace}.svc"
        launcher += [
            f"--nnodes={nodes}",
            "--node-rank=$(JOB_COMPLETION_INDEX)",
            f"--master-addr={head}",
            f"--master-port={RENDEZVOUS_PORT}",
        ]
    else:
        launcher += ["--standalone"]
    return [*launcher, *args]


def pod_failure_policy() -> dict[str, Any]:
    """Built on the trainer's exit codes: permanent errors fail at once; interruptions don't use retries."""
    return {
        "rules": [
            {
                "action": "FailJob",
                "onExitCodes": {
                    "containerName": CONTAINER,
                    "operator": "In",
                    "values": sorted(int(c) for c in PERMANENT),
                },
            },
            {
                "action": "Ignore",
                "onExitCodes": {"containerName": CONTAINER, "operator": "In", "values": [int(ExitCode.INTERRUPTED)]},
            },
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
        ]
    }


def training_job(owner: Owner, spec: FineTuneJobSpec, settings: OperatorSettings) -> dict[str, Any]:
    """The batch/v1 Job that runs the trainer (Indexed, one pod per node, when nodes > 1)."""
    res = spec.resources
    name = job_name(owner.name)
    job_labels = {LABEL_QUEUE: res.queue_name} if res.queue_name else {}
    volumes, mounts = _volumes(owner, spec)
    container: dict[str, Any] = {
        "name": CONTAINER,
        "image": settings.trainer_image,
        "imagePullPolicy": settings.image_pull_policy,
        "command": trainer_command(owner, spec),
        "env": _env(spec),
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_LOG,
        "terminationMessagePolicy": "File",
        "securityContext": pods.restricted_container_security(),
    }
    if res.nodes > 1:
        container["ports"] = [{"name": "rendezvous", "containerPort": RENDEZVOUS_PORT}]
    resources = pods.container_resources(spec.resources)
    if resources:
        container["resources"] = resources
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "serviceAccountName": settings.trainer_service_account,
        "terminationGracePeriodSeconds": settings.termination_grace_seconds,
        "securityContext": pods.restricted_pod_security(),
        "containers": [container],
        "volumes": volumes,
        **pods.scheduling(res),
    }
    if res.nodes > 1:
        pod_spec["subdomain"] = name
    template_meta: dict[str, Any] = {"labels": {**labels(owner), **job_labels}}
    if settings.pod_annotations:
        template_meta["annotations"] = dict(settings.pod_annotations)
    job_spec: dict[str, Any] = {
        "backoffLimit": settings.backoff_limit,
        "activeDeadlineSeconds": res.active_deadline_seconds or settings.active_deadline_seconds,
        "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
        "podFailurePolicy": pod_failure_policy(),
        "template": {"metadata": template_meta, "spec": pod_spec},
    }
    # With a Kueue queue, Kueue owns spec.suspend (it admits the Job); we only ever ask for a pause.
    if spec.suspend or not res.queue_name:
        job_spec["suspend"] = spec.suspend
    if res.nodes > 1:
        job_spec.update(completionMode="Indexed", completions=res.nodes, parallelism=res.nodes)
        job_spec["backoffLimitPerIndex"] = settings.backoff_limit
        del job_spec["backoffLimit"]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": owner.child_meta(name, {**labels(owner), **job_labels}),
        "spec": job_spec,
    }


def rendezvous_service(owner: Owner, spec: FineTuneJobSpec) -> dict[str, Any] | None:
    """Headless Service giving indexed pods stable DNS names (<job>-<index>.<job>); only for nodes > 1."""
    if spec.resources.nodes <= 1:
        return None
    name = job_name(owner.name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": owner.child_meta(name, labels(owner)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {LABEL_FINETUNEJOB: owner.name, LABEL_COMPONENT: "trainer"},
            "ports": [{"name": "rendezvous", "port": RENDEZVOUS_PORT, "targetPort": RENDEZVOUS_PORT}],
        },
    }


def trainer_identity(namespace: str, settings: OperatorSettings) -> list[dict[str, Any]]:
    """The trainer ServiceAccount and its RoleBinding in `namespace` (shared by every run there, no owner)."""
    meta = {"namespace": namespace, "labels": {LABEL_MANAGED_BY: MANAGED_BY}}
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": settings.trainer_service_account, **meta},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": settings.trainer_service_account, **meta},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": TRAINER_CLUSTER_ROLE},
            "subjects": [{"kind": "ServiceAccount", "name": settings.trainer_service_account, "namespace": namespace}],
        },
    ]


def children(owner: Owner, spec: FineTuneJobSpec, settings: OperatorSettings) -> list[dict[str, Any]]:
    """Every child in apply order (the Job last, so its ConfigMap and claims exist when its pods start)."""
    out: list[dict[str, Any] | None] = [*trainer_identity(owner.namespace, settings)]
    out += [spec_configmap(owner, spec), store_claim(owner, spec, settings), rendezvous_service(owner, spec)]
    return [c for c in out if c is not None] + [training_job(owner, spec, settings)]


def cleanup_job_name(name: str) -> str:
    return f"{name}-cleanup"


def cleanup_job(owner: Owner, spec: FineTuneJobSpec, settings: OperatorSettings) -> dict[str, Any]:
    """A Job that removes the adapter directory from an existing claim (retentionPolicy Delete).

    Not owned by the FineTuneJob (it runs while that is being deleted); it expires by TTL.
    """
    store = store_claim_name(owner.name, spec)
    target = output_dir(owner, spec)
    script = f"import shutil; shutil.rmtree({target!r}, ignore_errors=True)"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": cleanup_job_name(owner.name),
            "namespace": owner.namespace,
            "labels": {LABEL_COMPONENT: "cleanup", LABEL_MANAGED_BY: MANAGED_BY, LABEL_DELETED: owner.name},
        },
        "spec": {
            "backoffLimit": 3,
            "ttlSecondsAfterFinished": 600,
            "template": {
                "metadata": {"labels": {LABEL_COMPONENT: "cleanup", LABEL_MANAGED_BY: MANAGED_BY}},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": settings.trainer_service_account,
                    "securityContext": pods.restricted_pod_security(),
                    "containers": [
                        {
                            "name": "cleanup",
                            "image": settings.trainer_image,
                            "command": ["python", "-c", script],
                            "volumeMounts": [{"name": "store", "mountPath": f"{pods.MOUNTS.pvc_root}/{store}"}],
                            "securityContext": pods.restricted_container_security(),
                        }
                    ],
                    "volumes": [{"name": "store", "persistentVolumeClaim": {"claimName": store}}],
                },
            },
        },
    }
