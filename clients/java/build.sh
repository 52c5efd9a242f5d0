#!/bin/sh
# Builds the Java client with plain javac + jar (JDK 17, no third-party
# dependency) into clients/java/build/:
#   lars-client.jar        the library (package lars.client)
#   lars-client-tests.jar  the test main (lars.client.ClientTest)
#   lars-driver.jar        the conformance driver (lars.client.driver.Driver)
# Builds in a temporary directory and moves the jars into place, so a
# concurrent run never sees a half-written jar.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
if ! command -v javac >/dev/null 2>&1 || ! command -v jar >/dev/null 2>&1; then
    echo "build.sh: javac/jar not found (install openjdk-17-jdk-headless)" >&2
    exit 77
fi
mkdir -p build
tmp=$(mktemp -d "$here/build/tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
flags="--release 17 -encoding UTF-8 -Xlint:all -Werror"
mainflags="-Xdoclint:all/protected -Xdoclint:-missing"

find src/main/java -name '*.java' > "$tmp/main.list"
# shellcheck disable=SC2086
javac $flags $mainflags -d "$tmp/main" @"$tmp/main.list"
printf 'Automatic-Module-Name: lars.client\nImplementation-Title: lars-client\n' > "$tmp/manifest"
jar --create --file "$tmp/lars-client.jar" --manifest "$tmp/manifest" -C "$tmp/main" .

find src/test/java -name '*.java' > "$tmp/test.list"
# Same package as the library (tests reach its package-private codec): the
# test classes are compiled against the library's sources.
# shellcheck disable=SC2086
javac $flags -d "$tmp/test" -cp "$tmp/main" @"$tmp/test.list"
jar --create --file "$tmp/lars-client-tests.jar" --main-class lars.client.ClientTest -C "$tmp/test" .

find src/driver/java -name '*.java' > "$tmp/driver.list"
# shellcheck disable=SC2086
javac $flags -d "$tmp/driver" -cp "$tmp/main" @"$tmp/driver.list"
jar --create --file "$tmp/lars-driver.jar" --main-class lars.client.driver.Driver -C "$tmp/driver" .

mv -f "$tmp/lars-client.jar" "$tmp/lars-client-tests.jar" "$tmp/lars-driver.jar" build/
echo "build.sh: built $here/build/lars-client.jar, lars-client-tests.jar, lars-driver.jar" >&2
