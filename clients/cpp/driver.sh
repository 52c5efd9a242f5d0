#!/usr/bin/env bash
# The conformance driver of the C/C++ client (see clients/cpp/README.md):
#   driver.sh check --base-port P --ports 3 --timeout-ms 50 --modid M --cmdid C \
#       --hosts IP:PORT,... --report-host IP:PORT --stall-port S
#   driver.sh bench --base-port P --ports 3 --timeout-ms 50 --modid M --cmdid C --seconds N
# Builds liblars and the driver when missing or stale; SKIP (exit 77) when
# g++ or cargo is missing.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
for tool in g++ cargo python3; do
    if ! command -v "$tool" > /dev/null 2>&1; then
        echo "SKIP $tool not installed (clients/cpp/ci.sh installs the toolchain)"
        exit 77
    fi
done
"$HERE/build.sh" > /dev/null
exec "$HERE/build/driver" "$@"
