"""The adapter agent's API, one home for both sides: what the router puts (the replica's desired versions)
and what the agent answers (residency). camelCase on the wire, unknown fields refused.

    PUT /v1/desired   DesiredSet  -> Residency   (after one reconcile round, or at once when nothing changed)
    GET /residency                -> Residency
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel


class _Wire(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    def wire(self) -> dict[str, object]:
        return self.model_dump(mode="json", by_alias=True)


class DesiredVersion(_Wire):
    """One adapter version the replica must hold."""

    name: str = Field(min_length=1, max_length=253, description="lora_name on vLLM (a concrete version).")
    source: str = Field(
        min_length=1,
        description="oci://REGISTRY/REPO@sha256:… or s3://BUCKET/PREFIX@sha256:… (pulled), or a directory vLLM "
        "and the agent both see.",
    )
    sha256: str | None = Field(None, description="Expected result.json adapter.sha256; None: result.json's own.")


class DesiredSet(_Wire):
    """Everything the replica must hold: what is loaded and not named here is drained and unloaded."""

    adapters: list[DesiredVersion]

    @model_validator(mode="after")
    def _unique(self) -> DesiredSet:
        names = [a.name for a in self.adapters]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"adapters: the name(s) {twice} appear more than once")
        return self


class Resident(_Wire):
    name: str
    source: str  # as desired (oci://…, s3://… or a path)
    path: str  # what vLLM loaded
    digest: str | None  # the pulled version's digest (oci://: manifest; s3://: adapter sha256)
    loaded_at: float  # unix time


class CacheEntry(_Wire):
    digest: str
    bytes: int
    used_by: list[str]


class CacheReport(_Wire):
    limit_bytes: int
    used_bytes: int
    evictions: int
    entries: list[CacheEntry]


class Residency(_Wire):
    """The replica as the agent last saw it."""

    healthy: bool = Field(description="vLLM answered the last reconcile round.")
    desired: list[str] | None = Field(description="The names last put; None until the router put any.")
    adapters: list[Resident] = Field(description="Loaded on vLLM now.")
    errors: dict[str, str] = Field(description="Desired versions that failed to load (name -> why), last round.")
    cache: CacheReport
