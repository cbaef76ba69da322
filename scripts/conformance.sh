#!/usr/bin/env bash
# Runs the official MCP conformance suite's server scenarios against mcpgate, twice:
#   1. serve over HTTPS in front of the Rust fixture (`mcpgate demo-server --conformance`) on stdio;
#   2. a front serve over HTTPS reaching, over HTTPS, a back serve in front of the same fixture.
# Each run compares against a checked-in baseline of known failures (tests/conformance/*.yaml);
# the suite fails on a new failure and on a baseline entry that now passes, so the baselines
# can only shrink. The 2026-07-28 revision's scenarios come from the suite's next line
# (installed beside it as `conformance-next`), run with `--requirements 2026-07-28` against both
# setups. Installs the suites and Node 22 from npm into .conformance/, idempotently.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

SUITE_VERSION=0.1.16
NEXT_SUITE_VERSION=0.2.0-alpha.12
NODE_VERSION=22.23.3
dir=.conformance
stamp="$dir/.installed-$SUITE_VERSION-$NEXT_SUITE_VERSION-$NODE_VERSION"
if [[ ! -f "$stamp" ]]; then
    echo "conformance: installing @modelcontextprotocol/conformance@$SUITE_VERSION and @$NEXT_SUITE_VERSION, node@$NODE_VERSION from npm" >&2
    mkdir -p "$dir"
    npm install --silent --no-audit --no-fund --prefix "$dir" "@modelcontextprotocol/conformance@$SUITE_VERSION" \
        "conformance-next@npm:@modelcontextprotocol/conformance@$NEXT_SUITE_VERSION" "node@$NODE_VERSION" >&2
    touch "$stamp"
fi
node="$dir/node_modules/.bin/node"
suite="$dir/node_modules/@modelcontextprotocol/conformance/dist/index.js"
next_suite="$dir/node_modules/conformance-next/dist/index.js"
bin="${MCPGATE_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/debug/mcpgate}"
[[ -x "$bin" ]] || { echo "conformance: $bin is missing: run cargo build" >&2; exit 1; }

work="$(mktemp -d)"
pids=()
cleanup() {
    # start_serve runs in a command substitution (a subshell): its pids come back in files.
    for f in "$work"/*.pid; do [[ -f "$f" ]] && pids+=("$(cat "$f")"); done
    for p in ${pids[@]+"${pids[@]}"}; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# Starts `mcpgate serve --config $1`, waits for its banner, prints the URL.
start_serve() {
    local config="$1" out="$1.out"
    MCPGATE_DATA_DIR="$work/data" "$bin" serve --config "$config" >"$out" 2>"$config.log" &
    echo $! >"$config.pid"
    for _ in $(seq 1 100); do
        if grep -q "listening on" "$out" 2>/dev/null; then
            grep -o 'listening on [^ ]*' "$out" | head -1 | cut -d' ' -f3
            return
        fi
        sleep 0.1
    done
    echo "conformance: serve did not start:" >&2
    cat "$config.log" >&2
    exit 1
}

cat >"$work/direct.yaml" <<YAML
server:
  listen: 127.0.0.1:0
mcp_servers:
  fixture:
    command: $bin
    args: [demo-server, --conformance]
YAML
direct="$(start_serve "$work/direct.yaml")"
export NODE_EXTRA_CA_CERTS="$work/data/ca.crt"

cat >"$work/front.yaml" <<YAML
server:
  listen: 127.0.0.1:0
mcp_servers:
  back:
    url: $direct/mcp
    transport: http
    tls:
      ca_cert: $work/data/ca.crt
YAML
front="$(start_serve "$work/front.yaml")"

# The DNS-rebinding scenario is scoped to plain-HTTP localhost servers (over HTTPS the suite's
# own client refuses the forged Host name): it runs, and must pass, against plain HTTP too.
cat >"$work/plain.yaml" <<YAML
server:
  listen: 127.0.0.1:0
tls:
  enabled: false
mcp_servers:
  fixture:
    command: $bin
    args: [demo-server, --conformance]
YAML
plain="$(start_serve "$work/plain.yaml")"

status=0
echo "== conformance: dns-rebinding-protection against plain HTTP ($plain/mcp)"
"$node" "$suite" server --url "$plain/mcp" --scenario dns-rebinding-protection || status=1
echo "== conformance: serve -> stdio fixture ($direct/mcp)"
"$node" "$suite" server --url "$direct/mcp" --expected-failures tests/conformance/serve-baseline.yaml || status=1
echo "== conformance: serve -> HTTPS -> serve -> stdio fixture ($front/mcp)"
"$node" "$suite" server --url "$front/mcp" --expected-failures tests/conformance/gateway-baseline.yaml || status=1
# From the pending suite: JSON Schema 2020-12 keywords must pass through both hops unchanged.
echo "== conformance: json-schema-2020-12 (pending suite) through both hops"
"$node" "$suite" server --url "$front/mcp" --scenario json-schema-2020-12 || status=1
# The 2026-07-28 revision: every scenario it requires, against both setups; the raw-socket
# header scenario speaks plain HTTP only, so it runs against the plain listener as well.
echo "== conformance 2026-07-28: serve -> stdio fixture ($direct/mcp)"
"$node" "$next_suite" server --url "$direct/mcp" --requirements 2026-07-28 \
    --expected-failures tests/conformance/serve-2026-baseline.yaml || status=1
echo "== conformance 2026-07-28: serve -> HTTPS -> serve -> stdio fixture ($front/mcp)"
"$node" "$next_suite" server --url "$front/mcp" --requirements 2026-07-28 \
    --expected-failures tests/conformance/gateway-2026-baseline.yaml || status=1
echo "== conformance 2026-07-28: http-header-validation against plain HTTP ($plain/mcp)"
"$node" "$next_suite" server --url "$plain/mcp" --scenario http-header-validation || status=1
# Client scenarios: the official Python SDK client reaches the suite's servers through
# `mcpgate connect` (tests/conformance/client.py).
scripts/python-env.sh
client="$PWD/.venv/bin/python $PWD/tests/conformance/client.py"
export MCPGATE_BIN="$bin"
for scenario in initialize tools_call elicitation-sep1034-client-defaults sse-retry; do
    echo "== conformance: client scenario $scenario through mcpgate connect"
    "$node" "$suite" client --command "$client" --scenario "$scenario" || status=1
done
echo "== conformance: client auth suite through mcpgate connect (baseline: OAuth not built)"
"$node" "$suite" client --command "$client" --suite auth --timeout 15000 --expected-failures tests/conformance/client-baseline.yaml || status=1
exit $status
