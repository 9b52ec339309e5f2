"""A real S3-compatible server for one test module: versitygw (built by `make s3-server`, hack/build-s3-server.sh)
serving a posix directory on its own loopback port, with random root keys and one bucket."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from loraplane.serving.s3_store import DEFAULT_REGION, S3Access
from tests.support.kube import REPO, free_port, poll

BUILD_SCRIPT = REPO / "hack" / "build-s3-server.sh"
HEALTH_PATH = "/health"


def versitygw_binary() -> Path:
    """Where hack/build-s3-server.sh puts versitygw (its pinned version, the same cache root)."""
    match = re.search(r'^VERSITYGW_VERSION="\$\{VERSITYGW_VERSION:-(v[^}]+)\}"', BUILD_SCRIPT.read_text(), re.M)
    assert match, f"no VERSITYGW_VERSION default in {BUILD_SCRIPT}"
    version = os.environ.get("VERSITYGW_VERSION") or match[1]
    cache = Path(os.environ.get("LORAPLANE_CACHE") or Path.home() / ".cache" / "loraplane")
    return cache / "versitygw" / version / "bin" / "versitygw"


@dataclass(frozen=True)
class S3Server:
    endpoint: str  # http://127.0.0.1:PORT
    access_key: str
    secret_key: str = field(repr=False)
    bucket: str
    data_dir: Path  # the posix backend's root: one directory per bucket, one file per object
    region: str = DEFAULT_REGION

    def access(self, *, secret_key: str | None = None) -> S3Access:
        """Plain credentials for this server (another `secret_key` to be refused)."""
        return S3Access(self.endpoint, self.region, self.access_key, secret_key or self.secret_key)

    def credentials_file(self, path: Path, *, profile: str = "default", secret_key: str | None = None) -> Path:
        """An AWS shared credentials file with the root keys (what a mounted Secret provides)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            f"[{profile}]\naws_access_key_id = {self.access_key}\n"
            f"aws_secret_access_key = {secret_key or self.secret_key}\n",
            encoding="utf-8",
        )
        path.chmod(0o600)
        return path

    def client(self) -> Any:
        """A boto3 S3 client with the root keys: for tests to read or replace objects behind the store's back."""
        session = boto3.session.Session(
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key, region_name=self.region
        )
        return session.client("s3", endpoint_url=self.endpoint, config=Config(s3={"addressing_style": "path"}))


def _healthy(url: str, proc: subprocess.Popen[bytes], log: Path) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"versitygw exited with {proc.returncode} before it served: {log.read_text()[-2000:]}")
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


@contextmanager
def s3_server(state: Path, *, bucket: str = "adapters", host: str = "127.0.0.1") -> Iterator[S3Server]:
    """Start versitygw storing under `state/data` on a free port of `host` (loopback, or the real node's bridge
    for pods), create `bucket`; stop it when the block ends. A missing binary fails (the make target to run is
    in the message), it does not skip."""
    binary = versitygw_binary()
    if not os.access(binary, os.X_OK):
        raise AssertionError(f"versitygw is not built ({binary} missing): run `make s3-server`")
    data = state / "data"
    data.mkdir(parents=True, exist_ok=True)
    log = state / "versitygw.log"
    port = free_port()
    access_key, secret_key = f"LP{secrets.token_hex(8).upper()}", secrets.token_urlsafe(30)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VGW_", "ROOT_", "AWS_"))}
    env.update(ROOT_ACCESS_KEY=access_key, ROOT_SECRET_KEY=secret_key)
    command = [str(binary), "--port", f"{host}:{port}", "--health", HEALTH_PATH, "--quiet", "posix", str(data)]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=state, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        endpoint = f"http://{host}:{port}"
        poll("versitygw to answer its health check", lambda: _healthy(endpoint + HEALTH_PATH, proc, log), timeout=30)
        server = S3Server(endpoint, access_key, secret_key, bucket, data)
        server.client().create_bucket(Bucket=bucket)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
