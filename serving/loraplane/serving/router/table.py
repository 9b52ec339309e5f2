"""The routing table: which public model names exist, which server and vLLM adapter version serve them.

Pure data and checks; the admin API and the ModelServer controller write it, the request path reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import BaseModel, Field, model_validator

NAME = r"^[A-Za-z0-9]([-A-Za-z0-9._]*[A-Za-z0-9])?$"


class AdapterVersion(BaseModel):
    """One concrete adapter version as vLLM knows it."""

    name: str = Field(pattern=NAME, max_length=253, description="lora_name on vLLM, e.g. medical-3f2a9c1b0d4e.")
    path: str = Field(min_length=1, description="Adapter directory as the vLLM replicas see it.")
    sha256: str | None = Field(None, description="Expected adapter digest (result.json adapter.sha256).")
    weight: int = Field(100, ge=0, le=100, description="Percent of this public model's traffic.")


class PublicModel(BaseModel):
    """A name clients send as `model`, and the version(s) behind it."""

    name: str = Field(pattern=NAME, max_length=253)
    versions: list[AdapterVersion] = Field(min_length=1, max_length=2)

    @model_validator(mode="after")
    def _weights(self) -> PublicModel:
        total = sum(v.weight for v in self.versions)
        if total != 100:
            raise ValueError(f"versions of {self.name!r}: weights must add up to 100, got {total}")
        if len({v.name for v in self.versions}) != len(self.versions):
            raise ValueError(f"versions of {self.name!r}: names must differ")
        return self


class ServerRoute(BaseModel):
    """One vLLM deployment: its base model, replica URLs and the public adapters it serves."""

    base_model: str = Field(pattern=NAME, max_length=253, description="vLLM --served-model-name; routable too.")
    replicas: list[str] = Field(default_factory=list, description="Replica base URLs, e.g. http://10.0.0.5:8000.")
    adapters: list[PublicModel] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> ServerRoute:
        names = [m.name for m in self.adapters]
        dupes = sorted({n for n in names if names.count(n) > 1} | ({self.base_model} & set(names)))
        if dupes:
            raise ValueError(f"public model names must be unique within a server: {dupes}")
        return self

    def versions(self) -> dict[str, AdapterVersion]:
        """Every version this server must hold loaded (weight 0 too: staged for a rollout)."""
        return {v.name: v for m in self.adapters for v in m.versions}


@dataclass(frozen=True)
class Target:
    """What a public name resolves to."""

    server: str
    route: ServerRoute
    model: PublicModel | None  # None: the base model itself


def index(routes: Mapping[str, ServerRoute]) -> dict[str, Target]:
    """Public name -> target, over every server (names are unique across servers; see `conflict`)."""
    table: dict[str, Target] = {}
    for server, route in routes.items():
        table[route.base_model] = Target(server, route, None)
        for model in route.adapters:
            table[model.name] = Target(server, route, model)
    return table


def conflict(routes: Mapping[str, ServerRoute], server: str, route: ServerRoute) -> str | None:
    """Why `route` cannot be put under `server` next to the other servers' routes (a name or replica clash)."""
    names = {route.base_model, *(m.name for m in route.adapters)}
    for other, existing in routes.items():
        if other == server:
            continue
        taken = names & {existing.base_model, *(m.name for m in existing.adapters)}
        if taken:
            return f"public model name(s) {sorted(taken)} already served by server {other!r}"
        shared = set(route.replicas) & set(existing.replicas)
        if shared:
            return f"replica(s) {sorted(shared)} already belong to server {other!r}"
    return None
