"""`python -m loraplane.operator.bootstrap`: the install's one-shot Job that closes the router by default.

It creates, only where they do not exist yet, the two Secrets the router needs:

- `loraplane-router-admin` (`key`): the admin API's bearer key, shared by the router and the operator;
- `loraplane-router-keys` (`keys.json`): the API keys of the OpenAI endpoint, one random key for every model
  to start with (``{"<key>": {"models": ["*"]}}``, the router's keys file format).

A Secret that exists (created by an earlier run, by hand, or by a secret store) is left alone: the Job's
ServiceAccount may only `create` Secrets in its namespace, never read or change them. Rotation:
docs/cluster-install.md.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys

from loraplane.operator import kube

ADMIN_SECRET = "loraplane-router-admin"
KEYS_SECRET = "loraplane-router-keys"
KEYS_FILE = "keys.json"

logger = logging.getLogger("loraplane.bootstrap")


def router_secrets() -> dict[str, dict[str, str]]:
    """Fresh contents of both Secrets (random keys, 256 bits each)."""
    return {
        ADMIN_SECRET: {"key": secrets.token_urlsafe(32)},
        KEYS_SECRET: {KEYS_FILE: json.dumps({secrets.token_urlsafe(32): {"models": ["*"]}}, indent=2)},
    }


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    namespace = os.environ.get("LORAPLANE_NAMESPACE", "loraplane-system")
    for name, data in router_secrets().items():
        created = kube.create_secret_if_absent(name, namespace, data)
        logger.info("Secret %s/%s %s", namespace, name, "created" if created else "exists; left as it is")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
