"""A private OCI registry for one test: Debian's docker-registry through hack/registry.sh, on its own loopback
port and storage, optionally behind an htpasswd login (bcrypt, as the registry requires)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.kube import REPO, free_port

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # bcrypt through libxcrypt; in the standard library up to Python 3.12 (the venv is 3.11)


@dataclass(frozen=True)
class Registry:
    addr: str  # host:port
    docker_config: Path | None  # a Docker config.json with the login, when the registry asks for one


def docker_config(path: Path, addr: str, user: str, password: str) -> Path:
    """A Docker config.json (the `.dockerconfigjson` of a kubernetes.io/dockerconfigjson Secret) for `addr`."""
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"auths": {addr: {"auth": auth}}}), encoding="utf-8")
    return path


@contextmanager
def private_registry(
    state: Path, *, login: tuple[str, str] | None = None, host: str = "127.0.0.1"
) -> Iterator[Registry]:
    """Start a registry storing under `state`, listening on `host` (loopback, or the real node's bridge for
    pods); stop it when the block ends."""
    env = {
        **os.environ,
        "LORAPLANE_REGISTRY_DIR": str(state),
        "LORAPLANE_REGISTRY_PORT": str(free_port()),
        "LORAPLANE_REGISTRY_HOST": host,
    }
    env.pop("LORAPLANE_REGISTRY_HTPASSWD", None)
    config = None
    if login:
        user, password = login
        htpasswd = state / "htpasswd"
        state.mkdir(parents=True, exist_ok=True)
        htpasswd.write_text(f"{user}:{crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))}\n")
        env["LORAPLANE_REGISTRY_HTPASSWD"] = str(htpasswd)
    script = str(REPO / "hack" / "registry.sh")
    up = subprocess.run([script, "up"], env=env, check=True, capture_output=True, text=True, timeout=300)
    addr = up.stdout.split()[-1]
    if login:
        config = docker_config(state / "docker" / "config.json", addr, *login)
    try:
        yield Registry(addr, config)
    finally:
        subprocess.run([script, "down"], env=env, check=False, capture_output=True, timeout=60)
