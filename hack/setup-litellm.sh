#!/usr/bin/env bash
# Install LiteLLM's proxy (the peer bench/router_overhead.py compares our router against) into its own
# virtualenv in the cache, outside the clone, and print the path of its `litellm` command on stdout.
#
#   hack/setup-litellm.sh          install once; later runs print the path at once
#
# Its own venv because the proxy extra pins ~50 packages (fastapi, starlette, rich<14, boto3, azure, ...)
# that must not move vLLM's or ours; it talks to vLLM over HTTP like any client, so nothing is shared.
# Environment: LORAPLANE_CACHE (default ~/.cache/loraplane), LORAPLANE_PYTHON (default python3.11/python3).
set -euo pipefail

LITELLM_VERSION=1.110.2
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${LORAPLANE_CACHE:-$HOME/.cache/loraplane}"
T0=$SECONDS
log() { printf 'setup-litellm [%3ds]: %s\n' "$((SECONDS - T0))" "$*" >&2; }
die() { printf 'setup-litellm: ERROR: %s\n' "$*" >&2; exit 1; }
# shellcheck source=lib/uv.sh
. "$ROOT/hack/lib/uv.sh"   # find_python, ensure_uv

VENV="$CACHE/peers/litellm-$LITELLM_VERSION"
EXE="$VENV/bin/litellm"
if [ -x "$EXE" ] && [ -f "$VENV/.complete" ]; then echo "$EXE"; exit 0; fi

find_python

mkdir -p "$CACHE/peers"
exec 9>"$CACHE/peers/litellm.lock"
flock 9
if [ -x "$EXE" ] && [ -f "$VENV/.complete" ]; then echo "$EXE"; exit 0; fi
ensure_uv "$CACHE/peers"
log "installing litellm==$LITELLM_VERSION and its proxy extra into $VENV"
rm -rf "$VENV"
"$UV" venv --quiet --python "$PY" "$VENV"
"$UV" pip install --quiet --python "$VENV/bin/python" "litellm==$LITELLM_VERSION" \
  || die "installing litellm==$LITELLM_VERSION failed (see uv's message above)"
# The `proxy` extra's requirements, read from litellm's own metadata, without BerriAI's split-out packages
# (litellm-proxy, litellm-proxy-extras, litellm-enterprise): the registries reachable here do not serve
# them, and the proxy runs without them (they add the admin UI, DB migrations and enterprise hooks).
mapfile -t PROXY_REQS < <("$VENV/bin/python" - <<'PYEOF'
from importlib.metadata import requires
from packaging.requirements import Requirement
SPLIT_OUT = {"litellm-proxy", "litellm-proxy-extras", "litellm-enterprise"}
for text in requires("litellm") or []:
    req = Requirement(text)
    if req.marker is not None and req.marker.evaluate({"extra": "proxy"}) and req.name not in SPLIT_OUT:
        print(str(req).split(";")[0].strip())
PYEOF
)
[ "${#PROXY_REQS[@]}" -gt 0 ] || die "found no requirements of litellm's proxy extra in its metadata"
log "installing the proxy extra's ${#PROXY_REQS[@]} requirements"
"$UV" pip install --quiet --python "$VENV/bin/python" "litellm==$LITELLM_VERSION" "${PROXY_REQS[@]}" \
  || die "installing litellm's proxy requirements failed (see uv's message above)"
export LITELLM_LOCAL_MODEL_COST_MAP=True   # its import fetches a price map from the internet otherwise
"$VENV/bin/python" -c 'import litellm.proxy.proxy_server' >/dev/null 2>&1 \
  || die "litellm's proxy does not import in $VENV: $("$VENV/bin/python" -c 'import litellm.proxy.proxy_server' 2>&1 | tail -1)"
touch "$VENV/.complete"
log "done"
echo "$EXE"
