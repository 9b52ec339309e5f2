"""The object that owns a child, and the metadata every child carries.

Invariant: a child's name is derived from its owner's (deterministic, so server-side apply converges
instead of creating twice) and it carries one controller owner reference, so garbage collection removes
it with its owner — except where a builder says the child must outlive it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from loraplane.api.common import API_VERSION


@dataclass(frozen=True)
class Owner:
    """What a child needs to know about the FineTuneJob or ModelServer that owns it."""

    kind: str
    name: str
    namespace: str
    uid: str

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> Owner:
        """The owner an object read from the API server (or carried by its watch event) describes."""
        meta = obj["metadata"]
        return cls(
            kind=str(obj["kind"]), name=str(meta["name"]), namespace=str(meta["namespace"]), uid=str(meta["uid"])
        )

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def child_meta(self, name: str, labels: Mapping[str, str], *, owned: bool = True) -> dict[str, Any]:
        """metadata of a child named `name` (`owned=False`: no owner reference, it outlives the owner)."""
        meta: dict[str, Any] = {"name": name, "namespace": self.namespace, "labels": dict(labels)}
        if owned:
            meta["ownerReferences"] = [self.reference()]
        return meta
