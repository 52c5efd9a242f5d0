#!/usr/bin/env bash
# The Go client's conformance driver (see clients/conformance):
#   driver.sh check --base-port P --ports 3 --timeout-ms 50 --modid M --cmdid C \
#       --hosts IP:PORT,IP:PORT,IP:PORT --report-host IP:PORT --stall-port S
#   driver.sh bench --base-port P --ports 3 --timeout-ms 50 --modid M --cmdid C --seconds N
# Builds the driver (incrementally) then runs it. Exits 77 with `SKIP <reason>`
# when no Go toolchain is installed.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
if ! lars_find_go; then
    echo "SKIP no Go toolchain (apt-get install golang-go)"
    exit 77
fi
mkdir -p "$LARS_GO_BIN"
(cd "$LARS_GO_DIR" && go build -o "$LARS_GO_BIN/lars-go-driver" ./cmd/lars-go-driver)
exec "$LARS_GO_BIN/lars-go-driver" "$@"
