#!/usr/bin/env bash
# Build what a real node needs, from Go modules (and the pause program from the Kubernetes module's
# own source), once, into the cache next to the control plane:
#   kubelet, kube-proxy   k8s.io/kubernetes, same version and module graph as the control plane
#   coredns               github.com/coredns/coredns (the version kubeadm deploys with this Kubernetes)
#   local-path-provisioner  github.com/rancher/local-path-provisioner
#   pause                 build/pause/linux/pause.c of k8s.io/kubernetes, static (gcc)
# A second run finds the binaries and returns at once.  Containerd, runc and the CNI plugins come from
# Debian (hack/install-debs.sh node).
# Usage: hack/build-node.sh            (prints the bin directory on its last line)
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
K8S_VERSION="${K8S_VERSION:-v1.36.3}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.14.2}"   # kubeadm's CoreDNSVersion for Kubernetes 1.36
LPP_VERSION="${LPP_VERSION:-v0.0.30}"
PAUSE_VERSION="${PAUSE_VERSION:-3.10.2}"        # build/dependencies.yaml of this Kubernetes release
CACHE="${LORAPLANE_CACHE:-$HOME/.cache/loraplane}"
BIN="$CACHE/controlplane/$K8S_VERSION/bin"      # one bin dir for the whole cluster
SRC="$CACHE/controlplane/$K8S_VERSION/src"
BINARIES=(kubelet kube-proxy coredns local-path-provisioner pause)

log() { echo "build-node: $*" >&2; }
have_all() { for b in "${BINARIES[@]}"; do [ -x "$BIN/$b" ] || return 1; done; }
if have_all && [ -x "$BIN/kubectl" ]; then echo "$BIN"; exit 0; fi

command -v go >/dev/null || { log "'go' is not on PATH; install Go >= 1.26"; exit 1; }
command -v gcc >/dev/null || { log "'gcc' is not on PATH (needed for the pause program)"; exit 1; }
# the control plane's module graph (go.mod in $SRC) and kubectl
"$HACK_DIR/build-control-plane.sh" >/dev/null
mkdir -p "$BIN"
# One build at a time per cache (build-control-plane.sh has returned: its go.mod is final).
exec 9>"$CACHE/controlplane/$K8S_VERSION/build-node.lock"
flock 9
export GOTOOLCHAIN=local CGO_ENABLED=0

minor="${K8S_VERSION#v1.}"
ver="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1"
ver="$ver -X k8s.io/component-base/version.gitMinor=${minor%%.*} -X k8s.io/component-base/version.gitTreeState=clean"
ver="$ver -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1"
ver="$ver -X k8s.io/client-go/pkg/version.gitMinor=${minor%%.*}"

timed() {  # timed <name> <command...>: run, log the wall time (the cold numbers in docs/real-node.md)
  local name="$1" t0=$SECONDS; shift
  [ -x "$BIN/$name" ] && return 0
  log "building $name"
  "$@" >&2
  log "built $name in $((SECONDS - t0))s"
}

k8s_build() {  # k8s_build <name> <package>: in the control plane's module, like build-control-plane.sh
  (cd "$SRC" && GOFLAGS="-mod=mod" go build -trimpath -ldflags "-s -w $ver" -o "$BIN/$1.tmp" "$2") && mv "$BIN/$1.tmp" "$BIN/$1"
}
mod_install() {  # mod_install <name> <module>@<version> [ldflags]: a main module with its own go.mod
  local tmp; tmp="$(mktemp -d "$BIN/.gobin.XXXXXX")"
  # neither module has replace directives, so `go install m@v` builds exactly its go.sum
  GOFLAGS="" GOBIN="$tmp" go install -trimpath -ldflags "-s -w ${3:-}" "$2" || { rm -rf "$tmp"; return 1; }
  mv "$tmp/$(basename "${2%@*}")" "$BIN/$1"; rm -rf "$tmp"
}
pause_build() {
  local dir
  dir="$(cd "$SRC" && GOFLAGS="-mod=mod" go list -m -f '{{.Dir}}' k8s.io/kubernetes)"
  gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION-loraplane" -o "$BIN/pause.tmp" "$dir/build/pause/linux/pause.c"
  strip "$BIN/pause.tmp" && mv "$BIN/pause.tmp" "$BIN/pause"
}

timed kubelet k8s_build kubelet k8s.io/kubernetes/cmd/kubelet
timed kube-proxy k8s_build kube-proxy k8s.io/kubernetes/cmd/kube-proxy
timed coredns mod_install coredns "github.com/coredns/coredns@$COREDNS_VERSION" \
  "-X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION"
timed local-path-provisioner mod_install local-path-provisioner "github.com/rancher/local-path-provisioner@$LPP_VERSION" \
  "-X main.VERSION=$LPP_VERSION"
timed pause pause_build
have_all
echo "$BIN"
