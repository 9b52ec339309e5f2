#!/usr/bin/env bash
# Build a real Kubernetes control plane from Go modules, once, into a cache outside the clone:
#   etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (k8s.io/kubernetes + etcd
#   server modules) and kwok (sigs.k8s.io/kwok).  A second run finds the binaries and returns at once.
# Usage: hack/build-control-plane.sh            (prints the bin directory on its last line)
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.36.3}"   # Kubernetes release; staging modules are pinned to v0.<minor>.<patch>
ETCD_VERSION="${ETCD_VERSION:-v3.6.8}"  # the etcd this Kubernetes release is tested with (build/dependencies.yaml)
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
CACHE="${LORAPLANE_CACHE:-$HOME/.cache/loraplane}"
BIN="$CACHE/controlplane/$K8S_VERSION/bin"
SRC="$CACHE/controlplane/$K8S_VERSION/src"
BINARIES=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok)

have_all() { for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || return 1; done; }
if have_all; then echo "$BIN"; exit 0; fi

command -v go >/dev/null || { echo "build-control-plane: 'go' is not on PATH; install Go >= 1.26" >&2; exit 1; }
mkdir -p "$BIN" "$SRC"
cd "$SRC"
export GOFLAGS="-mod=mod" GOTOOLCHAIN=local CGO_ENABLED=0

minor="${K8S_VERSION#v1.}"; staging="v0.${minor}"
k8s_dir=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
{
  echo "module loraplane.local/controlplane"
  echo
  echo "go 1.26.0"
  echo
  echo "require ("
  echo "	k8s.io/kubernetes $K8S_VERSION"
  echo "	go.etcd.io/etcd/server/v3 $ETCD_VERSION"
  echo "	sigs.k8s.io/kwok $KWOK_VERSION"
  echo ")"
  echo
  echo "replace ("
  # k8s.io/kubernetes replaces every staging module with a local path; pin each to its published tag.
  sed -n 's#^\s*\(k8s\.io/[a-z0-9-]*\) => \./staging/src/.*#\1#p' "$k8s_dir/go.mod" | while read -r m; do
    echo "	$m => $m $staging"
  done
  echo ")"
} > go.mod
echo "build-control-plane: resolving modules (k8s $K8S_VERSION, etcd $ETCD_VERSION, kwok $KWOK_VERSION)" >&2
go get "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" "go.etcd.io/etcd/server/v3@$ETCD_VERSION" \
       "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" >&2

ver="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1"
ver="$ver -X k8s.io/component-base/version.gitMinor=${minor%%.*} -X k8s.io/component-base/version.gitTreeState=clean"
ver="$ver -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1"
ver="$ver -X k8s.io/client-go/pkg/version.gitMinor=${minor%%.*}"
build() {  # build <output name> <package> [ldflags]
  [ -x "$BIN/$1" ] && return 0
  echo "build-control-plane: building $1 ($2)" >&2
  go build -trimpath -ldflags "-s -w ${3:-}" -o "$BIN/$1.tmp" "$2" >&2
  mv "$BIN/$1.tmp" "$BIN/$1"
}
build etcd go.etcd.io/etcd/server/v3
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$ver"
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$ver"
build kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "$ver"
build kubectl k8s.io/kubernetes/cmd/kubectl "$ver"
build kwok sigs.k8s.io/kwok/cmd/kwok "-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}"
have_all
echo "$BIN"
