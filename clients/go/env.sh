# Sourced by driver.sh and ci.sh: finds the Go toolchain and keeps every Go
# cache under the cargo target dir, offline (the module is stdlib only, so
# nothing is ever downloaded).
LARS_GO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LARS_ROOT="$(cd "$LARS_GO_DIR/../.." && pwd)"
LARS_TARGET="${CARGO_TARGET_DIR:-$LARS_ROOT/target}"
case "$LARS_TARGET" in /*) ;; *) LARS_TARGET="$LARS_ROOT/$LARS_TARGET" ;; esac
export GOPATH="$LARS_TARGET/go/path"
export GOCACHE="$LARS_TARGET/go/cache"
export GOFLAGS="-mod=readonly"
export GOPROXY=off GOSUMDB=off GONOSUMDB='*' GO111MODULE=on GOTOOLCHAIN=local
export CGO_ENABLED=0
LARS_GO_BIN="$LARS_TARGET/go/bin"

# Puts a Go toolchain on PATH; returns 1 when there is none.
lars_find_go() {
    if command -v go >/dev/null 2>&1; then return 0; fi
    local d
    for d in /usr/lib/go/bin /usr/lib/go-1.*/bin; do
        if [ -x "$d/go" ]; then PATH="$d:$PATH"; export PATH; return 0; fi
    done
    return 1
}
