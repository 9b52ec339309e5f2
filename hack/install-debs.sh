#!/usr/bin/env bash
# Install the Debian packages a build or the real node needs, once; quiet when they are all present.
#   hack/install-debs.sh images   mmdebstrap (base root filesystems), buildah (Dockerfiles, no engine),
#                                 docker-registry (the CNCF distribution registry), skopeo (inspect/copy)
#   hack/install-debs.sh node     containerd 1.6 + runc, containernetworking-plugins (bridge, host-local,
#                                 loopback), iptables + conntrack (kube-proxy in iptables mode)
# Several groups at once are fine.  Needs root (apt-get); on a non-Debian host install the same
# packages by hand.  Nothing is started: Debian's service scripts do not run without systemd, and
# hack/registry.sh / hack/cluster.sh start what they need themselves.
set -euo pipefail

log() { echo "install-debs: $*" >&2; }

declare -A PKG_GROUPS=(
  [images]="mmdebstrap buildah docker-registry skopeo ca-certificates"
  [node]="containerd runc containernetworking-plugins iptables conntrack"
)
(($#)) || { echo "usage: $0 images|node ..." >&2; exit 2; }

want=()
for g in "$@"; do
  [[ -n "${PKG_GROUPS[$g]:-}" ]] || { echo "install-debs: unknown group '$g' (images, node)" >&2; exit 2; }
  # shellcheck disable=SC2206  # word splitting of the package list is intended
  want+=(${PKG_GROUPS[$g]})
done

missing=()
for p in "${want[@]}"; do
  [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" == "install ok installed" ]] || missing+=("$p")
done
((${#missing[@]})) || exit 0

command -v apt-get >/dev/null || { log "no apt-get here; install by hand: ${missing[*]}"; exit 1; }
((EUID == 0)) || { log "needs root to install: ${missing[*]}"; exit 1; }
log "installing ${missing[*]}"
# One apt at a time on this machine (a parallel run would fail on dpkg's lock).
exec 8>/var/lib/apt/loraplane-install.lock
flock -w 600 8
export DEBIAN_FRONTEND=noninteractive
# an update only when the package lists are missing or older than a day
if [[ -z "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -1440 2>/dev/null | head -n 1)" ]]; then
  apt-get update -qq >&2 || log "apt-get update reported errors (continuing with the lists it got)"
fi
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
log "installed ${missing[*]}"
