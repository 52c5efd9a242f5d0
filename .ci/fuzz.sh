#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ for a short bounded time on the committed
# corpus (fuzz/corpus/<target>), with memory limits. Exits non-zero when a
# target crashes, panics, times out or exceeds its memory limit; the input
# that did it is left in fuzz/artifacts/<target>/.
#
#   .ci/fuzz.sh               every target, FUZZ_SECONDS (default 10) each
#   .ci/fuzz.sh lb_ops        only the named targets
#   FUZZ_SANITIZER=address .ci/fuzz.sh   with AddressSanitizer (default none:
#                             the fuzzed code has no unsafe; debug assertions
#                             and overflow checks are on either way, and the
#                             build is several times faster without it)
#
# Needs the nightly toolchain (rustup toolchain install nightly); installs
# cargo-fuzz when missing. The committed corpus is not modified: new inputs
# go to a scratch directory that is removed afterwards.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds="${FUZZ_SECONDS:-10}"
sanitizer="${FUZZ_SANITIZER:-none}"
if ! cargo +nightly --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal \
        || { echo "fuzz: the nightly toolchain is missing and cannot be installed" >&2; exit 1; }
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

for t in "${targets[@]}"; do
    cargo +nightly fuzz build -s "$sanitizer" "$t"
done

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
failed=()
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t" "corpus/$t"
    echo "== fuzz $t for ${seconds}s"
    # -timeout: one input taking longer than 10 s is a hang.
    if ! cargo +nightly fuzz run -s "$sanitizer" "$t" "$scratch/$t" "corpus/$t" -- \
        -max_total_time="$seconds" -timeout=10 \
        -rss_limit_mb=2048 -malloc_limit_mb=512 \
        -print_final_stats=1 2>"$scratch/$t.log"; then
        tail -n 40 "$scratch/$t.log" >&2
        failed+=("$t")
    else
        grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)' "$scratch/$t.log" || true
    fi
done
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
echo "fuzz: ok (${#targets[@]} targets, ${seconds}s each)"
