"""Loraplane API types (loraplane.io/v1alpha1): the single source of truth for the CRDs."""

from loraplane.api.common import API_VERSION, GROUP, VERSION, Condition
from loraplane.api.finetunejob import FineTuneJob, FineTuneJobSpec, FineTuneJobStatus
from loraplane.api.modelserver import ModelServer, ModelServerSpec, ModelServerStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "Condition",
    "FineTuneJob",
    "FineTuneJobSpec",
    "FineTuneJobStatus",
    "ModelServer",
    "ModelServerSpec",
    "ModelServerStatus",
]
