#!/usr/bin/env bash
# One measurement of the stdio-bridge scenario, run by bench/run.sh inside a network namespace
# of its own (`unshare -n`): supergateway listens on every address and has no option to bind
# loopback only, so each bridge runs where the only interface is a private loopback.
#
#   stdio-one.sh TARGET CONNECTIONS SECONDS OUTPUT.json
#
# TARGET: mcpgate | mcpgate-shared (session_mode: shared) | mcp-proxy | supergateway |
# direct (the load generator spawns the fixture itself, a child per connection: the limit).
# Paths come from the environment run.sh sets: MCPGATE, LOAD, MCP_PROXY, NODE, SUPERGATEWAY, BENCH_OUT, GEN_CPU, SUT_CPU.
set -euo pipefail

target="$1" connections="$2" seconds="$3" output="$4"
port=47300
fixture="$MCPGATE demo-server"
ip link set lo up

case "$target" in
    mcpgate | mcpgate-shared)
        mode=isolated
        [[ "$target" == mcpgate-shared ]] && mode=shared
        cat >"$BENCH_OUT/stdio-$target.yaml" <<EOF
server:
  listen: 127.0.0.1:$port
  max_sessions: 100000
tls:
  enabled: false
logging:
  level: warn
mcp_servers:
  fixture:
    command: $MCPGATE
    args: [demo-server]
    session_mode: $mode
EOF
        MCPGATE_DATA_DIR="$BENCH_OUT/data" taskset -c "$SUT_CPU" "$MCPGATE" serve \
            --config "$BENCH_OUT/stdio-$target.yaml" >>"$BENCH_OUT/logs/stdio-$target.log" 2>&1 &
        ;;
    mcp-proxy)
        taskset -c "$SUT_CPU" "$MCP_PROXY" --host 127.0.0.1 --port "$port" --log-level WARNING \
            -- $fixture >>"$BENCH_OUT/logs/mcp-proxy.log" 2>&1 &
        ;;
    supergateway)
        taskset -c "$SUT_CPU" "$NODE" "$SUPERGATEWAY" --stdio "$fixture" --outputTransport streamableHttp \
            --stateful --port "$port" --logLevel none >>"$BENCH_OUT/logs/supergateway.log" 2>&1 &
        ;;
    direct)
        exec taskset -c "$GEN_CPU" "$LOAD" --stdio "$fixture" --connections "$connections" \
            --seconds "$seconds" --warmup 1 >"$output"
        ;;
    *) echo "stdio-one: unknown target $target" >&2; exit 2 ;;
esac
server=$!
trap 'kill $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
end=$((SECONDS + 30))
until (exec 8<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    if ((SECONDS >= end)) || ! kill -0 "$server" 2>/dev/null; then
        echo "stdio-one: $target did not listen on 127.0.0.1:$port (logs in $BENCH_OUT/logs)" >&2
        exit 1
    fi
    sleep 0.1
done
taskset -c "$GEN_CPU" "$LOAD" --url "http://127.0.0.1:$port/mcp" --connections "$connections" \
    --seconds "$seconds" --warmup 1 >"$output"
