#!/usr/bin/env bash
# CI of the Go client: installs Go from Debian's packages if missing, builds
# the lars agent the tests start, then gofmt, go vet and go test (with the
# race detector when cgo works), all offline.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
start=$(date +%s)

if ! lars_find_go; then
    echo "==> installing golang-go"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq golang-go >/dev/null || { apt-get update -qq && apt-get install -y -qq golang-go >/dev/null; }
    lars_find_go
fi
go version

echo "==> cargo build -p lars-agent-bin"
(cd "$LARS_ROOT" && cargo build -q -p lars-agent-bin)
export LARS_AGENT_BIN="$LARS_TARGET/debug/lars-agent"

cd "$LARS_GO_DIR"
echo "==> gofmt"
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
    echo "gofmt: these files need formatting:" >&2
    echo "$unformatted" >&2
    exit 1
fi
echo "==> go vet"
go vet ./...
echo "==> go build (driver)"
mkdir -p "$LARS_GO_BIN"
go build -o "$LARS_GO_BIN/lars-go-driver" ./cmd/lars-go-driver
echo "==> go test"
if command -v gcc >/dev/null 2>&1; then
    CGO_ENABLED=1 go test -race -count=1 ./...
else
    go test -count=1 ./...
fi
echo "==> Go client CI passed in $(( $(date +%s) - start ))s"
