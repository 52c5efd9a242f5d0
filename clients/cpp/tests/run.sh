#!/usr/bin/env bash
# The C/C++ client's tests against a real lars-agent: builds everything
# (build.sh), starts an agent serving two keys from a snapshot, then runs the
# API tests, the program written against the original header, the example
# programs (output lines as `lars`'s), and the conformance driver. Exits
# non-zero on any failure; stops the agent and every helper it started.
set -euo pipefail
HERE=$(cd "$(dirname "$0")/.." && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
"$HERE/build.sh" > /dev/null
BIN="$HERE/build"
TARGET=${CARGO_TARGET_DIR:-$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')}
LARS_TARGET=${LARS_TARGET:-$TARGET/debug}
[ -x "$LARS_TARGET/lars-agent" ] || cargo build --quiet -p lars-agent-bin --manifest-path "$ROOT/Cargo.toml"
export BIN LARS_TARGET
# shellcheck source=agent.sh
. "$HERE/tests/agent.sh"

STALL_PID=
cleanup() {
    stop_agent
    if [ -n "$STALL_PID" ]; then
        kill "$STALL_PID" 2> /dev/null || true
        wait "$STALL_PID" 2> /dev/null || true
    fi
}
trap cleanup EXIT

PASS=0
FAIL=0
ok() { PASS=$((PASS + 1)); }
bad() { FAIL=$((FAIL + 1)); echo "FAIL: $*"; }
# expect_match NAME REGEX TEXT: some line of TEXT matches REGEX (grep -E).
# A here-string, not a pipe: under pipefail, `grep -q` exiting at its first
# match can fail the writer with SIGPIPE and the pipeline with it.
expect_match() {
    if grep -Eq -- "$2" <<< "$3"; then ok; else bad "$1: no line matches /$2/ in:"; printf '%s\n' "$3"; fi
}

M=41 C=2
HOSTS="127.0.0.1:9101 127.0.0.1:9102 127.0.0.1:9103"
BIG=""
for i in $(seq 1 70); do BIG="$BIG 10.1.0.$i:80"; done
# The driver gets a key of its own: the reports above (failures included)
# move the agent's view of the first key's hosts.
DM=42 DC=2
DHOSTS="127.0.0.1:9201,127.0.0.1:9202,127.0.0.1:9203"
AGENT_EXTRA_ROUTES="43 2$BIG
$DM $DC ${DHOSTS//,/ }"
start_agent "$M" "$C" $HOSTS
P=$AGENT_PORT
echo "agent on UDP $P..$((P + 2))"

# 1. The C++ API.
if out=$("$BIN/api_test" "$P" "$M" "$C" "${HOSTS// /,}" 43 2 70 2>&1); then ok; else bad "api_test"; fi
printf '%s\n' "$out" | tail -1

# 1b. The C API from C.
out=$("$BIN/c_example" "$P" "$M" "$C" 2>&1) || bad "c_example exit"
expect_match c_route '^route 127\.0\.0\.1:910[123]$' "$out"
expect_match c_host '^host is 127\.0\.0\.1:910[123]$' "$out"
expect_match c_ok '^c api ok$' "$out"

# 2. A program written against the original header (default constructor,
#    moved to the test agent by the environment).
out=$(LARS_AGENT_BASE_PORT=$P "$BIN/original_example" "$M" "$C" 2>&1) || bad "original_example exit"
expect_match original_route '^get route succ!$' "$out"
expect_match original_host '^host is 127\.0\.0\.1:910[123]$' "$out"
expect_match original_extras '^checks 1, 3 hosts$' "$out"

# A bad environment value: a clear line and exit 1, as the original's
# constructor on socket errors.
if out=$(LARS_AGENT_BASE_PORT=abc "$BIN/original_example" "$M" "$C" 2>&1); then bad "LARS_AGENT_BASE_PORT=abc accepted"; else
    expect_match env_bad_port '^lars_client: LARS_AGENT_BASE_PORT=abc: not a number 1-65535$' "$out"
fi
if out=$(LARS_AGENT_IP=1.2.3 "$BIN/original_example" "$M" "$C" 2>&1); then bad "LARS_AGENT_IP=1.2.3 accepted"; else
    expect_match env_bad_ip '^lars_client: agent 1\.2\.3:8888 .*invalid argument$' "$out"
fi

# 3. The example programs: same command lines and output lines as lars's.
out=$("$BIN/get_host" --base-port "$P" "$M" "$C")
expect_match get_host '^host is 127\.0\.0\.1:910[123]$' "$out"
out=$("$BIN/get_host_static" "$M" "$C" --base-port="$P")
expect_match get_host_static '^host is 127\.0\.0\.1:910[123]$' "$out"
out=$("$BIN/get_route" --base-port "$P" --ports 3 --timeout-ms 100 "$M" "$C")
[ "$(printf '%s\n' "$out" | sort | tr '\n' ' ')" = "$HOSTS " ] && ok || bad "get_route lists: $out"
out=$("$BIN/report" --base-port "$P" "$M" "$C" 127.0.0.1 9101 1 2.5)
expect_match report '^report sent: modid = 41, cmdid = 2 \| 127\.0\.0\.1:9101 failure \(UDP, not acknowledged\)$' "$out"
out=$("$BIN/report" "$M" "$C" 127.0.0.1 9102 0 --latency 3 --base-port "$P")
expect_match report_latency_opt '^report sent: modid = 41, cmdid = 2 \| 127\.0\.0\.1:9102 success' "$out"
out=$("$BIN/simulator" --base-port "$P" "$M" "$C" 0.3 30 --interval-ms 0 --seed 7 -v)
expect_match sim_head '^err_rate = 3/10, count = 30, seed = 7$' "$out"
expect_match sim_latency '^latency: lognormal, median 5 ms, sigma 0\.5 \(drawn per call' "$out"
expect_match sim_call '^0: host 127\.0\.0\.1:910[123] called (SUCCESS|ERROR) in [0-9.]+ ms$' "$out"
expect_match sim_host '^  127\.0\.0\.1:910[123]: success: [0-9]+; error: [0-9]+$' "$out"
expect_match sim_none '^answers without host: overload 0, noexist 0, system 0, timeout 0, socket errors 0$' "$out"
expect_match sim_reported '^latency reported: p50 [0-9]+ ms, p99 [0-9]+ ms \(30 reports\)$' "$out"
# The tally adds up to the count.
total=$(printf '%s\n' "$out" | sed -nE 's/^  [0-9.:]+: success: ([0-9]+); error: ([0-9]+)$/\1 \2/p' | awk '{s+=$1+$2} END {print s}')
[ "$total" = 30 ] && ok || bad "simulator tally $total != 30"
out=$("$BIN/simulator" --base-port "$P" "$M" "$C" 0 5 --interval-ms 0 --latency-ms 0)
expect_match sim_off '^latency: off \(reports carry no timecost\)$' "$out"
expect_match sim_off_none '^latency reported: none$' "$out"
out=$("$BIN/qps" --base-port "$P" 1 --duration 1 --per-thread)
expect_match qps_head "^lars qps: 1 threads for 1s against the agent at 127\.0\.0\.1:$P\.\.$" "$out"
expect_match qps_second '^lars \[  1s\] qps = [0-9]+$' "$out"
expect_match qps_thread '^  thread:\[0\] --> qps = \[[0-9]+\]$' "$out"
expect_match qps_raw '^raw \[  1s\] qps = [0-9]+$' "$out"
expect_match qps_sum '^lars: 1 threads, [0-9.]+s: average [0-9]+ req/s \(answered [0-9]+, no host [0-9]+, errors 0\)$' "$out"
expect_match qps_ratio '^ratio lars/raw = [0-9.]+$' "$out"

# Errors: a clear line and a non-zero exit, never a hang.
if out=$("$BIN/get_host" --base-port "$P" 999 2 2>&1); then bad "get_host of an unknown key succeeded"; else
    expect_match get_host_noexist '^lars: get_host modid 999, cmdid 2 \(agent 127\.0\.0\.1:[0-9]+\): no host exists' "$out"
fi
if out=$("$BIN/get_host" --base-port "$P" -- -1 2 2>&1); then bad "negative modid accepted"; else
    expect_match get_host_negative 'not an id' "$out"
fi
if out=$("$BIN/report" --base-port "$P" "$M" "$C" 10.0.0 80 0 2>&1); then bad "bad ip accepted"; else
    expect_match report_bad_ip 'not an IPv4 address' "$out"
fi
if out=$("$BIN/get_route" --base-port 0 "$M" "$C" 2>&1); then bad "base port 0 accepted"; else
    expect_match base_port_0 'not a port' "$out"
fi

# 4. The conformance driver. This agent serves the key from its snapshot
#    (no dns), so the first get_host already has a host: check 1 is run by
#    clients/conformance/run.py; here checks 2-6 must pass. A silent helper
#    holds the stall ports.
S=$(free_base_port)
python3 -c '
import socket, sys, time
socks = []
for p in range(int(sys.argv[1]), int(sys.argv[1]) + 3):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", p)); socks.append(s)
time.sleep(60)
' "$S" &
STALL_PID=$!
sleep 0.3
out=$("$HERE/driver.sh" check --base-port "$P" --ports 3 --timeout-ms 50 --modid "$DM" --cmdid "$DC" \
    --hosts "$DHOSTS" --report-host 127.0.0.1:9201 --stall-port "$S" 2>&1) || true
printf '%s\n' "$out"
[ "$(printf '%s\n' "$out" | grep -c '^CHECK ')" = 6 ] && ok || bad "driver: 6 CHECK lines"
expect_match driver_first '^CHECK noexist_then_host (PASS|FAIL) ' "$out"
for c in round_robin report get_route timeout bad_input; do
    expect_match "driver_$c" "^CHECK $c PASS " "$out"
done
out=$("$HERE/driver.sh" bench --base-port "$P" --ports 3 --timeout-ms 50 --modid "$DM" --cmdid "$DC" --seconds 1)
expect_match driver_bench '^BENCH ops_per_sec [1-9][0-9]*$' "$out"

echo "$PASS passed, $FAIL failed"
[ "$FAIL" = 0 ]
