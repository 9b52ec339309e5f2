#!/usr/bin/env bash
# The local image registry: Debian's docker-registry (the CNCF distribution registry), plain HTTP on
# loopback, filesystem storage in the cache (images survive a restart; `make images` pushes there and
# the real node's containerd pulls from there).
#
# Usage:
#   hack/registry.sh up      start it (no-op when running); last stdout line = its address
#   hack/registry.sh down    stop it (the stored images stay)
#   hack/registry.sh status  running or not (exit 1 if not)
#   hack/registry.sh addr    the address (host:port) clients use
#
# Environment:
#   LORAPLANE_REGISTRY_DIR   state dir (default ~/.cache/loraplane/registry): data/, config.yml, registry.log, registry.pid
#   LORAPLANE_REGISTRY_PORT  port (default 5000)
#   LORAPLANE_REGISTRY_HOST  address it listens on (default 127.0.0.1; e.g. the real node's bridge address, for
#                            pods: only addresses of this machine's loopback or of bridges the project creates)
#   LORAPLANE_REGISTRY_HTPASSWD  an htpasswd file (bcrypt): clients must log in (default: open, loopback only)
set -euo pipefail

HACK_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${LORAPLANE_CACHE:-$HOME/.cache/loraplane}"
DIR="${LORAPLANE_REGISTRY_DIR:-$CACHE/registry}"
PORT="${LORAPLANE_REGISTRY_PORT:-5000}"
HOST="${LORAPLANE_REGISTRY_HOST:-127.0.0.1}"
ADDR="$HOST:$PORT"
PIDFILE="$DIR/registry.pid"

log() { echo "registry: $*" >&2; }

alive() {  # the pid exists and its command line names our config (guards against pid reuse)
  local pid; [[ -s "$PIDFILE" ]] && pid="$(cat "$PIDFILE")" || return 1
  kill -0 "$pid" 2>/dev/null && tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$DIR/config.yml"
}
healthy() {  # 200, or 401 when it asks for a login
  local code; code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://$ADDR/v2/" 2>/dev/null)"
  [[ "$code" == 200 || "$code" == 401 ]]
}

cmd_up() {
  mkdir -p "$DIR/data"
  exec 9>"$DIR/lock"; flock -w 60 9
  if alive; then
    healthy || { log "running (pid $(cat "$PIDFILE")) but http://$ADDR/v2/ does not answer"; exit 1; }
    echo "$ADDR"; return 0
  fi
  "$HACK_DIR/install-debs.sh" images
  if (exec 3<>"/dev/tcp/$HOST/$PORT") 2>/dev/null; then
    log "$ADDR is in use by another process; choose another LORAPLANE_REGISTRY_PORT"; exit 1
  fi
  cat >"$DIR/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $DIR/data
  delete:
    enabled: true
  redirect:
    disable: true
http:
  addr: $ADDR
  headers:
    X-Content-Type-Options: [nosniff]
EOF
  if [[ -n "${LORAPLANE_REGISTRY_HTPASSWD:-}" ]]; then
    printf 'auth:\n  htpasswd:\n    realm: loraplane\n    path: %s\n' "$LORAPLANE_REGISTRY_HTPASSWD" >>"$DIR/config.yml"
  fi
  rm -f "$PIDFILE"
  log "starting docker-registry on http://$ADDR (storage $DIR/data)"
  # shellcheck disable=SC2016  # $$ and $@ are for the inner sh
  setsid sh -c 'echo $$ >"$0.tmp" && mv "$0.tmp" "$0" && exec "$@"' "$PIDFILE" \
    docker-registry serve "$DIR/config.yml" </dev/null >>"$DIR/registry.log" 2>&1 9>&- &
  local deadline=$((SECONDS + 30))
  until healthy; do
    if ! alive && [[ -s "$PIDFILE" ]]; then log "exited; last lines of $DIR/registry.log:"; tail -n 20 "$DIR/registry.log" >&2; exit 1; fi
    ((SECONDS < deadline)) || { log "no answer on http://$ADDR/v2/ after 30s"; exit 1; }
    sleep 0.1
  done
  echo "$ADDR"
}

cmd_down() {
  [[ -d "$DIR" ]] || return 0
  exec 9>"$DIR/lock"; flock -w 60 9
  alive || { rm -f "$PIDFILE"; return 0; }
  local pid; pid="$(cat "$PIDFILE")"
  log "stopping docker-registry (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 15))
  while kill -0 "$pid" 2>/dev/null; do
    ((SECONDS < deadline)) || { kill -KILL "$pid" 2>/dev/null || true; break; }
    sleep 0.1
  done
  rm -f "$PIDFILE"
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) if alive; then echo "docker-registry running (pid $(cat "$PIDFILE")) on http://$ADDR"; else echo "docker-registry stopped"; exit 1; fi ;;
  addr) echo "$ADDR" ;;
  *) echo "usage: $0 up|down|status|addr" >&2; exit 2 ;;
esac
