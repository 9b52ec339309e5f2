"""Push an adapter directory to an S3-compatible object store and pull it back, verified, with boto3.

Layout: `s3://BUCKET/PREFIX/` holds the adapter directory as it is, one object per file under its relative path
(`PREFIX/adapter_model.safetensors`, `PREFIX/adapter_config.json`, ...) and `PREFIX/result.json`, the lineage
and the sha256 of every file. `push` refuses a directory that does not match its result.json, uploads every
listed file with its sha256 as the object's checksum (the server refuses bytes that do not match it) and
result.json last, so a reader that finds result.json finds the files it lists. Objects under the prefix that
result.json does not list are never read.

The pin: an S3 object can be replaced at any time, so a key is no version. The version wanted is result.json's
`adapter.sha256` (the FineTuneJob status records it); `pull` reads result.json first and refuses another
version before anything else is fetched, then checks every object against the digest result.json gives it,
refuses paths that leave the adapter directory, more files than an adapter has, or more bytes than result.json
says, in a temporary directory next to `dest` that becomes `dest` only when `verify` held for all of it. A
half-downloaded, replaced or tampered adapter never appears at `dest`.

Credentials: the standard AWS variables and shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`: a mounted
Secret with a `[default]` profile, mounted only into the pod that pushes or pulls), the endpoint from
`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL` (MinIO, versitygw, Ceph RGW, ...), path-style addressing. Without
plain credentials boto3's own chain applies (web identity, instance roles). Nothing else here reads secrets.
"""

from __future__ import annotations

import base64
import configparser
import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, FlexibleChecksumError

from loraplane.api.artifact import EXCLUDED_DIRS, adapter_digest, verify
from loraplane.api.oci import MAX_LAYERS, safe_layer_path
from loraplane.api.result import RESULT_FILE, TrainingResult
from loraplane.api.s3 import S3Ref
from loraplane.serving.oci_store import ArtifactRefused, StoreError, verified_result

logger = logging.getLogger(__name__)

MAX_FILES = MAX_LAYERS  # an adapter is a handful of files: as many as its OCI artifact may have layers
MAX_RESULT_BYTES = 16 << 20  # result.json with its loss history and samples is kilobytes; more is not ours
DEFAULT_REGION = "us-east-1"  # what MinIO, versitygw and Ceph RGW answer to unless configured otherwise
_CHUNK = 1 << 20
_AUTH_ERRORS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken"}


@dataclass(frozen=True)
class S3Access:
    """How to reach the store: its endpoint (None: AWS itself), region and plain credentials (None: boto3's chain)."""

    endpoint_url: str | None = None
    region: str = DEFAULT_REGION
    access_key_id: str | None = None
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> S3Access:
        """Endpoint, region and credentials as the AWS tools find them: AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
        else the profile AWS_PROFILE (or `default`) of AWS_SHARED_CREDENTIALS_FILE (or ~/.aws/credentials).

        A credentials file named by AWS_SHARED_CREDENTIALS_FILE that cannot be read or lacks the profile is a
        ValueError, not a silent fall-back to boto3's chain.
        """
        env = os.environ if env is None else env
        endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None
        region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
        key_id, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
        if key_id and secret:
            return cls(endpoint, region, key_id, secret, env.get("AWS_SESSION_TOKEN") or None)
        named = env.get("AWS_SHARED_CREDENTIALS_FILE")
        path = Path(named) if named else Path.home() / ".aws" / "credentials"
        if not named and not path.is_file():
            return cls(endpoint, region)
        profile = env.get("AWS_PROFILE") or "default"
        parser = configparser.RawConfigParser()
        try:
            parser.read_string(path.read_text(encoding="utf-8"), source=str(path))
        except (OSError, configparser.Error) as exc:
            raise ValueError(f"cannot read the S3 credentials file {path}: {exc}") from None
        if not parser.has_option(profile, "aws_access_key_id") or not parser.has_option(
            profile, "aws_secret_access_key"
        ):
            raise ValueError(f"{path}: no [{profile}] with aws_access_key_id and aws_secret_access_key")
        token = parser.get(profile, "aws_session_token", fallback=None)
        return cls(
            endpoint,
            region,
            parser.get(profile, "aws_access_key_id"),
            parser.get(profile, "aws_secret_access_key"),
            token,
        )


def _client(access: S3Access) -> Any:
    session = boto3.session.Session(
        aws_access_key_id=access.access_key_id,
        aws_secret_access_key=access.secret_access_key,
        aws_session_token=access.session_token,
        region_name=access.region,
    )
    config = Config(
        s3={"addressing_style": "path"},  # bucket in the path: MinIO-likes and dotted bucket names need it
        retries={"mode": "standard", "max_attempts": 3},
        connect_timeout=10,
        read_timeout=60,
    )
    return session.client("s3", endpoint_url=access.endpoint_url, config=config)


def _describe(exc: ClientError) -> str:
    """`Code (HTTP status): message`, and what to check when the store refused the credentials."""
    error = exc.response.get("Error") or {}
    status = (exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    code = error.get("Code") or "Error"
    text = f"{code} (HTTP {status}): {error.get('Message') or ''}".strip()
    if code in _AUTH_ERRORS:
        text += " - check the S3 credentials (access key id and secret key) and the bucket's permissions"
    return text


def _code(exc: ClientError) -> str:
    return str((exc.response.get("Error") or {}).get("Code") or "")


def _checksum(hex_digest: str) -> str:
    """S3's x-amz-checksum-sha256: the base64 of the raw digest."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def push(adapter_dir: Path, ref: S3Ref, access: S3Access) -> str:
    """Upload every file of `adapter_dir` that result.json lists, then result.json, under `ref`; the adapter's
    sha256 (result.json `adapter.sha256`, the version to pin)."""
    try:
        return _push(adapter_dir, ref, access)
    except ClientError as exc:
        raise StoreError(f"push to {ref}: {_describe(exc)}") from exc
    except BotoCoreError as exc:
        raise StoreError(f"push to {ref}: {exc}") from exc


def _push(adapter_dir: Path, ref: S3Ref, access: S3Access) -> str:
    result = verified_result(adapter_dir)
    assert result.adapter is not None  # verified_result checked it
    files = result.adapter.files
    if len(files) > MAX_FILES:
        raise ArtifactRefused(f"{adapter_dir} has {len(files)} files; an adapter has at most {MAX_FILES}")
    client = _client(access)
    for name in sorted(files):  # verify(): exactly the adapter's files, each with its recorded sha256
        with (adapter_dir / name).open("rb") as body:
            # The recorded digest as the object's checksum: bytes changed since verify() are refused (BadDigest).
            client.put_object(Bucket=ref.bucket, Key=ref.key(name), Body=body, ChecksumSHA256=_checksum(files[name]))
    doc = (adapter_dir / RESULT_FILE).read_bytes()
    client.put_object(
        Bucket=ref.bucket,
        Key=ref.key(RESULT_FILE),
        Body=doc,
        ChecksumSHA256=_checksum(hashlib.sha256(doc).hexdigest()),
        ContentType="application/json",
    )
    logger.info("pushed %s (%d files, %d bytes) to %s", adapter_dir, len(files), result.adapter.size_bytes, ref)
    return result.adapter.sha256


def pull(
    ref: S3Ref,
    dest: Path,
    access: S3Access,
    *,
    expect_sha256: str | None,
    admit: Callable[[TrainingResult], str | None] | None = None,
) -> TrainingResult:
    """Fetch the adapter into `dest` (created; must not exist) and return its result.json.

    `expect_sha256` is the version wanted (None takes whatever result.json names now). Raises
    :class:`ArtifactRefused` (and leaves nothing at `dest`) when result.json names another version, lists
    unsafe or too many files, `admit(result)` names a reason not to pull it (checked before any adapter file
    is downloaded), or any object does not match its digest; :class:`StoreError` when the store refused or
    failed a request.
    """
    try:
        return _pull(ref, dest, access, expect_sha256, admit)
    except ClientError as exc:
        raise StoreError(f"pull {ref}: {_describe(exc)}") from exc
    except BotoCoreError as exc:
        raise StoreError(f"pull {ref}: {exc}") from exc


def _get(client: Any, ref: S3Ref, name: str, missing: Exception) -> Any:
    """The GET response of the adapter file `name`; `missing` raised when there is no such object."""
    try:
        return client.get_object(Bucket=ref.bucket, Key=ref.key(name))
    except ClientError as exc:
        if _code(exc) == "NoSuchKey":
            raise missing from exc
        raise


def _result(client: Any, ref: S3Ref) -> tuple[bytes, TrainingResult]:
    """result.json's bytes and model; refused when absent, too large or not a result with adapter files."""
    absent = StoreError(f"{ref}: no {RESULT_FILE} (nothing pushed there, or the push has not finished)")
    response = _get(client, ref, RESULT_FILE, absent)
    if int(response.get("ContentLength") or 0) > MAX_RESULT_BYTES:
        raise ArtifactRefused(f"{ref}: {RESULT_FILE} is larger than {MAX_RESULT_BYTES} bytes")
    doc = response["Body"].read(MAX_RESULT_BYTES + 1)
    result = TrainingResult.parse(doc.decode("utf-8", errors="replace")) if len(doc) <= MAX_RESULT_BYTES else None
    if result is None or result.adapter is None or not result.adapter.files:
        raise ArtifactRefused(f"{ref}: {RESULT_FILE} is not a training result with adapter.files")
    return doc, result


def _names(ref: S3Ref, files: Mapping[str, str]) -> list[str]:
    """The files result.json lists, if each stays inside the adapter directory and there are not too many."""
    if len(files) > MAX_FILES:
        raise ArtifactRefused(f"{ref}: {RESULT_FILE} lists {len(files)} files; an adapter has at most {MAX_FILES}")
    names = []
    for listed in sorted(files):
        try:
            name = safe_layer_path(listed)
        except ValueError as exc:
            raise ArtifactRefused(f"{ref}: {RESULT_FILE} lists a file outside the adapter: {exc}") from None
        if name != listed or name.split("/")[0] in EXCLUDED_DIRS or name == RESULT_FILE:
            raise ArtifactRefused(f"{ref}: {RESULT_FILE} lists {listed!r}, which is not an adapter file")
        names.append(name)
    return names


def _download(client: Any, ref: S3Ref, name: str, target: Path, sha256: str, budget: int | None) -> int:
    """Stream one object into `target`, refusing it when it is not the bytes result.json lists or exceeds
    `budget` (bytes left of result.json's size, None: unknown); the bytes written."""
    response = _get(client, ref, name, ArtifactRefused(f"{ref}: {name}: missing (listed in {RESULT_FILE})"))
    if budget is not None and int(response.get("ContentLength") or 0) > budget:
        raise ArtifactRefused(f"{ref}: {name} is larger than {RESULT_FILE}'s adapter.size_bytes allows")
    digest, size = hashlib.sha256(), 0
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with target.open("xb") as out:
            for chunk in response["Body"].iter_chunks(_CHUNK):
                size += len(chunk)
                if budget is not None and size > budget:
                    raise ArtifactRefused(f"{ref}: {name} is larger than {RESULT_FILE}'s adapter.size_bytes allows")
                digest.update(chunk)
                out.write(chunk)
    except FlexibleChecksumError as exc:  # the checksum stored with the object (push sends it) does not match
        raise ArtifactRefused(f"{ref}: {name}: the bytes do not match the object's stored checksum ({exc})") from exc
    if digest.hexdigest() != sha256:
        raise ArtifactRefused(f"{ref}: {name}: sha256 mismatch (not the file {RESULT_FILE} lists)")
    return size


def _pull(
    ref: S3Ref,
    dest: Path,
    access: S3Access,
    expect_sha256: str | None,
    admit: Callable[[TrainingResult], str | None] | None,
) -> TrainingResult:
    if dest.exists():
        raise FileExistsError(f"{dest} already exists")
    client = _client(access)
    doc, result = _result(client, ref)
    assert result.adapter is not None  # _result checked it
    files = result.adapter.files
    if expect_sha256 and result.adapter.sha256 != expect_sha256:
        raise ArtifactRefused(f"{ref}: adapter version {result.adapter.sha256}, expected {expect_sha256}")
    if adapter_digest(files) != result.adapter.sha256:
        raise ArtifactRefused(f"{ref}: {RESULT_FILE}'s adapter.sha256 does not match its file list")
    names = _names(ref, files)
    refusal = admit(result) if admit is not None else None
    if refusal:
        raise ArtifactRefused(f"{ref}: {refusal}")
    budget = result.adapter.size_bytes or None
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        (staging / RESULT_FILE).write_bytes(doc)
        for name in names:
            written = _download(client, ref, name, staging / name, files[name], budget)
            budget = None if budget is None else budget - written
        problems = verify(staging)
        if problems:
            raise ArtifactRefused(f"{ref}: the files do not match {RESULT_FILE}: {'; '.join(problems[:5])}")
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("pulled %s (adapter %s, %d files) into %s", ref, result.adapter.sha256, len(names), dest)
    return result
