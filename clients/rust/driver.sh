#!/usr/bin/env bash
# The Rust client's conformance driver (issue 14): builds
# lars-client/examples/conformance.rs (release for bench mode) and runs it
# with the same arguments. See clients/conformance/run.py.
#   driver.sh check --base-port P --ports 3 --timeout-ms 50 --modid M --cmdid C \
#       --hosts IP:PORT,... --report-host IP:PORT --stall-port S
#   driver.sh bench --base-port P --ports 3 --timeout-ms 50 --modid M --cmdid C --seconds N
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
if ! command -v cargo >/dev/null 2>&1; then
    echo "SKIP cargo not found"
    exit 77
fi
profile=debug
flags=()
if [[ "${1:-}" == "bench" ]]; then
    profile=release
    flags=(--release)
fi
# A no-op when up to date; build output goes to stderr, stdout is the result.
(cd "$root" && cargo build -q -p lars-client --example conformance "${flags[@]}") >&2
target="${CARGO_TARGET_DIR:-$root/target}"
exec "$target/$profile/examples/conformance" "$@"
