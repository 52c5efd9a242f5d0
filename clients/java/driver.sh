#!/bin/sh
# The Java client's conformance driver (issue 14): builds the jars with
# build.sh when missing or older than a source, then runs
# lars.client.driver.Driver with the same arguments. See
# clients/conformance/run.py.
#   driver.sh check --base-port P --ports 3 --timeout-ms 50 --modid M --cmdid C \
#       --hosts IP:PORT,... --report-host IP:PORT --stall-port S
#   driver.sh bench --base-port P --ports 3 --timeout-ms 50 --modid M --cmdid C --seconds N
# Exit 77 with "SKIP <reason>" when no JDK is installed.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
for tool in java javac jar; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "SKIP $tool not found (install openjdk-17-jdk-headless)"
        exit 77
    fi
done
lib="$here/build/lars-client.jar"
drv="$here/build/lars-driver.jar"
if [ ! -f "$lib" ] || [ ! -f "$drv" ] \
    || [ -n "$(find "$here/src" -name '*.java' -newer "$drv" | head -n 1)" ]; then
    # Build output goes to stderr: stdout is the result.
    "$here/build.sh" >&2
fi
exec java -cp "$lib:$drv" lars.client.driver.Driver "$@"
