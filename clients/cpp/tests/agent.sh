# Sourced by the cpp tests: start_agent MODID CMDID HOSTS... starts a real
# lars-agent serving that key from a snapshot (no dns) on three free UDP
# ports (plus the lines of $AGENT_EXTRA_ROUTES); sets AGENT_PID, AGENT_PORT, AGENT_DIR. stop_agent kills it.
# Needs LARS_TARGET (the cargo target dir holding lars-agent).

free_base_port() {
    # A base port P with P, P+1, P+2 free for UDP (bind-tested), away from
    # the defaults 8888-8890.
    python3 - <<'PY'
import random, socket
for _ in range(200):
    p = random.randrange(20000, 60000)
    socks = []
    try:
        for q in (p, p + 1, p + 2):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(s)
            s.bind(("127.0.0.1", q))
    except OSError:
        continue
    finally:
        for s in socks:
            s.close()
    print(p)
    break
PY
}

start_agent() {
    local modid=$1 cmdid=$2
    shift 2
    AGENT_DIR=$(mktemp -d)
    AGENT_PORT=$(free_base_port)
    [ -n "$AGENT_PORT" ] || { echo "no free UDP ports" >&2; return 1; }
    printf 'lars-agent-routes 1\n%s %s %s\n' "$modid" "$cmdid" "$*" > "$AGENT_DIR/routes.snapshot"
    # More keys, one "modid cmdid ip:port ..." line each.
    if [ -n "${AGENT_EXTRA_ROUTES:-}" ]; then
        printf '%s\n' "$AGENT_EXTRA_ROUTES" >> "$AGENT_DIR/routes.snapshot"
    fi
    cat > "$AGENT_DIR/agent.conf" <<CONF
[agent]
base_port = $AGENT_PORT
snapshot_path = $AGENT_DIR/routes.snapshot
[dnsserver]
ip = 127.0.0.1
port = 1
[reporter]
ip = 127.0.0.1
port = 1
CONF
    RUST_LOG=error "$LARS_TARGET/lars-agent" -c "$AGENT_DIR/agent.conf" > "$AGENT_DIR/agent.log" 2>&1 &
    AGENT_PID=$!
    # Ready when it answers get_route for the key (at most 5 s).
    local i
    for i in $(seq 1 100); do
        if "$BIN/get_route" --base-port "$AGENT_PORT" "$modid" "$cmdid" > /dev/null 2>&1; then
            return 0
        fi
        if ! kill -0 "$AGENT_PID" 2> /dev/null; then
            echo "the agent exited:" >&2
            cat "$AGENT_DIR/agent.log" >&2
            return 1
        fi
        sleep 0.05
    done
    echo "the agent did not answer within 5 s" >&2
    cat "$AGENT_DIR/agent.log" >&2
    return 1
}

stop_agent() {
    if [ -n "${AGENT_PID:-}" ]; then
        kill "$AGENT_PID" 2> /dev/null || true
        wait "$AGENT_PID" 2> /dev/null || true
        AGENT_PID=
    fi
    if [ -n "${AGENT_DIR:-}" ]; then
        rm -rf "$AGENT_DIR"
        AGENT_DIR=
    fi
}
