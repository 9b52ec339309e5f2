"""The route contract between the operator and the router: one ModelServer's entry in the routing table.

The operator publishes a :class:`ServerRoute` per ModelServer (`PUT /admin/v1/servers/{key}`); the router
validates it with the same model, loads the versions on every replica and answers `GET` with a
:class:`ServerStatus`. pydantic only, so the operator image imports it without the serving stack.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

NAME = r"^[A-Za-z0-9]([-A-Za-z0-9._]*[A-Za-z0-9])?$"
ADMIN_PREFIX = "/admin/v1/servers"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class AdapterVersion(_Frozen):
    """One concrete adapter version as vLLM knows it, and its share of the public name's traffic."""

    name: str = Field(pattern=NAME, max_length=253, description="lora_name on vLLM, e.g. medical-3f2a9c1b0d4e.")
    path: str = Field(min_length=1, description="Adapter directory as the vLLM replicas see it.")
    sha256: str | None = Field(None, description="Expected adapter digest (result.json adapter.sha256).")
    weight: int = Field(100, ge=0, le=100, description="Percent of this public model's traffic.")


class PublicModel(_Frozen):
    """A name clients send as `model`, and the version(s) behind it (one stable, or stable + canary)."""

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


class ServerRoute(_Frozen):
    """One vLLM deployment: its base model, replica URLs and the public adapters it serves."""

    base_model: str = Field(pattern=NAME, max_length=253, description="vLLM --served-model-name; routable too.")
    replicas: list[str] = Field(default_factory=list, description="Replica base URLs, e.g. http://10.0.0.5:8000.")
    adapters: list[PublicModel] = Field(default_factory=list)
    agent_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        description="Each replica's adapter agent listens on this port (same host): adapters are loaded, unloaded "
        "and listed through it (it pulls oci:// versions); unset: straight through vLLM.",
    )

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

    def models(self) -> dict[str, PublicModel]:
        return {m.name: m for m in self.adapters}


class ReplicaStatus(_Frozen):
    """What the router last observed on one replica."""

    url: str
    healthy: bool = False
    loaded: list[str] = Field(default_factory=list, description="Adapter versions loaded (sorted).")
    errors: dict[str, str] = Field(default_factory=dict, description="Adapter version -> why it failed to load.")


class ServerStatus(_Frozen):
    """`GET /admin/v1/servers/{key}`: the route the router holds and each replica's state."""

    name: str = ""
    route: ServerRoute
    replicas: list[ReplicaStatus] = Field(default_factory=list)

    def replica(self, url: str) -> ReplicaStatus | None:
        return next((r for r in self.replicas if r.url == url), None)
