#!/usr/bin/env bash
# Builds liblars (cargo, release) and the C++ programs of clients/cpp into
# clients/cpp/build/ (plain g++, linked with -llars). Re-runs only what is
# out of date. Prints the library directory on its last line.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT="$HERE/build"
mkdir -p "$OUT"

cargo build --quiet --release -p lars-capi --manifest-path "$ROOT/Cargo.toml" >&2
TARGET=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}
LIB="$TARGET/release"
[ -f "$LIB/liblars.so" ] || { echo "build.sh: $LIB/liblars.so missing after cargo build" >&2; exit 1; }

CXXFLAGS=(-std=c++17 -O2 -Wall -Wextra -Werror -pthread -I"$HERE/include")
LINK=(-L"$LIB" -llars -Wl,-rpath,"$LIB")

# build OUT_NAME SOURCE [flags...]: compile when missing or older than the
# source, the headers or the library.
build() {
    local out="$OUT/$1" src="$2"
    shift 2
    if [ ! -x "$out" ] || [ "$src" -nt "$out" ] || [ "$HERE/include/lars_api.h" -nt "$out" ] ||
        [ "$HERE/include/lars.h" -nt "$out" ] || [ "$HERE/examples/common.h" -nt "$out" ] ||
        [ "$LIB/liblars.so" -nt "$out" ]; then
        g++ "$@" "$src" -o "$out.tmp" "${LINK[@]}" >&2
        mv "$out.tmp" "$out"
    fi
}

for p in get_host get_route report simulator qps; do
    build "$p" "$HERE/examples/$p.cpp" "${CXXFLAGS[@]}"
done
build driver "$HERE/driver.cpp" "${CXXFLAGS[@]}"
build api_test "$HERE/tests/api_test.cpp" "${CXXFLAGS[@]}"
# Written against the original header: plain g++, its default language
# level, no flags but the include path.
build original_example "$HERE/tests/original_example.cpp" -I"$HERE/include"
# The C header from C99.
if [ ! -x "$OUT/c_example" ] || [ "$HERE/tests/c_example.c" -nt "$OUT/c_example" ] ||
    [ "$HERE/include/lars.h" -nt "$OUT/c_example" ] || [ "$LIB/liblars.so" -nt "$OUT/c_example" ]; then
    gcc -std=c99 -Wall -Wextra -Werror -pedantic -I"$HERE/include" "$HERE/tests/c_example.c" \
        -o "$OUT/c_example" "${LINK[@]}" >&2
fi
# The static library works too (no rpath needed).
if [ ! -x "$OUT/get_host_static" ] || [ "$LIB/liblars.a" -nt "$OUT/get_host_static" ] ||
    [ "$HERE/examples/get_host.cpp" -nt "$OUT/get_host_static" ]; then
    g++ "${CXXFLAGS[@]}" "$HERE/examples/get_host.cpp" -o "$OUT/get_host_static" \
        "$LIB/liblars.a" -ldl -lm >&2
fi
echo "$LIB"
