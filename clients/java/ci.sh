#!/bin/sh
# CI for the Java client: installs a JDK from Debian's packages if javac is
# missing, builds the jars, builds the agent the tests start (if missing),
# and runs the test main against it. Exits non-zero on any failure.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
start=$(date +%s)
if ! command -v javac >/dev/null 2>&1; then
    echo "ci.sh: javac not found: installing openjdk-17-jdk-headless" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq openjdk-17-jdk-headless
fi
"$here/build.sh"
agent="${LARS_AGENT_BIN:-${CARGO_TARGET_DIR:-$root/target}/debug/lars-agent}"
if [ ! -x "$agent" ]; then
    echo "ci.sh: building the agent the tests start ($agent)" >&2
    (cd "$root" && cargo build -q -p lars-agent-bin)
fi
java -Dlars.agent.bin="$agent" -cp "$here/build/lars-client.jar:$here/build/lars-client-tests.jar" \
    lars.client.ClientTest "$@"
echo "ci.sh: java client ok in $(($(date +%s) - start)) s" >&2
