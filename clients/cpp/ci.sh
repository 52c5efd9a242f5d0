#!/usr/bin/env bash
# CI of the C/C++ client: installs g++ (and python3, used by the test
# scripts) from Debian's packages when missing, checks the C header against
# the Rust side and runs the C ABI's unit tests (cargo test -p lars-capi),
# builds the agent, then runs clients/cpp/tests/run.sh against a real agent.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
start=$(date +%s)

missing=()
command -v g++ > /dev/null 2>&1 || missing+=(g++)
command -v gcc > /dev/null 2>&1 || missing+=(gcc)
command -v python3 > /dev/null 2>&1 || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
    echo "ci.sh: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}"
fi

cd "$ROOT"
cargo test --quiet -p lars-capi
cargo build --quiet -p lars-agent-bin
"$HERE/tests/run.sh"
echo "ci.sh: clients/cpp passed in $(($(date +%s) - start)) s"
