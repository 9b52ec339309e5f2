# Sourced by hack/setup-env.sh and hack/setup-litellm.sh: find Python 3.11, find or bootstrap uv at
# exactly UV_VERSION.  Needs log/die functions.
UV_VERSION=0.13.9   # bootstrapped from PyPI at exactly this version if not on PATH

# Sets PY to a Python 3.11 interpreter: $LORAPLANE_PYTHON, then python3.11, then python3.
find_python() {
  PY=""
  local cand exe
  local check='import sys; print(sys.executable if sys.version_info[:2] == (3, 11) else "")'
  if [ -n "${LORAPLANE_PYTHON:-}" ]; then  # asked for by name: use it or say why not, never fall back
    exe=$("$LORAPLANE_PYTHON" -c "$check" 2>/dev/null) || die "LORAPLANE_PYTHON=$LORAPLANE_PYTHON does not run"
    [ -n "$exe" ] || die "LORAPLANE_PYTHON=$LORAPLANE_PYTHON is not Python 3.11"
    PY="$exe"
    return 0
  fi
  for cand in python3.11 python3; do
    exe=$("$cand" -c "$check" 2>/dev/null) || continue
    if [ -n "$exe" ]; then PY="$exe"; return 0; fi
  done
  die "no Python 3.11 found (tried python3.11, python3); set LORAPLANE_PYTHON"
}

# Needs PY and CACHE.  Sets UV and exports uv's environment (cache under $CACHE/uv, registries only,
# link mode suited to where the venv's parent directory $1 lives).
ensure_uv() {
  local venv_parent="$1"
  UV=""
  if command -v uv >/dev/null 2>&1 && [ "$(uv --version 2>/dev/null | cut -d' ' -f2)" = "$UV_VERSION" ]; then
    UV=$(command -v uv)
  else
    local uv_home="$CACHE/tools/uv-$UV_VERSION"
    if [ ! -x "$uv_home/bin/uv" ] || [ ! -f "$uv_home/.complete" ]; then
      log "bootstrapping uv==$UV_VERSION from PyPI into $uv_home"
      rm -rf "$uv_home"
      "$PY" -m venv "$uv_home" || die "python -m venv failed (on Debian: apt-get install python3-venv)"
      "$uv_home/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION" \
        || die "could not install uv==$UV_VERSION from PyPI"
      touch "$uv_home/.complete"
    fi
    UV="$uv_home/bin/uv"
  fi
  log "using $("$UV" --version) ($UV)"

  export UV_CACHE_DIR="$CACHE/uv"
  export UV_PYTHON_DOWNLOADS=never            # only registries are reachable; use the given interpreter
  export UV_HTTP_TIMEOUT="${UV_HTTP_TIMEOUT:-300}"   # torch + CUDA wheels are large
  mkdir -p "$UV_CACHE_DIR" "$venv_parent"
  if [ -z "${UV_LINK_MODE:-}" ]; then
    # Hardlinks are free and instant but only work within one filesystem; copy across filesystems.
    if [ "$(stat -c %d "$UV_CACHE_DIR")" = "$(stat -c %d "$venv_parent")" ]; then
      export UV_LINK_MODE=hardlink
    else
      export UV_LINK_MODE=copy
    fi
  fi
  log "uv cache $UV_CACHE_DIR, link mode $UV_LINK_MODE"
}
