"""Resolve a ModelServer's `spec.adapters[]` to concrete versions (pure: objects in, plans out).

Rules (GitOps: the spec in git says *how* to pick a version; nothing writes any spec):

* `fineTuneJob: NAME` pins that run. It must have Succeeded, produced an adapter and passed its
  evaluation gate; rollback is a commit that pins an older run.
* `selector.matchLabels` picks the newest FineTuneJob (by creationTimestamp, then name) carrying those
  labels that Succeeded, produced an adapter and passed its gate. Promotion happens because a new run
  passes; a run that fails its gate is never picked.
* `uri` names an artifact directly (its sha256 is then unknown to the operator; the adapter agent in each
  vLLM pod checks an oci:// artifact's digests, and any artifact's files against its own result.json,
  before vLLM sees it).
* A FineTuneJob that pushed its adapter to a registry (`status.adapter.ociUri`, pinned by digest) or to an
  S3-compatible store (`status.adapter.s3Uri`, pinned by the adapter sha256) is served from there: nothing to
  mount, any namespace, any node. A run that pushed nothing is served from its
  pvc:// copy (pods mount the claim: same namespace only).
* A source in another namespace is refused unless that namespace is in `spec.allowedNamespaces`.
* A FineTuneJob's adapter is refused before it reaches the router when the server cannot load it
  correctly: trained on another base model than `spec.baseModel.uri` (a hub URI without a revision on
  either side matches any revision of that repository), or with a LoRA rank above
  `spec.vllm.maxLoraRank`. vLLM's own refusal stays the last line of defence, not the first.
* Public names are global in the router: when two ModelServers (in any namespaces) claim the same
  public name, the oldest ModelServer keeps it and the others report the collision.

When the stable source does not resolve (the pinned run is still training, was deleted, failed...), the
version served before (taken from the ModelServer's own status, i.e. from the API) keeps serving, and the
drift is reported. A canary that does not resolve is dropped (the stable version gets all traffic).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from loraplane.api.compat import same_base_model
from loraplane.api.conditions import SourceReason
from loraplane.api.finetunejob import LoraSpec
from loraplane.api.modelserver import AdapterSource, ModelServerSpec, ResolvedAdapter, ServedAdapter
from loraplane.api.s3 import S3Ref
from loraplane.operator.pods import pvc_claim

Severity = Literal["Progressing", "Degraded"]


@dataclass(frozen=True)
class JobInfo:
    """What resolution needs from one FineTuneJob (read from its metadata and status)."""

    namespace: str
    name: str
    created: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    phase: str = ""
    succeeded: bool = False
    failed: bool = False
    gate_passed: bool = False
    uri: str = ""
    sha256: str = ""
    oci_uri: str = ""  # where the run pushed its adapter, pinned by manifest digest ("" = not pushed)
    s3_uri: str = ""  # where the run pushed its adapter to S3, pinned by the adapter sha256 ("" = not pushed)
    base_model: str = ""  # URI[@REVISION] the run trained on ("" = unknown: not checked)
    lora_rank: int = 0  # the run's spec.lora.r (0 = unknown: not checked)

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> JobInfo:
        meta = obj.get("metadata") or {}
        spec = obj.get("spec") or {}
        status = obj.get("status") or {}
        conds = {c.get("type"): c.get("status") for c in status.get("conditions") or [] if isinstance(c, Mapping)}
        adapter = status.get("adapter") or {}
        evaluation = status.get("evaluation") or {}
        if "EvaluationPassed" in conds:
            gate = conds["EvaluationPassed"] == "True"
        else:  # no condition yet: the recorded decision, else "no gate" (every run passes)
            gate = bool(evaluation.get("passed", True))
        return cls(
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            created=str(meta.get("creationTimestamp") or ""),
            labels=dict(meta.get("labels") or {}),
            phase=str(status.get("phase") or ""),
            succeeded=conds.get("Succeeded") == "True",
            failed=conds.get("Failed") == "True",
            gate_passed=gate,
            uri=str(adapter.get("uri") or ""),
            sha256=str(adapter.get("sha256") or ""),
            oci_uri=str(adapter.get("ociUri") or ""),
            s3_uri=str(adapter.get("s3Uri") or ""),
            base_model=_trained_on(spec, adapter),
            lora_rank=int((spec.get("lora") or {}).get("r") or LoraSpec().r),
        )

    @property
    def servable(self) -> bool:
        return self.succeeded and self.gate_passed and bool(self.uri)


def _trained_on(spec: Mapping[str, Any], adapter: Mapping[str, Any]) -> str:
    """The base model a run trained on: as its status.adapter records it, else its spec.baseModel.uri."""
    recorded = str(adapter.get("baseModel") or "")
    if recorded:
        revision = str(adapter.get("baseModelRevision") or "")
        return f"{recorded}@{revision}" if revision else recorded
    return str((spec.get("baseModel") or {}).get("uri") or "")


@dataclass(frozen=True)
class Target:
    """What the server's replicas can load correctly: adapters of its base model up to its LoRA rank, from
    the stores its pods reach (claims they mount, and registries through the adapter agent next to vLLM)."""

    base_model: str
    max_lora_rank: int

    @classmethod
    def of(cls, spec: ModelServerSpec) -> Target:
        return cls(spec.base_model.uri, spec.vllm.max_lora_rank)


def incompatibility(job: JobInfo, target: Target) -> str | None:
    """Why the server cannot load `job`'s adapter correctly, naming fields and values; None when it can."""
    problems = []
    if job.base_model and not same_base_model(job.base_model, target.base_model):
        problems.append(f"its base model {job.base_model} differs from spec.baseModel.uri {target.base_model}")
    if job.lora_rank > target.max_lora_rank:
        problems.append(
            f"its LoRA rank {job.lora_rank} (spec.lora.r) exceeds spec.vllm.maxLoraRank {target.max_lora_rank}"
        )
    return "; ".join(problems) or None


@dataclass(frozen=True)
class Version:
    """One concrete adapter version."""

    uri: str
    sha256: str = ""
    fine_tune_job: str | None = None  # "name", or "namespace/name" for another namespace

    @property
    def digest(self) -> str:
        """The version's identity: its sha256, else a digest of its URI."""
        return self.sha256 or hashlib.sha256(self.uri.encode()).hexdigest()

    def lora_name(self, public: str) -> str:
        """The name this version is loaded under on vLLM: deterministic, distinct per version."""
        return f"{public}-{self.digest[:12]}"


@dataclass(frozen=True)
class Issue:
    """A reason the served state differs from the spec: still converging (Progressing) or stuck (Degraded)."""

    severity: Severity
    reason: str
    message: str


@dataclass(frozen=True)
class SourceResult:
    version: Version | None
    issue: Issue | None = None


@dataclass(frozen=True)
class AdapterPlan:
    """The versions one public name should serve, and what stands in the way."""

    name: str
    stable: Version | None
    canary: Version | None = None
    canary_weight: int = 0
    issues: tuple[Issue, ...] = ()
    blocked: bool = False  # the public name belongs to another ModelServer: not published
    fallback: bool = False  # stable is the previously served version, not what the spec asks for

    @property
    def versions(self) -> list[tuple[Version, int]]:
        """(version, weight) pairs to route; a zero-weight canary is left out."""
        if self.stable is None or self.blocked:
            return []
        if self.canary is None or self.canary_weight <= 0 or self.canary.digest == self.stable.digest:
            return [(self.stable, 100)]
        if self.canary_weight >= 100:
            return [(self.canary, 100)]
        return [(self.stable, 100 - self.canary_weight), (self.canary, self.canary_weight)]


def _label(namespace: str, name: str, own: str) -> str:
    return name if namespace == own else f"{namespace}/{name}"


def matches(job: JobInfo, match_labels: Mapping[str, str]) -> bool:
    return all(job.labels.get(k) == v for k, v in match_labels.items())


def newest_servable(jobs: Iterable[JobInfo], namespace: str, match_labels: Mapping[str, str]) -> JobInfo | None:
    """The selector rule: the newest run with these labels that succeeded, has an adapter and passed its gate."""
    candidates = [j for j in jobs if j.namespace == namespace and matches(j, match_labels) and j.servable]
    return max(candidates, key=lambda j: (j.created, j.name), default=None)


def _unsupported(uri: str) -> str | None:
    if uri.startswith(("pvc://", "file://", "oci://", "s3://")):
        return None
    return f"{uri}: the controller serves pvc://, file://, oci:// and s3:// adapters; copy hub adapters into a store"


def resolve_source(
    source: AdapterSource,
    where: str,
    *,
    namespace: str,
    allowed: Sequence[str],
    jobs: Sequence[JobInfo],
    target: Target | None = None,
) -> SourceResult:
    """One source (stable or canary) to a version, or the issue that prevents it."""
    ns = source.namespace or namespace
    if ns != namespace and ns not in allowed:
        return SourceResult(
            None,
            Issue(
                "Degraded",
                SourceReason.NAMESPACE_NOT_ALLOWED,
                f"{where}.namespace: namespace {ns!r} is not in spec.allowedNamespaces",
            ),
        )
    if source.uri:
        problem = _unsupported(source.uri)
        if problem:
            return SourceResult(None, Issue("Degraded", SourceReason.UNSUPPORTED_URI, f"{where}.uri: {problem}"))
        pin = S3Ref.parse(source.uri).sha256 if source.uri.startswith("s3://") else None
        return SourceResult(Version(uri=source.uri, sha256=pin or ""))  # an s3:// pin is the adapter sha256
    if source.fine_tune_job:
        label = _label(ns, source.fine_tune_job, namespace)
        job = next((j for j in jobs if j.namespace == ns and j.name == source.fine_tune_job), None)
        if job is None:
            return SourceResult(
                None, Issue("Degraded", SourceReason.NOT_FOUND, f"{where}.fineTuneJob: FineTuneJob {label} not found")
            )
        return _pinned(job, label, where, target, namespace)
    assert source.selector is not None  # the CRD's CEL rule: exactly one source
    wanted = source.selector.match_labels
    best = newest_servable(jobs, ns, wanted)
    if best is not None:
        return _servable(best, _label(ns, best.name, namespace), where, target, namespace)
    selected = [j for j in jobs if j.namespace == ns and matches(j, wanted)]
    text = ",".join(f"{k}={v}" for k, v in sorted(wanted.items()))
    if not selected:
        return SourceResult(
            None, Issue("Degraded", SourceReason.NO_MATCH, f"{where}.selector: no FineTuneJob in {ns} matches {text}")
        )
    running = [j for j in selected if not (j.succeeded or j.failed)]
    message = f"{where}.selector: {len(selected)} FineTuneJob(s) match {text}, none succeeded and passed its gate" + (
        f" yet ({len(running)} still running)" if running else ""
    )
    return SourceResult(None, Issue("Progressing" if running else "Degraded", SourceReason.NOTHING_PASSED, message))


def _pinned(job: JobInfo, label: str, where: str, target: Target | None, namespace: str) -> SourceResult:
    field_ = f"{where}.fineTuneJob"
    if job.failed:
        return SourceResult(None, Issue("Degraded", SourceReason.FAILED, f"{field_}: FineTuneJob {label} failed"))
    if not job.succeeded:
        phase = job.phase or "Pending"
        return SourceResult(
            None, Issue("Progressing", SourceReason.RUNNING, f"{field_}: FineTuneJob {label} is {phase}")
        )
    if not job.gate_passed:
        return SourceResult(
            None,
            Issue(
                "Degraded", SourceReason.GATE_FAILED, f"{field_}: FineTuneJob {label} did not pass its evaluation gate"
            ),
        )
    if not job.uri:
        return SourceResult(
            None, Issue("Degraded", SourceReason.NO_ADAPTER, f"{field_}: FineTuneJob {label} reports no adapter")
        )
    return _servable(job, label, field_, target, namespace)


def _servable(job: JobInfo, label: str, field_: str, target: Target | None, namespace: str) -> SourceResult:
    """The version of a run that succeeded and passed, unless the server cannot load it (then the issue)."""
    uri = job.oci_uri or job.s3_uri or job.uri
    problem = _unsupported(uri)
    if not problem and pvc_claim(uri) and job.namespace != namespace:
        problem = (
            f"the adapter of FineTuneJob {label} is on claim {pvc_claim(uri)} in namespace {job.namespace}, which "
            "this server's pods cannot mount; push it to a registry (the FineTuneJob's spec.output.uri)"
        )
    if problem:
        return SourceResult(None, Issue("Degraded", SourceReason.UNSUPPORTED_URI, f"{field_}: {problem}"))
    mismatch = incompatibility(job, target) if target is not None else None
    if mismatch:
        message = f"{field_}: the adapter of FineTuneJob {label} is not loaded: {mismatch}"
        return SourceResult(None, Issue("Degraded", SourceReason.INCOMPATIBLE, message))
    return SourceResult(Version(uri, job.sha256, label))


# ------------------------------------------------------------------------------------------- public names


@dataclass(frozen=True)
class Claim:
    """A ModelServer claiming a public name.

    The one already serving the name keeps it (`holds`: its status resolved the name to a version), so a
    newcomer never takes a name away from a live server, whatever the timestamps say (they have one-second
    resolution). Among equals the oldest wins, then namespace and name, so every reader picks the same owner.
    """

    created: str
    namespace: str
    name: str
    holds: bool = False

    def priority(self) -> tuple[bool, str, str, str]:
        return (not self.holds, self.created, self.namespace, self.name)

    def same_server(self, other: Claim) -> bool:
        return (self.namespace, self.name) == (other.namespace, other.name)


def name_claims(meta: Mapping[str, Any], spec: Mapping[str, Any], status: Mapping[str, Any]) -> dict[str, Claim]:
    """Public name -> this ModelServer's claim on it, from the object as the API returns it."""
    if meta.get("deletionTimestamp"):  # a server being deleted claims nothing: its names are free at once
        return {}
    held = {str(a.get("name")) for a in status.get("adapters") or [] if isinstance(a, Mapping) and a.get("uri")}
    namespace, name, created = (
        str(meta.get("namespace") or ""),
        str(meta.get("name") or ""),
        str(meta.get("creationTimestamp") or ""),
    )
    return {
        str(a["name"]): Claim(created, namespace, name, holds=str(a["name"]) in held)
        for a in spec.get("adapters") or []
        if isinstance(a, Mapping) and a.get("name")
    }


def name_owner(claims: Iterable[Claim]) -> Claim | None:
    return min(claims, key=Claim.priority, default=None)


def source_namespaces(spec: ModelServerSpec, namespace: str) -> list[str]:
    """Namespaces whose FineTuneJobs this server reads (its own, plus those its sources name)."""
    names = {namespace}
    for adapter in spec.adapters:
        for src in [adapter.source] + ([adapter.canary.source] if adapter.canary else []):
            if src.namespace:
                names.add(src.namespace)
    return sorted(names)


# ------------------------------------------------------------------------------------------- everything


def _previous(
    previous: Sequence[ResolvedAdapter], name: str, jobs: Sequence[JobInfo], target: Target | None, namespace: str
) -> tuple[Version | None, str | None]:
    """The version served before, to keep serving; none when its run no longer fits the server (and why)."""
    prev = next((p for p in previous if p.name == name and p.uri), None)
    if prev is None:
        return None, None
    if prev.fine_tune_job and target is not None:
        ns, _, job_name = prev.fine_tune_job.rpartition("/")
        job = next((j for j in jobs if j.namespace == (ns or namespace) and j.name == job_name), None)
        mismatch = incompatibility(job, target) if job is not None else None
        if mismatch:
            return None, f"the previously served FineTuneJob {prev.fine_tune_job} is not kept either: {mismatch}"
    return Version(prev.uri, prev.sha256, prev.fine_tune_job), None


def resolve_adapter(
    served: ServedAdapter,
    index: int,
    *,
    namespace: str,
    allowed: Sequence[str],
    jobs: Sequence[JobInfo],
    previous: Sequence[ResolvedAdapter],
    owner: Claim | None = None,
    me: Claim | None = None,
    target: Target | None = None,
) -> AdapterPlan:
    where = f"spec.adapters[{index}]"
    issues: list[Issue] = []
    if owner is not None and me is not None and not owner.same_server(me):
        issues.append(
            Issue(
                "Degraded",
                SourceReason.NAME_TAKEN,
                f"{where}.name: public name {served.name!r} is already served by ModelServer "
                f"{owner.namespace}/{owner.name}",
            )
        )
        return AdapterPlan(served.name, None, issues=tuple(issues), blocked=True)
    stable = resolve_source(
        served.source, f"{where}.source", namespace=namespace, allowed=allowed, jobs=jobs, target=target
    )
    version, fallback = stable.version, False
    if stable.issue:
        issues.append(stable.issue)
    if version is None:
        version, dropped = _previous(previous, served.name, jobs, target, namespace)
        fallback = version is not None
        if dropped and not (stable.issue and stable.issue.reason == SourceReason.INCOMPATIBLE):
            issues.append(Issue("Degraded", SourceReason.INCOMPATIBLE, f"{where}: {dropped}"))
    canary: Version | None = None
    weight = 0
    if served.canary is not None:
        result = resolve_source(
            served.canary.source,
            f"{where}.canary.source",
            namespace=namespace,
            allowed=allowed,
            jobs=jobs,
            target=target,
        )
        if result.issue:
            issues.append(result.issue)
        if result.version is not None:
            canary, weight = result.version, served.canary.weight
    return AdapterPlan(
        served.name, version, canary, weight, tuple(issues), blocked=False, fallback=fallback and bool(stable.issue)
    )


def resolve_all(
    spec: ModelServerSpec,
    *,
    namespace: str,
    jobs: Sequence[JobInfo],
    previous: Sequence[ResolvedAdapter] = (),
    claims: Mapping[str, Iterable[Claim]] | None = None,
    me: Claim | None = None,
) -> list[AdapterPlan]:
    """Every public name of the spec, in spec order; only versions this server can load correctly."""
    allowed = list(spec.allowed_namespaces or [])
    target = Target.of(spec)
    plans = []
    for i, served in enumerate(spec.adapters):
        owner = name_owner(list((claims or {}).get(served.name, []))) if me is not None else None
        plans.append(
            resolve_adapter(
                served,
                i,
                namespace=namespace,
                allowed=allowed,
                jobs=jobs,
                previous=previous,
                owner=owner,
                me=me,
                target=target,
            )
        )
    return plans


def adapter_path(uri: str, mount_root: str) -> str:
    """Where a replica (and the router, which checks the files) reads the adapter directory."""
    if uri.startswith("pvc://"):
        return f"{mount_root.rstrip('/')}/{uri.removeprefix('pvc://')}"
    if uri.startswith("file://"):
        return uri.removeprefix("file://")
    return uri


def store_claims(plans: Iterable[AdapterPlan]) -> list[str]:
    """PVCs the vLLM pods mount (read-only): every pvc:// claim of a planned version."""
    versions = [v for plan in plans for v in (plan.stable, plan.canary) if v is not None]
    return sorted({claim for v in versions if (claim := pvc_claim(v.uri))})
