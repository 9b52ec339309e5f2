#!/usr/bin/env bash
# Build versitygw (github.com/versity/versitygw, Apache-2.0), the S3-compatible server the s3:// adapter
# store's tests run against (tests/support/s3.py), from the Go module proxy, once, into the cache outside
# the clone.  Its module, build and GOPATH caches live under the same cache root (not ~/go), so a clean
# clone or a wiped ~/go costs nothing and nothing is written into the clone.  A second run finds the
# binary and returns at once.
# Usage: hack/build-s3-server.sh            (prints the binary's path on its last line)
set -euo pipefail

VERSITYGW_VERSION="${VERSITYGW_VERSION:-v1.8.0}"
CACHE="${LORAPLANE_CACHE:-$HOME/.cache/loraplane}"
DIR="$CACHE/versitygw/$VERSITYGW_VERSION"
BIN="$DIR/bin/versitygw"
T0=$SECONDS

log() { printf 'build-s3-server [%3ds]: %s\n' "$((SECONDS - T0))" "$*" >&2; }
if [ -x "$BIN" ]; then log "up to date: versitygw $VERSITYGW_VERSION"; echo "$BIN"; exit 0; fi

command -v go >/dev/null || { log "'go' is not on PATH; install Go >= 1.26"; exit 1; }
mkdir -p "$DIR/bin"
# One build at a time per cache; a concurrent run may have finished while this one waited.
exec 9>"$DIR/build.lock"
if ! flock -n 9; then log "another build holds $DIR/build.lock; waiting"; flock 9; fi
if [ -x "$BIN" ]; then log "up to date (built by a concurrent run)"; echo "$BIN"; exit 0; fi

export GOPATH="$CACHE/go" GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build"
export GOFLAGS="-mod=mod" GOTOOLCHAIN=local CGO_ENABLED=0
log "building versitygw $VERSITYGW_VERSION from the Go module proxy (module cache $GOMODCACHE; ~2 min cold)"
tmp="$(mktemp -d "$DIR/bin/.gobin.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
# versitygw's go.mod has no replace directives, so `go install m@v` builds exactly its go.sum.
GOBIN="$tmp" go install -trimpath -ldflags "-s -w -X main.Version=$VERSITYGW_VERSION" \
  "github.com/versity/versitygw/cmd/versitygw@$VERSITYGW_VERSION" >&2
mv "$tmp/versitygw" "$BIN"
log "built $BIN"
echo "$BIN"
