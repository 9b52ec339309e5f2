#!/usr/bin/env bash
# A real Kubernetes control plane on loopback, with KWOK fake nodes, for tests and local runs:
#   etcd -> kube-apiserver -> kube-controller-manager, kube-scheduler, kwok
# Binaries come from hack/build-control-plane.sh (built once into ~/.cache/loraplane).
#
# Usage:
#   hack/cluster.sh up              start (or verify) the cluster; last stdout line = kubeconfig path
#   hack/cluster.sh up --real-node  the same plus one real node (kubelet + containerd, kube-proxy, CoreDNS,
#                                   local-path storage; docs/real-node.md); the apiserver then listens on
#                                   the node bridge's address instead of loopback, and the KWOK nodes are
#                                   tainted kwok.x-k8s.io/node=fake:NoSchedule
#   hack/cluster.sh down [--purge]  stop every component; --purge also deletes the state dir
#   hack/cluster.sh status          each component and whether its process is alive (exit 1 if not all)
#   hack/cluster.sh env             `export KUBECONFIG=...` / `export PATH=...` lines for eval
#
# Environment:
#   LORAPLANE_CLUSTER_DIR        state dir (default ~/.cache/loraplane/cluster): pki/, kubeconfig,
#                                logs/<component>.log, pids/, etcd/
#   LORAPLANE_CLUSTER_PORT_BASE  apiserver port (default 16443); etcd client +1, etcd peer +2,
#                                kube-controller-manager +3, kube-scheduler +4, kwok +5
#   LORAPLANE_CLUSTER_TIMEOUT    seconds `up` waits for readiness (default 180)
#   LORAPLANE_CLUSTER_STOP_TIMEOUT  seconds `down` waits per phase before SIGKILL (default 15)
#   LORAPLANE_CLUSTER_BIN_DIR    use these binaries instead of calling build-control-plane.sh
#   LORAPLANE_CLUSTER_REAL_NODE  1: same as `up --real-node`
#   LORAPLANE_NODE_NAME, LORAPLANE_NODE_BRIDGE, LORAPLANE_NODE_SUBNET, LORAPLANE_CONTAINERD_ROOT
#                                real node settings (hack/lib/node.sh); kubelet port +6, its healthz +7,
#                                kube-proxy healthz +8, metrics +9
# Two clusters with different LORAPLANE_CLUSTER_DIR and LORAPLANE_CLUSTER_PORT_BASE can run at once.
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KWOK_CONF_DIR="$HACK_DIR/kwok"
DIR="${LORAPLANE_CLUSTER_DIR:-$HOME/.cache/loraplane/cluster}"
PORT_BASE="${LORAPLANE_CLUSTER_PORT_BASE:-16443}"
TIMEOUT="${LORAPLANE_CLUSTER_TIMEOUT:-180}"
STOP_TIMEOUT="${LORAPLANE_CLUSTER_STOP_TIMEOUT:-15}"

if ! [[ "$PORT_BASE" =~ ^[0-9]+$ ]] || ((PORT_BASE < 1024 || PORT_BASE > 65530)); then
  echo "cluster: LORAPLANE_CLUSTER_PORT_BASE must be a number in 1024..65530" >&2; exit 2
fi
# absolute: it is matched against /proc/<pid>/cmdline
if [[ -d "$DIR" ]]; then DIR="$(cd "$DIR" && pwd)"; elif [[ "$DIR" != /* ]]; then DIR="$PWD/$DIR"; fi
PKI="$DIR/pki"; LOGS="$DIR/logs"; PIDS="$DIR/pids"; CONF="$DIR/config"
KUBECONFIG_FILE="$DIR/kubeconfig"

API_PORT=$PORT_BASE
ETCD_PORT=$((PORT_BASE + 1))
ETCD_PEER_PORT=$((PORT_BASE + 2))
KCM_PORT=$((PORT_BASE + 3))
SCHED_PORT=$((PORT_BASE + 4))
KWOK_PORT=$((PORT_BASE + 5))
HOST=127.0.0.1

CONTROL_PLANE=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
COMPONENTS=("${CONTROL_PLANE[@]}")   # + containerd kubelet kube-proxy with a real node
NODES=(kwok-cpu-0 kwok-gpu-0 kwok-gpu-1)

# shellcheck source=lib/node.sh
. "$HACK_DIR/lib/node.sh"
# Real-node mode: asked for by `up --real-node` or the environment, remembered in $DIR/real-node so that
# down/status know (down also tears down a half-started node).
REAL_NODE=false
[[ "${LORAPLANE_CLUSTER_REAL_NODE:-}" == 1 || -e "$DIR/real-node" ]] && REAL_NODE=true
API_HOST=$HOST   # where the apiserver listens: loopback, or the node bridge's address with a real node
real_node_mode() {
  REAL_NODE=true
  API_HOST=$NODE_IP
  COMPONENTS+=("${NODE_COMPONENTS[@]}")
}
$REAL_NODE && real_node_mode

log() { echo "cluster: $*" >&2; }

# ---------------------------------------------------------------- processes

pid_of() { local f="$PIDS/$1.pid"; [[ -s "$f" ]] && cat "$f" || true; }

# Alive = the pid exists AND its command line mentions our state dir (guards against pid reuse).
alive() { pid_runs_in "$(pid_of "$1")" "$DIR"; }
# pid_runs_in <pid> <state dir>: the pid exists and its command line names that dir.
pid_runs_in() {
  [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null || return 1
  tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null | grep -qF -- "$2/"
}

port_open() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }

# start <name> <binary> args...  (no-op if already alive)
STARTED=()
start() {
  local name="$1"; shift
  if alive "$name"; then return 0; fi
  rm -f "$PIDS/$name.pid"
  [[ -f "$LOGS/$name.log" ]] && mv -f "$LOGS/$name.log" "$LOGS/$name.log.1"
  log "starting $name"
  # setsid: own session, so the component survives the caller (and its Ctrl-C); the child writes
  # its own pid before exec'ing the binary, so the pid file always names the real process.
  # stdin/stdout/stderr are detached from the caller (a pytest fixture capturing output must not hang).
  # shellcheck disable=SC2016  # $$ and $@ are for the inner sh
  setsid sh -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$PIDS/$name.pid" "$@" \
    </dev/null >>"$LOGS/$name.log" 2>&1 9>&- &
  STARTED+=("$name")
  local i
  for ((i = 0; i < 100; i++)); do [[ -s "$PIDS/$name.pid" ]] && return 0; sleep 0.05; done
  fail "$name did not start"
}

# stop_group <seconds> <component>...: SIGTERM, wait up to <seconds>, then SIGKILL.
stop_group() {
  local wait_s="$1"; shift
  local name pid pids=()
  for name in "$@"; do
    if alive "$name"; then
      pid="$(pid_of "$name")"; pids+=("$pid")
      log "stopping $name (pid $pid)"
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  local deadline=$((SECONDS + wait_s)) left
  while :; do
    left=()
    for pid in ${pids[@]+"${pids[@]}"}; do kill -0 "$pid" 2>/dev/null && left+=("$pid"); done
    ((${#left[@]} == 0)) && break
    if ((SECONDS >= deadline)); then
      log "SIGKILL ${left[*]} (no exit after ${wait_s}s)"
      kill -KILL "${left[@]}" 2>/dev/null || true
      break
    fi
    sleep 0.1
  done
  for name in "$@"; do rm -f "$PIDS/$name.pid"; done
}

# stop_ordered <component>...: clients first, then the apiserver, etcd last, so nobody loses its
# backend mid-shutdown (an apiserver without etcd hangs in shutdown until SIGKILL)
stop_ordered() {
  local group name sel
  for group in "kwok kube-scheduler kube-controller-manager" kube-apiserver etcd; do
    sel=()
    for name in $group; do [[ " $* " == *" $name "* ]] && sel+=("$name"); done
    ((${#sel[@]} == 0)) || stop_group "$STOP_TIMEOUT" "${sel[@]}"
  done
}

# One up/down at a time per state dir (fd 9 is closed in every component, see start()).
lock() {
  exec 9>"$DIR/lock"
  flock -w "$TIMEOUT" 9 || { log "another hack/cluster.sh holds $DIR/lock"; exit 1; }
}

# ---------------------------------------------------------------- binaries

bin_dir() {
  if [[ -n "${LORAPLANE_CLUSTER_BIN_DIR:-}" ]]; then echo "$LORAPLANE_CLUSTER_BIN_DIR"; return; fi
  # instant once built; the build's progress goes to stderr
  "$HACK_DIR/build-control-plane.sh" | tail -n 1
}

# ---------------------------------------------------------------- certificates and kubeconfigs

b64() { base64 -w0 <"$1"; }

new_key() {  # ECDSA P-256: instant to generate, accepted by every Kubernetes component and client
  [[ -s "$1" ]] || (umask 077; openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null)
}

# new_ca <name> <CN>
new_ca() {
  local name="$1" cn="$2"
  new_key "$PKI/$name.key"
  printf '%s\n' "[req]" "distinguished_name=dn" "[dn]" "[ext]" \
    "basicConstraints=critical,CA:TRUE" "keyUsage=critical,digitalSignature,keyCertSign,cRLSign" \
    "subjectKeyIdentifier=hash" >"$PKI/$name.cnf"
  openssl req -x509 -new -key "$PKI/$name.key" -subj "/CN=$cn" -days 3650 -sha256 \
    -config "$PKI/$name.cnf" -extensions ext -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.cnf"
}

# sign <ca> <name> <subject> <extendedKeyUsage> [subjectAltName]   (kept if it already exists)
sign() {
  local ca="$1" name="$2" subj="$3" eku="$4" san="${5:-}"
  [[ -s "$PKI/$name.crt" && -s "$PKI/$name.key" ]] && return 0
  new_key "$PKI/$name.key"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [[ -n "$san" ]] && echo "subjectAltName=$san"
  } >"$PKI/$name.ext"
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 3650 -sha256 \
    -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}

ensure_pki() {
  mkdir -p "$PKI"
  if [[ ! -s "$PKI/ca.crt" || ! -s "$PKI/ca.key" || ! -s "$PKI/front-proxy-ca.crt" ]]; then
    log "generating certificates in $PKI"
    rm -f "$PKI"/*.crt "$PKI"/*.key   # leaves signed by an old CA are useless
    new_ca ca loraplane-cluster-ca
    new_ca front-proxy-ca loraplane-front-proxy-ca   # request-header (aggregation) CA, as in kubeadm
  fi
  # the node bridge's address too: pods reach the apiserver there (--real-node)
  if [[ -s "$PKI/kube-apiserver.crt" && "$(openssl x509 -noout -text -in "$PKI/kube-apiserver.crt")" != *"IP Address:$NODE_IP"* ]]; then
    rm -f "$PKI/kube-apiserver.crt"
  fi
  sign ca kube-apiserver "/CN=kube-apiserver" serverAuth \
    "IP:127.0.0.1,IP:10.0.0.1,IP:$NODE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  sign ca admin "/O=system:masters/CN=loraplane-admin" clientAuth
  sign ca kube-controller-manager "/CN=system:kube-controller-manager" clientAuth
  sign ca kube-scheduler "/CN=system:kube-scheduler" clientAuth
  # kwok: client identity (bound to cluster-admin by hack/kwok/nodes.yaml) and serving cert of
  # its fake-kubelet endpoint
  sign ca kwok "/CN=kwok-controller" "clientAuth,serverAuth" "IP:127.0.0.1,DNS:localhost"
  sign ca kube-apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
  sign front-proxy-ca front-proxy-client "/CN=front-proxy-client" clientAuth
  if [[ ! -s "$PKI/service-account.key" ]]; then
    (umask 077; openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$PKI/service-account.key" 2>/dev/null)
    rm -f "$PKI/service-account.pub"
  fi
  [[ -s "$PKI/service-account.pub" ]] \
    || openssl pkey -in "$PKI/service-account.key" -pubout -out "$PKI/service-account.pub" 2>/dev/null
}

# write_kubeconfig <file> <cert name>
write_kubeconfig() {
  local file="$1" who="$2"
  (umask 077; cat >"$file.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: loraplane
  cluster:
    server: https://$API_HOST:$API_PORT
    certificate-authority-data: $(b64 "$PKI/ca.crt")
users:
- name: $who
  user:
    client-certificate-data: $(b64 "$PKI/$who.crt")
    client-key-data: $(b64 "$PKI/$who.key")
contexts:
- name: loraplane
  context:
    cluster: loraplane
    user: $who
current-context: loraplane
EOF
  )
  mv -f "$file.tmp" "$file"
}

write_configs() {
  mkdir -p "$CONF"
  write_kubeconfig "$KUBECONFIG_FILE" admin
  write_kubeconfig "$CONF/kube-controller-manager.kubeconfig" kube-controller-manager
  write_kubeconfig "$CONF/kube-scheduler.kubeconfig" kube-scheduler
  write_kubeconfig "$CONF/kwok.kubeconfig" kwok
  cat >"$CONF/kube-scheduler.yaml" <<EOF
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $CONF/kube-scheduler.kubeconfig
  qps: 100
  burst: 200
leaderElection:
  leaderElect: false
EOF
}

# ---------------------------------------------------------------- components

start_etcd() {
  start etcd "$BIN/etcd" \
    --name=loraplane \
    --data-dir="$DIR/etcd" \
    --listen-client-urls="http://$HOST:$ETCD_PORT" \
    --advertise-client-urls="http://$HOST:$ETCD_PORT" \
    --listen-peer-urls="http://$HOST:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://$HOST:$ETCD_PEER_PORT" \
    --initial-cluster="loraplane=http://$HOST:$ETCD_PEER_PORT" \
    --initial-cluster-state=new \
    --auto-compaction-mode=periodic --auto-compaction-retention=1h \
    --quota-backend-bytes=$((2 * 1024 * 1024 * 1024)) \
    --unsafe-no-fsync=true \
    --log-level=warn
}

start_apiserver() {
  # --advertise-address/--endpoint-reconciler-type=none: the apiserver binds loopback only; the
  #   `kubernetes` Endpoints may not hold a loopback IP, so do what k8s' own integration framework
  #   does and not reconcile them (nothing in this cluster dials the service IP).
  # NodeRestriction on top of the default admission plugins, as recommended with the Node authorizer.
  # With a real node the apiserver listens on the bridge address, which is also what the `kubernetes`
  #   Service points at (pods reach it there through kube-proxy).
  local endpoints=(--advertise-address="$HOST" --endpoint-reconciler-type=none)
  # shellcheck disable=SC2054  # the commas are in flag values
  # The real kubelet is reached at its InternalIP (its hostname would be looked up in the machine's DNS).
  $REAL_NODE && endpoints=(--advertise-address="$API_HOST" --endpoint-reconciler-type=lease
                           --kubelet-preferred-address-types=InternalIP,Hostname)
  start kube-apiserver "$BIN/kube-apiserver" \
    --bind-address="$API_HOST" --secure-port="$API_PORT" \
    "${endpoints[@]}" \
    --etcd-servers="http://$HOST:$ETCD_PORT" \
    --tls-cert-file="$PKI/kube-apiserver.crt" --tls-private-key-file="$PKI/kube-apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" \
    --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
    --authorization-mode=Node,RBAC \
    --enable-admission-plugins=NodeRestriction \
    --allow-privileged=true \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --service-account-issuer=https://kubernetes.default.svc \
    --service-account-key-file="$PKI/service-account.pub" \
    --service-account-signing-key-file="$PKI/service-account.key" \
    --kubelet-client-certificate="$PKI/kube-apiserver-kubelet-client.crt" \
    --kubelet-client-key="$PKI/kube-apiserver-kubelet-client.key" \
    --profiling=false \
    --v=1
}

start_controller_manager() {
  # --controllers: everything on by default except the cloud-provider stubs (no-ops without a cloud).
  # --use-service-account-credentials: each controller acts as its own ServiceAccount (as in kubeadm).
  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig="$CONF/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="$CONF/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="$CONF/kube-controller-manager.kubeconfig" \
    --bind-address="$HOST" --secure-port="$KCM_PORT" \
    --leader-elect=false \
    --controllers='*,-service-lb-controller,-node-route-controller,-cloud-node-lifecycle-controller' \
    --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/service-account.key" \
    --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --kube-api-qps=100 --kube-api-burst=200 \
    --profiling=false \
    --v=1
}

start_scheduler() {
  start kube-scheduler "$BIN/kube-scheduler" \
    --config="$CONF/kube-scheduler.yaml" \
    --authentication-kubeconfig="$CONF/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$CONF/kube-scheduler.kubeconfig" \
    --bind-address="$HOST" --secure-port="$SCHED_PORT" \
    --profiling=false \
    --v=1
}

start_kwok() {
  # KWOK_WORKDIR keeps kwok from also loading ~/.kwok/kwok.yaml.  Pod IPs come from --cidr (kept
  # apart from the service CIDR); the fake kubelet endpoint (logs/exec, /healthz) is on $KWOK_PORT.
  mkdir -p "$DIR/kwok"
  KWOK_WORKDIR="$DIR/kwok" start kwok "$BIN/kwok" \
    --kubeconfig="$CONF/kwok.kubeconfig" \
    --config="$KWOK_CONF_DIR/node-stages.yaml" \
    --config="$KWOK_CONF_DIR/pod-stages.yaml" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds=40 \
    --cidr=10.244.0.0/16 \
    --node-ip="$HOST" \
    --node-port="$KWOK_PORT" \
    --server-address="$HOST:$KWOK_PORT" \
    --tls-cert-file="$PKI/kwok.crt" --tls-private-key-file="$PKI/kwok.key"
}

# ---------------------------------------------------------------- readiness

fail() {
  local name
  {
    echo "cluster: up FAILED: $*"
    for name in "${COMPONENTS[@]}"; do
      if alive "$name"; then echo "--- $name: running (pid $(pid_of "$name"))"; else echo "--- $name: NOT running"; fi
      if [[ -f "$LOGS/$name.log" ]]; then
        echo "--- last 40 lines of $LOGS/$name.log:"
        tail -n 40 "$LOGS/$name.log"
      fi
    done
    if [[ -n "${BIN:-}" ]] && alive kube-apiserver; then
      echo "--- kube-apiserver /readyz?verbose (failing checks):"
      curl -s --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
        "https://$API_HOST:$API_PORT/readyz?verbose" 2>&1 | grep -v '^\[+\]' | head -20 || true
      echo "--- nodes and leases:"
      kctl get nodes -o wide 2>&1 | head -10 || true
      kctl -n kube-node-lease get leases 2>&1 | head -10 || true
    fi
  } >&2
  if ((${#STARTED[@]})); then
    if [[ "${LORAPLANE_CLUSTER_KEEP_ON_FAILURE:-}" == 1 ]]; then
      log "leaving ${STARTED[*]} running (LORAPLANE_CLUSTER_KEEP_ON_FAILURE=1); stop with: $0 down"
    else
      log "stopping what this run started: ${STARTED[*]} (set LORAPLANE_CLUSTER_KEEP_ON_FAILURE=1 to keep)"
      $REAL_NODE && node_teardown
      stop_ordered "${STARTED[@]}"
      # the host changes of a half-started real node (bridge, iptables, sysctls, dirs)
      $REAL_NODE && node_restore_host
    fi
  fi
  log "state dir $DIR"
  exit 1
}

kctl() { "$BIN/kubectl" --kubeconfig="$KUBECONFIG_FILE" --request-timeout=10s "$@"; }

curl_api() {  # curl_api <path>: GET on the apiserver as admin
  curl -sf --max-time 5 --cacert "$PKI/ca.crt" --cert "$PKI/admin.crt" --key "$PKI/admin.key" \
    "https://$API_HOST:$API_PORT$1" >/dev/null 2>&1
}

check_etcd() { curl -sf --max-time 5 "http://$HOST:$ETCD_PORT/health" 2>/dev/null | grep -q '"health":"true"'; }
check_apiserver() { curl_api /readyz; }
check_kcm() { curl -skf --max-time 5 "https://$HOST:$KCM_PORT/healthz" >/dev/null 2>&1; }
check_scheduler() { curl -skf --max-time 5 "https://$HOST:$SCHED_PORT/readyz" >/dev/null 2>&1; }
check_kwok() { curl -sf --max-time 5 "http://$HOST:$KWOK_PORT/healthz" >/dev/null 2>&1; }
check_nodes() {  # every node Ready, untainted (tainted with a real node), and its Lease (re)created by the running kwok
  local out n want=""
  $REAL_NODE && want='[{"effect":"NoSchedule","key":"kwok.x-k8s.io/node","value":"fake"}]'
  out="$(kctl get nodes "${NODES[@]}" -o jsonpath='{range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}/{.spec.taints}{"\n"}{end}' 2>/dev/null)" || return 1
  for n in "${NODES[@]}"; do grep -qxF "$n=True/$want" <<<"$out" || return 1; done
  kctl -n kube-node-lease get lease "${NODES[@]}" -o name >/dev/null 2>&1
}
check_default_sa() { kctl -n default get serviceaccount default -o name >/dev/null 2>&1; }

# wait_for <description> <check function> <components that must stay alive>...
wait_for() {
  local desc="$1" check="$2"; shift 2
  local name t0=$EPOCHREALTIME
  while ! "$check"; do
    for name in "$@"; do alive "$name" || fail "$name exited while waiting for: $desc"; done
    ((SECONDS < DEADLINE)) || fail "timed out after ${TIMEOUT}s waiting for: $desc"
    sleep 0.2
  done
  log "ok: $desc ($(elapsed "$t0")s)"
}

elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------- commands

cmd_up() {
  local t0=$EPOCHREALTIME
  case "${1:-}" in
    "") ;;
    --real-node) $REAL_NODE || real_node_mode ;;
    *) log "usage: $0 up [--real-node]"; exit 2 ;;
  esac
  DEADLINE=$((SECONDS + TIMEOUT))
  mkdir -p "$LOGS" "$PIDS"
  lock
  local name any_alive=false
  for name in "${COMPONENTS[@]}"; do alive "$name" && any_alive=true; done
  if $any_alive && [[ -s "$DIR/port-base" && "$(cat "$DIR/port-base")" != "$PORT_BASE" ]]; then
    log "a cluster in $DIR is running with port base $(cat "$DIR/port-base"), not $PORT_BASE; run down first"
    exit 1
  fi
  local ports=("etcd:$ETCD_PORT" "etcd:$ETCD_PEER_PORT" "kube-apiserver:$API_PORT"
               "kube-controller-manager:$KCM_PORT" "kube-scheduler:$SCHED_PORT" "kwok:$KWOK_PORT") p
  $REAL_NODE && ports+=("kubelet:$KUBELET_PORT" "kubelet:$KUBELET_HEALTHZ_PORT" "kube-proxy:$PROXY_HEALTHZ_PORT" "kube-proxy:$PROXY_METRICS_PORT")
  if $any_alive && [[ "$REAL_NODE" == true && ! -e "$DIR/real-node" ]]; then
    log "a cluster without a real node is running in $DIR; run down first"; exit 1
  fi
  for p in "${ports[@]}"; do
    if ! alive "${p%%:*}" && port_open "${p##*:}"; then
      log "port $HOST:${p##*:} (for ${p%%:*}) is in use by another process;" \
          "stop it or choose another LORAPLANE_CLUSTER_PORT_BASE"
      exit 1
    fi
  done
  echo "$PORT_BASE" >"$DIR/port-base"

  BIN="$(bin_dir)" || { log "hack/build-control-plane.sh failed (see above)"; exit 1; }
  for name in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok; do
    [[ -x "$BIN/$name" ]] || { log "missing binary $BIN/$name"; exit 1; }
  done
  echo "$BIN" >"$DIR/bin-dir"
  if $REAL_NODE; then
    touch "$DIR/real-node"
    mkdir -p "$NODE_DIR"
    BIN="$("$HACK_DIR/build-node.sh" | tail -n 1)" || { log "hack/build-node.sh failed (see above)"; exit 1; }
    node_prepare
    DEADLINE=$((SECONDS + TIMEOUT))   # the first preparation on a machine builds; the wait starts now
  fi
  ensure_pki
  write_configs

  start_etcd
  wait_for "etcd /health on $HOST:$ETCD_PORT" check_etcd etcd
  start_apiserver
  wait_for "kube-apiserver /readyz on $HOST:$API_PORT" check_apiserver etcd kube-apiserver
  start_controller_manager
  start_scheduler
  # RBAC for kwok and the fake nodes, before kwok starts (kwok gives up if it cannot list nodes)
  local out
  out="$(kctl apply -f "$KWOK_CONF_DIR/nodes.yaml" 2>&1)" || fail "kubectl apply -f $KWOK_CONF_DIR/nodes.yaml: $out"
  if $REAL_NODE; then  # pods that do not tolerate it land on the real node only
    out="$(kctl taint nodes "${NODES[@]}" "$REAL_NODE_TAINT" --overwrite 2>&1)" || fail "tainting the KWOK nodes: $out"
  fi
  if ! alive kwok; then
    # A new kwok process has a new random holder identity and would wait for the previous
    # process's node Leases to expire (--node-lease-duration-seconds) before it manages the nodes
    # again; the previous kwok is gone, so hand the Leases over at once.
    out="$(kctl -n kube-node-lease delete lease "${NODES[@]}" --ignore-not-found 2>&1)" \
      || fail "deleting stale node leases: $out"
  fi
  start_kwok
  wait_for "kube-controller-manager /healthz on $HOST:$KCM_PORT" check_kcm kube-controller-manager
  wait_for "kube-scheduler /readyz on $HOST:$SCHED_PORT" check_scheduler kube-scheduler
  wait_for "kwok /healthz on $HOST:$KWOK_PORT" check_kwok kwok
  local taint=untainted; $REAL_NODE && taint="tainted ${REAL_NODE_TAINT}"
  wait_for "nodes ${NODES[*]} Ready, $taint, with kwok leases" check_nodes "${CONTROL_PLANE[@]}"
  wait_for "ServiceAccount default/default" check_default_sa "${CONTROL_PLANE[@]}"
  $REAL_NODE && node_start
  log "ready in $(elapsed "$t0")s: apiserver https://$API_HOST:$API_PORT, logs in $LOGS"
  echo "$KUBECONFIG_FILE"
}

cmd_down() {
  local purge=false
  case "${1:-}" in
    "") ;;
    --purge) purge=true ;;
    *) log "usage: $0 down [--purge]"; exit 2 ;;
  esac
  [[ -d "$DIR" ]] || return 0
  lock
  if $REAL_NODE || [[ -d "$NODE_DIR" ]]; then
    BIN="$(cat "$DIR/bin-dir" 2>/dev/null || true)"
    # nothing may recreate pods while the node is drained; the apiserver stays until the node is gone
    stop_group "$STOP_TIMEOUT" kwok kube-scheduler kube-controller-manager
    node_teardown
    stop_ordered "${COMPONENTS[@]}"
    node_restore_host
    rm -f "$DIR/real-node"
  fi
  stop_ordered "${COMPONENTS[@]}"
  if $purge; then
    case "$DIR" in
      / | "$HOME" | "$HOME/" | "") log "refusing to delete $DIR"; exit 1 ;;
    esac
    log "deleting $DIR"
    rm -rf "$DIR"
  fi
}

cmd_status() {
  local name all=0
  for name in "${COMPONENTS[@]}"; do
    if alive "$name"; then
      printf '%-24s running (pid %s)\n' "$name" "$(pid_of "$name")"
    else
      printf '%-24s stopped\n' "$name"; all=1
    fi
  done
  echo "apiserver: https://$API_HOST:$(cat "$DIR/port-base" 2>/dev/null || echo "$API_PORT")"
  echo "kubeconfig: $KUBECONFIG_FILE"
  return $all
}

cmd_env() {
  local bin
  if [[ -z "${LORAPLANE_CLUSTER_BIN_DIR:-}" && -s "$DIR/bin-dir" && -x "$(cat "$DIR/bin-dir")/kubectl" ]]; then
    bin="$(cat "$DIR/bin-dir")"
  else
    bin="$(bin_dir)"
  fi
  printf 'export KUBECONFIG=%q\n' "$KUBECONFIG_FILE"
  # shellcheck disable=SC2016  # $PATH is expanded by whoever evals this
  printf 'export PATH=%q:"$PATH"\n' "$bin"
}

case "${1:-}" in
  up) shift; cmd_up "$@" ;;
  down) shift; cmd_down "$@" ;;
  status) shift; cmd_status "$@" ;;
  env) shift; cmd_env "$@" ;;
  *) echo "usage: $0 up [--real-node]|down [--purge]|status|env" >&2; exit 2 ;;
esac
