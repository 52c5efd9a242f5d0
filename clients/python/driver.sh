#!/usr/bin/env bash
# The Python client's conformance driver (issue 14); see
# clients/conformance/run.py. Runs the package from this directory (nothing
# to build; stdlib only).
#   driver.sh check --base-port P --ports 3 --timeout-ms 50 --modid M --cmdid C \
#       --hosts IP:PORT,... --report-host IP:PORT --stall-port S
#   driver.sh bench --base-port P --ports 3 --timeout-ms 50 --modid M --cmdid C --seconds N
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-python3}"
if ! command -v "$py" >/dev/null 2>&1; then
    echo "SKIP $py not found"
    exit 77
fi
if ! "$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)'; then
    echo "SKIP $py is older than 3.9"
    exit 77
fi
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
exec "$py" "$here/conformance_driver.py" "$@"
