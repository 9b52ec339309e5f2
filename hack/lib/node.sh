# shellcheck shell=bash disable=SC2034  # sourced by hack/cluster.sh, which uses these settings
# Sourced by hack/cluster.sh: the real node of `hack/cluster.sh up --real-node` (docs/real-node.md).
#   containerd 1.6 + runc (Debian) -> kubelet (built from Go modules) -> kube-proxy (iptables mode),
#   CNI bridge + host-local (Debian) on a bridge this file creates, CoreDNS and local-path-provisioner
#   as pods, images from the local registry (hack/registry.sh, hack/build-images.sh node).
# Every change to the host is recorded under $NODE_DIR/host and undone by node_teardown, which also
# works after a failed or half-done start.  One real node per machine (host-global state: the bridge,
# iptables, sysctls, /run/netns); a host lock file names the cluster dir that owns it.
# Needs from cluster.sh: DIR PKI CONF LOGS PIDS PORT_BASE BIN log start alive pid_runs_in pid_of stop_group kctl
# sign write_kubeconfig.

CACHE_ROOT="${LORAPLANE_CACHE:-$HOME/.cache/loraplane}"
NODE_DIR="$DIR/node"
NODE_HOST_STATE="$NODE_DIR/host"
NODE_NAME="${LORAPLANE_NODE_NAME:-loraplane-node-0}"
NODE_BRIDGE="${LORAPLANE_NODE_BRIDGE:-lpbr0}"
SERVICE_CIDR=10.0.0.0/24   # the apiserver's --service-cluster-ip-range and the controller manager's (hack/cluster.sh)
NODE_SUBNET="${LORAPLANE_NODE_SUBNET:-10.245.0.0/24}"   # a /24 of its own: bridge .1, pods .2-.254
NODE_IP="${NODE_SUBNET%.*}.1"
DNS_IP=10.0.0.10
KUBELET_PORT=$((PORT_BASE + 6))
KUBELET_HEALTHZ_PORT=$((PORT_BASE + 7))
PROXY_HEALTHZ_PORT=$((PORT_BASE + 8))
PROXY_METRICS_PORT=$((PORT_BASE + 9))
# containerd's image store persists in the cache (a 5 GB image is pulled and unpacked once per machine);
# its per-run state (task bundles, rootfs mounts) lives in the cluster dir.
CTRD_ROOT="${LORAPLANE_CONTAINERD_ROOT:-$CACHE_ROOT/node/containerd}"
CTRD_STATE="$NODE_DIR/containerd-state"
CTRD_SOCK="$NODE_DIR/containerd.sock"
REGISTRY_PORT="${LORAPLANE_REGISTRY_PORT:-5000}"
NODE_REGISTRY="localhost:$REGISTRY_PORT/loraplane"
HOST_LOCK=/run/loraplane-real-node.owner
REAL_NODE_TAINT="kwok.x-k8s.io/node=fake:NoSchedule"    # put on the KWOK nodes in this mode
# sysctls the kubelet, kube-proxy, the CNI bridge plugin or this file may set; restored by teardown
NODE_SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
  vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes net.ipv4.conf.all.route_localnet net.netfilter.nf_conntrack_max
  net.netfilter.nf_conntrack_tcp_timeout_established net.netfilter.nf_conntrack_tcp_timeout_close_wait
  net.netfilter.nf_conntrack_tcp_be_liberal)
# directories outside the cluster dir that containerd/CNI/kubelet create; removed if they were absent
NODE_HOST_DIRS=(/run/containerd /run/netns /var/lib/cni /var/log/containers /var/log/pods)
NODE_COMPONENTS=(containerd kubelet kube-proxy)

versions_from() { sed -n "s/^$1=\"\${$1:-\(.*\)}\".*/\1/p" "$HACK_DIR/build-node.sh"; }

# ---------------------------------------------------------------- host changes (recorded)

# Whether any component of the cluster in $1 runs (its pid files, checked as `alive` checks ours).
cluster_running() {
  local f
  for f in "$1"/pids/*.pid; do
    [[ -s "$f" ]] && pid_runs_in "$(cat "$f")" "$1" && return 0
  done
  return 1
}

# One real node per machine. A lock naming a cluster that still runs refuses; one naming a cluster none of
# whose processes runs (its run was killed before `down`: mounts, sysctls, the lock left behind) is torn
# down with that cluster's own `down`, from the host state it recorded, and the lock taken over.
node_claim_host() {
  local owner
  owner="$(cat "$HOST_LOCK" 2>/dev/null || true)"
  if [[ -n "$owner" && "$owner" != "$DIR" && -d "$owner/node" ]]; then
    if cluster_running "$owner"; then
      log "a real node of the cluster in $owner owns this machine's node state; run its down first"
      exit 1
    fi
    log "the real node of $owner is not running but its state is still on this machine; running its down"
    LORAPLANE_CLUSTER_DIR="$owner" LORAPLANE_CLUSTER_PORT_BASE="$(cat "$owner/port-base" 2>/dev/null || echo "$PORT_BASE")" \
      "$HACK_DIR/cluster.sh" down >&2 ||
      { log "the down of $owner failed; run LORAPLANE_CLUSTER_DIR=$owner hack/cluster.sh down"; exit 1; }
  fi
  echo "$DIR" >"$HOST_LOCK"
}

node_save_host_state() {  # once per start: what teardown restores
  mkdir -p "$NODE_HOST_STATE"
  [[ -s "$NODE_HOST_STATE/sysctl" ]] || {
    local k f
    for k in "${NODE_SYSCTLS[@]}"; do
      f="/proc/sys/${k//.//}"
      [[ -r "$f" ]] && echo "$k=$(cat "$f")"
    done >"$NODE_HOST_STATE/sysctl.tmp"
    mv "$NODE_HOST_STATE/sysctl.tmp" "$NODE_HOST_STATE/sysctl"
  }
  [[ -e "$NODE_HOST_STATE/dirs" ]] || {
    local d
    for d in "${NODE_HOST_DIRS[@]}"; do [[ -e "$d" ]] || echo "$d"; done >"$NODE_HOST_STATE/dirs"
  }
}

sysctl_set() { local f="/proc/sys/${1//.//}"; [[ "$(cat "$f")" == "$2" ]] || echo "$2" >"$f"; }

node_network_up() {
  # The bridge exists before any pod, so the apiserver can bind its address; the CNI bridge plugin
  # finds it and attaches pods.  Pods (10.x/24 on the bridge) reach the node at $NODE_IP.
  if ! ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then
    log "creating bridge $NODE_BRIDGE $NODE_IP/${NODE_SUBNET#*/}"
    ip link add "$NODE_BRIDGE" type bridge
  fi
  [[ "$(ip -o -4 addr show dev "$NODE_BRIDGE")" == *" $NODE_IP/"* ]] || ip addr add "$NODE_IP/${NODE_SUBNET#*/}" dev "$NODE_BRIDGE"
  ip link set "$NODE_BRIDGE" up
  # This host reaches ClusterIPs (a client on the node, as on any node) through the bridge with the
  # node's address as source: kube-proxy's OUTPUT rules DNAT to a pod behind the bridge, and the default
  # route (the outside interface, whose address the pod could not answer) is never consulted. The route
  # goes away with the bridge.
  ip route replace "$SERVICE_CIDR" dev "$NODE_BRIDGE" src "$NODE_IP"
  # Service IPs are DNAT'ed by kube-proxy; bridged pod-to-pod traffic must pass iptables for that,
  # and a pod reaching another pod through a Service IP is routed (forwarded) back onto the bridge.
  sysctl_set net.bridge.bridge-nf-call-iptables 1
  sysctl_set net.ipv4.ip_forward 1
  # The network rule: nothing from the bridge goes anywhere but the bridge and this node's bridge
  # address (no masquerading, no forwarding to other interfaces); nothing else is forwarded onto it.
  iptables -w -N LORAPLANE-FORWARD 2>/dev/null || iptables -w -F LORAPLANE-FORWARD
  iptables -w -A LORAPLANE-FORWARD -i "$NODE_BRIDGE" -o "$NODE_BRIDGE" -j RETURN
  iptables -w -A LORAPLANE-FORWARD -i "$NODE_BRIDGE" -j DROP
  iptables -w -A LORAPLANE-FORWARD -o "$NODE_BRIDGE" -j DROP
  iptables -w -C FORWARD -j LORAPLANE-FORWARD 2>/dev/null || iptables -w -I FORWARD 1 -j LORAPLANE-FORWARD
  iptables -w -N LORAPLANE-INPUT 2>/dev/null || iptables -w -F LORAPLANE-INPUT
  iptables -w -A LORAPLANE-INPUT -i "$NODE_BRIDGE" -d "$NODE_IP" -j RETURN
  iptables -w -A LORAPLANE-INPUT -i "$NODE_BRIDGE" -d "$NODE_SUBNET" -j RETURN
  iptables -w -A LORAPLANE-INPUT -i "$NODE_BRIDGE" -j DROP
  iptables -w -C INPUT -j LORAPLANE-INPUT 2>/dev/null || iptables -w -I INPUT 1 -j LORAPLANE-INPUT
}

# ---------------------------------------------------------------- configuration

node_pki() {
  sign ca "kubelet-$NODE_NAME" "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
  sign ca "kubelet-serving-$NODE_NAME" "/CN=$NODE_NAME" serverAuth "IP:$NODE_IP,DNS:$NODE_NAME"
  sign ca kube-proxy "/CN=system:kube-proxy" clientAuth
}

node_configs() {
  mkdir -p "$NODE_DIR/cni" "$NODE_DIR/kubelet" "$NODE_DIR/pod-logs" "$NODE_DIR/local-path" "$CTRD_ROOT" "$CTRD_STATE"
  write_kubeconfig "$CONF/kubelet.kubeconfig" "kubelet-$NODE_NAME"
  write_kubeconfig "$CONF/kube-proxy.kubeconfig" kube-proxy
  : >"$NODE_DIR/resolv.conf"   # dnsPolicy Default pods get no upstream resolver (nothing leaves the machine)
  cat >"$CONF/containerd.toml" <<EOF
version = 2
root = "$CTRD_ROOT"
state = "$CTRD_STATE"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$CTRD_SOCK.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$NODE_REGISTRY/pause:$(versions_from PAUSE_VERSION)"
  # root here lacks CAP_SYS_RESOURCE: without this every sandbox fails "can't get final child's PID from pipe"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    # the registry keeps the compressed/tar layers; the node keeps only the unpacked snapshots
    discard_unpacked_layers = true
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$NODE_DIR/cni"
  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."localhost:$REGISTRY_PORT"]
    endpoint = ["http://127.0.0.1:$REGISTRY_PORT"]
EOF
  cat >"$NODE_DIR/cni/10-loraplane.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "loraplane",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$NODE_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$NODE_SUBNET", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$NODE_DIR/cni-ipam"
      }
    }
  ]
}
EOF
  cat >"$CONF/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# these machines run cgroup v1 (hybrid); kubelet 1.35+ refuses it unless told
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CTRD_SOCK
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet-serving-$NODE_NAME.crt
tlsPrivateKeyFile: $PKI/kubelet-serving-$NODE_NAME.key
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $PKI/ca.crt
authorization:
  mode: Webhook
clusterDomain: cluster.local
clusterDNS: [$DNS_IP]
resolvConf: $NODE_DIR/resolv.conf
podLogsDir: $NODE_DIR/pod-logs
failSwapOn: false
makeIPTablesUtilChains: false
# big images (the torch layer is ~5 GB): pulls may take minutes
runtimeRequestTimeout: 30m
serializeImagePulls: false
imageGCHighThresholdPercent: 95
imageGCLowThresholdPercent: 90
# the node shares the machine's disk with everything else on it: evict on an absolute floor, not on a share
# of a large shared disk (5% of 250 GB evicted a training pod while 12 GB were free)
evictionHard:
  memory.available: 200Mi
  nodefs.available: 2Gi
  imagefs.available: 2Gi
  nodefs.inodesFree: 5%
maxPods: 110
EOF
  cat >"$CONF/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: $CONF/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:$PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$PROXY_METRICS_PORT
clusterCIDR: $NODE_SUBNET
# NodePorts only on the bridge address, never on the machine's outside interface
nodePortAddresses: [$NODE_IP/32]
iptables:
  localhostNodePorts: false
  masqueradeAll: false
# leave the conntrack sysctls as they are
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
}

# ---------------------------------------------------------------- processes

start_containerd() {  # info: the CRI plugin's "ready" line (check_containerd) and its per-pod calls
  start containerd containerd --config "$CONF/containerd.toml" --log-level info
}
start_kubelet() {
  start kubelet "$BIN/kubelet" \
    --config="$CONF/kubelet.yaml" \
    --kubeconfig="$CONF/kubelet.kubeconfig" \
    --root-dir="$NODE_DIR/kubelet" \
    --hostname-override="$NODE_NAME" \
    --node-ip="$NODE_IP" \
    --node-labels="type=real,loraplane.io/real-node=true" \
    --v=1
}
start_kube_proxy() {
  start kube-proxy "$BIN/kube-proxy" --config="$CONF/kube-proxy.yaml" --v=1
}

# The socket answers before the CRI plugin has recovered its state (seconds after a killed run's leftovers);
# a kubelet started then exits ("server is not initialized yet"). The plugin logs this line last, when ready.
check_containerd() {
  ctr --address "$CTRD_SOCK" version >/dev/null 2>&1 && grep -qF 'msg="Start streaming server"' "$LOGS/containerd.log"
}
check_kubelet() { curl -sf --max-time 5 "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz" >/dev/null 2>&1; }
check_kube_proxy() { curl -sf --max-time 5 "http://127.0.0.1:$PROXY_HEALTHZ_PORT/healthz" >/dev/null 2>&1; }
check_real_node() {
  [[ "$(kctl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}
check_node_addons() {  # CoreDNS answering (Ready) and the provisioner running
  local out
  out="$(kctl get deploy -n kube-system coredns -o jsonpath='{.status.readyReplicas}' 2>/dev/null)/$(kctl get deploy -n local-path-storage local-path-provisioner -o jsonpath='{.status.readyReplicas}' 2>/dev/null)"
  [[ "$out" == 1/1 ]]
}
check_kwok_tainted() {
  local out n
  out="$(kctl get nodes "${NODES[@]}" -o jsonpath='{range .items[*]}{.metadata.name}={.spec.taints[*].key}{"\n"}{end}' 2>/dev/null)" || return 1
  for n in "${NODES[@]}"; do grep -qx "$n=kwok.x-k8s.io/node" <<<"$out" || return 1; done
}

render() {  # render <file>: the manifest with its @@VARS@@ filled in
  sed -e "s|@@REGISTRY@@|$NODE_REGISTRY|g" -e "s|@@DNS_IP@@|$DNS_IP|g" \
    -e "s|@@COREDNS_VERSION@@|$(versions_from COREDNS_VERSION)|g" -e "s|@@LPP_VERSION@@|$(versions_from LPP_VERSION)|g" \
    -e "s|@@LOCAL_PATH_DIR@@|$NODE_DIR/local-path|g" "$1"
}

# Before the control plane starts: binaries, images, the bridge (the apiserver binds its address).
node_prepare() {
  node_claim_host   # first: a stale owner's down may stop a registry that owner started
  "$HACK_DIR/install-debs.sh" node images
  "$HACK_DIR/build-node.sh" >/dev/null || { log "hack/build-node.sh failed (see above)"; exit 1; }
  if ! "$HACK_DIR/registry.sh" status >/dev/null 2>&1; then
    "$HACK_DIR/registry.sh" up >/dev/null
    touch "$NODE_DIR/registry-started"   # down stops it again
  fi
  "$HACK_DIR/build-images.sh" node >/dev/null || { log "hack/build-images.sh node failed (see above)"; exit 1; }
  node_save_host_state
  node_network_up
}

# After the apiserver is ready.
node_start() {
  node_pki
  node_configs
  start_containerd
  wait_for "containerd on $CTRD_SOCK" check_containerd containerd
  start_kubelet
  start_kube_proxy
  wait_for "kubelet /healthz on 127.0.0.1:$KUBELET_HEALTHZ_PORT" check_kubelet containerd kubelet
  local t0=$EPOCHREALTIME
  wait_for "node $NODE_NAME Ready" check_real_node containerd kubelet
  elapsed "$t0" >"$NODE_DIR/ready-seconds"
  wait_for "kube-proxy /healthz on 127.0.0.1:$PROXY_HEALTHZ_PORT" check_kube_proxy kube-proxy
  local out
  out="$(render "$HACK_DIR/node/coredns.yaml" | kctl apply -f - 2>&1)" || fail "applying hack/node/coredns.yaml: $out"
  out="$(render "$HACK_DIR/node/local-path-storage.yaml" | kctl apply -f - 2>&1)" || fail "applying hack/node/local-path-storage.yaml: $out"
  wait_for "CoreDNS and local-path-provisioner ready on $NODE_NAME" check_node_addons "${COMPONENTS[@]}"
}

# ---------------------------------------------------------------- teardown

ctr_k8s() { ctr --address "$CTRD_SOCK" --namespace k8s.io "$@"; }

# Pods first, through the kubelet (it stops them: CNI DEL, netns and volume unmounts), while it still
# runs; the kubelet deletes a pod's object once it has stopped everything of it.  The stopped
# containers it would garbage-collect a minute later are removed through containerd below.
node_drain() {
  alive kubelet && alive kube-apiserver || return 0
  log "deleting the pods on $NODE_NAME"
  kctl delete pods --all-namespaces --field-selector "spec.nodeName=$NODE_NAME" --grace-period=2 --wait=false >/dev/null 2>&1 || true
  local deadline=$((SECONDS + 60)) left
  while ((SECONDS < deadline)); do
    left="$(kctl get pods --all-namespaces --field-selector "spec.nodeName=$NODE_NAME" -o name 2>/dev/null)" || left=error
    [[ -z "$left" ]] && return 0
    sleep 0.3
  done
  log "pods still on $NODE_NAME after 60s: ${left//$'\n'/ }; removing them through containerd"
}

node_force_clean_containers() {
  alive containerd || return 0
  local id
  for id in $(ctr_k8s tasks list -q 2>/dev/null); do ctr_k8s tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
  for id in $(ctr_k8s tasks list -q 2>/dev/null); do ctr_k8s tasks delete -f "$id" >/dev/null 2>&1 || true; done
  for id in $(ctr_k8s containers list -q 2>/dev/null); do ctr_k8s containers delete "$id" >/dev/null 2>&1 || true; done
}

# Shims outlive containerd by design; ours are the ones started with our containerd's address.
node_kill_shims() {
  local pid
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $CTRD_SOCK" 2>/dev/null); do
    pkill -KILL -P "$pid" 2>/dev/null || true
    kill -KILL "$pid" 2>/dev/null || true
  done
}

unmount_under() {  # unmount every mount point under $1 (deepest first)
  local root="${1%/}/"
  awk -v root="$root" 'index($2, root) == 1 {print $2}' /proc/self/mounts | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
  done
  # the kubelet bind-mounts its root dir onto itself
  if mountpoint -q "${1%/}" 2>/dev/null; then umount "${1%/}" 2>/dev/null || umount -l "${1%/}" 2>/dev/null || true; fi
}

node_iptables_clean() {
  local ipt table chain
  command -v iptables >/dev/null || return 0
  for ipt in iptables ip6tables; do
    command -v $ipt >/dev/null || continue
    for table in filter nat mangle; do
      # rules that jump to our chains, then the chains (kube-proxy's KUBE-*, the CNI's CNI-*, ours)
      { $ipt -w -t $table -S 2>/dev/null || true; } | { grep -E '^-A .* -j (KUBE-|CNI-|LORAPLANE-)' || true; } \
        | sed 's/^-A/-D/' | while read -r rule; do eval "$ipt -w -t $table $rule" 2>/dev/null || true; done
      for chain in $({ $ipt -w -t $table -S 2>/dev/null || true; } | sed -n 's/^-N \(\(KUBE-\|CNI-\|LORAPLANE-\)[^ ]*\).*/\1/p'); do
        $ipt -w -t $table -F "$chain" 2>/dev/null || true
      done
      for chain in $({ $ipt -w -t $table -S 2>/dev/null || true; } | sed -n 's/^-N \(\(KUBE-\|CNI-\|LORAPLANE-\)[^ ]*\).*/\1/p'); do
        $ipt -w -t $table -X "$chain" 2>/dev/null || true
      done
    done
  done
}

# The kubelet's /kubepods hierarchy (cgroupfs driver). Processes still in it once the kubelet and containerd
# have stopped are containers whose shims were killed with a run (one real node per machine: they are ours).
node_cgroups_clean() {
  local d pids i said=false
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/*/kubepods.slice; do
    [[ -d "$d" ]] || continue
    for ((i = 0; i < 50; i++)); do
      pids="$(find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u | tr '\n' ' ')"
      [[ -z "${pids// /}" ]] && break
      $said || { log "killing processes left in the pods' cgroups: $pids"; said=true; }
      # shellcheck disable=SC2086  # a list of pids
      kill -KILL $pids 2>/dev/null || true
      sleep 0.1
    done
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || log "could not remove every cgroup under $d"
  done
  return 0
}

# node_teardown: the node's processes, containers and mounts (the apiserver still runs, and its
# address on the bridge must stay until it has stopped); node_restore_host: everything else.
# The machine's node state (bridge, iptables, sysctls, /run/netns, the pods' cgroups) is this cluster's to
# undo when the lock names it, or when there is no lock and this cluster recorded host state. A cluster whose
# `up` was refused by the lock tears down only what is under its own dir.
node_owns_host() {
  local owner
  owner="$(cat "$HOST_LOCK" 2>/dev/null || true)"
  [[ "$owner" == "$DIR" ]] || [[ -z "$owner" && -d "$NODE_HOST_STATE" ]]
}

node_teardown() {
  [[ -d "$NODE_DIR" ]] || return 0
  local owner=false
  node_owns_host && owner=true
  node_drain
  stop_group "$STOP_TIMEOUT" kube-proxy
  if $owner && [[ -x "$BIN/kube-proxy" && -s "$CONF/kube-proxy.yaml" ]]; then
    "$BIN/kube-proxy" --config="$CONF/kube-proxy.yaml" --cleanup >/dev/null 2>&1 || true
  fi
  stop_group "$STOP_TIMEOUT" kubelet
  node_force_clean_containers
  stop_group "$STOP_TIMEOUT" containerd
  node_kill_shims
  # mounts: container root filesystems and shm, pod volumes, the kubelet's own bind mount, netns
  unmount_under "$CTRD_STATE"
  unmount_under "$NODE_DIR/kubelet"
  unmount_under "$NODE_DIR"
  $owner || return 0
  unmount_under "$CTRD_ROOT"
  local ns
  for ns in /run/netns/cni-*; do
    [[ -e "$ns" ]] || continue
    umount "$ns" 2>/dev/null || umount -l "$ns" 2>/dev/null || true
    rm -f "$ns"
  done
  node_cgroups_clean
}

node_restore_host() {
  [[ -d "$NODE_DIR" ]] || return 0
  node_owns_host || { rm -rf "$NODE_DIR/cni-ipam" "$CTRD_STATE" "$NODE_DIR/kubelet" "$NODE_DIR/pod-logs"; return 0; }
  if ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then log "deleting bridge $NODE_BRIDGE"; ip link delete "$NODE_BRIDGE"; fi
  node_iptables_clean
  if [[ -s "$NODE_HOST_STATE/sysctl" ]]; then
    local kv
    while IFS= read -r kv; do
      sysctl_set "${kv%%=*}" "${kv#*=}" 2>/dev/null || log "could not restore ${kv%%=*}"
    done <"$NODE_HOST_STATE/sysctl"
  fi
  if [[ -s "$NODE_HOST_STATE/dirs" ]]; then
    local d
    while IFS= read -r d; do
      [[ -n "$d" && -e "$d" ]] || continue
      rm -rf "$d" 2>/dev/null || log "could not remove $d"
    done <"$NODE_HOST_STATE/dirs"
  fi
  # per-run state: IP allocations, task bundles, pod dirs (volumes of local-path stay until --purge)
  rm -rf "$NODE_DIR/cni-ipam" "$CTRD_STATE" "$NODE_DIR/kubelet" "$NODE_DIR/pod-logs" "$NODE_HOST_STATE"
  [[ -s "$HOST_LOCK" && "$(cat "$HOST_LOCK")" == "$DIR" ]] && rm -f "$HOST_LOCK"
  if [[ -e "$NODE_DIR/registry-started" ]]; then "$HACK_DIR/registry.sh" down; rm -f "$NODE_DIR/registry-started"; fi
  return 0
}
