"""Every name the operator writes into object metadata — labels, annotations, finalizers — defined once.

Invariant: both controllers, their builders and the tests use these constants, never the literals. (The
trainer's progress annotation is a trainer contract: :data:`loraplane.api.result.PROGRESS_ANNOTATION`.)
"""

from __future__ import annotations

from loraplane.api.common import GROUP

# ---- labels
LABEL_FINETUNEJOB = f"{GROUP}/finetunejob"  # every child of a FineTuneJob: the FineTuneJob's name
LABEL_MODELSERVER = f"{GROUP}/modelserver"  # every child of a ModelServer: the ModelServer's name
LABEL_DELETED = f"{GROUP}/deleted"  # a cleanup Job: the FineTuneJob whose adapter it removes
LABEL_COMPONENT = "app.kubernetes.io/component"  # trainer, cleanup, vllm
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "loraplane"  # the value of LABEL_MANAGED_BY
LABEL_QUEUE = "kueue.x-k8s.io/queue-name"  # Kueue admits the training Job from this queue

# ---- annotations
ANNOTATION_ENDPOINT = f"{GROUP}/endpoint"  # a vLLM pod's URL, when settings.trust_endpoint_annotation
# What kopf's create/update handlers left on objects of earlier versions; removed when we next write metadata.
ANNOTATION_KOPF_DIFFBASE = f"{GROUP}/last-handled-configuration"

# ---- finalizers: ours, held only while deletion has work to do (kopf keeps none: see runtime)
FINALIZER_ADAPTER = f"{GROUP}/adapter-cleanup"  # FineTuneJob, retentionPolicy Delete: the adapter goes first
FINALIZER_ROUTE = f"{GROUP}/route-cleanup"  # ModelServer with a router: its route goes first
