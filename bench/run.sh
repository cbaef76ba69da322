#!/usr/bin/env bash
# The benchmark: mcpgate against the proxies people put in front of MCP servers, on loopback.
#
#   bench/run.sh                     # install peers if missing, run every round, write BENCHMARKS.md
#   ROUNDS=5 DURATION=3 bench/run.sh # the defaults: rounds, and seconds per measurement
#
# Scenario "https": tools/call (the fixture's echo) over HTTPS keep-alive at concurrency 1, 16
# and 64 (examples/mcp_load: HTTP/1.1, a session per connection, fresh ids, every answer
# checked): mcpgate serve terminating TLS in front of the Rust fixture
# (`mcpgate demo-server --http`), nginx terminating TLS in front of the same fixture, and the
# fixture reached directly over plain HTTP (the limit). Each round runs every target once per
# concurrency, in an order that rotates from round to round; ratios are taken within a round.
# Each HTTPS measurement also samples the CPU time (user and system) of the server under test
# and of the fixture over the measured seconds, for the CPU each spends per request.
# Scenario "latency": at a fixed rate below saturation ($RATE, default 2000 req/s over 8
# connections), p50 and p99 through mcpgate over HTTPS minus the fixture's direct ones.
# Scenario "memory": resident memory of mcpgate at 1,000 and 10,000 idle TLS connections and
# idle legacy SSE streams (a fresh process for each point); the slope is the cost of one.
# Scenario "handshake": new TLS 1.3 connections per second (examples/tls_handshakes, 16
# connections, X25519 the only group on both sides), full and resumed (session tickets), against
# mcpgate serve and nginx with the same ECDSA P-256 certificate and the same RSA-2048 one.
# Scenario "stdio": tools/call through a bridge to the stdio fixture (`mcpgate demo-server`),
# plain HTTP for all: mcpgate serve with a child per session and with one shared child,
# mcp-proxy (PyPI; one shared child) and supergateway (npm, --stateful; a child per session),
# and a direct stdio client (the limit). Each runs in a network namespace of its own
# (bench/stdio-one.sh), since supergateway cannot bind loopback only.
# The load generator runs on CPU 0, the server under test and the fixture on CPU 1 (nginx's
# worker inherits the master's CPU: "worker_cpu_affinity auto" would move it onto CPU 0).
# The HTTP fixture runs as SCHED_BATCH (chrt --batch): a request written to it then wakes it
# without preempting the proxy that wrote it, so neither nginx nor mcpgate is cut off
# mid-request by the upstream that shares its CPU; the fixture runs when the proxy waits.
# Peers are installed into .bench/ (git-ignored), pinned: mcp-proxy, supergateway, Node 22.
# Raw output goes to $BENCH_OUT (default /tmp/mcpgate-bench), never into the repository.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
rounds="${ROUNDS:-5}"
duration="${DURATION:-3}"
out="${BENCH_OUT:-/tmp/mcpgate-bench}"
concurrency=(1 16 64)
log() { echo "bench: $*" >&2; }
die() { log "error: $*"; exit 1; }

[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive number, got '$rounds'"
[[ "$duration" =~ ^[1-9][0-9]*$ && "$duration" -le 30 ]] || die "DURATION must be 1-30 seconds, got '$duration'"

# --- peers and tools -----------------------------------------------------------------------
need_apt=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || need_apt+=(nginx-light)
{ command -v taskset && command -v chrt; } >/dev/null 2>&1 || need_apt+=(util-linux)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
if ((${#need_apt[@]})); then
    sudo=""
    [[ $(id -u) -eq 0 ]] || sudo=sudo
    log "installing ${need_apt[*]} (apt)"
    # Debian starts nginx on port 80 after install where it can; policy-rc.d forbids that.
    policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
        $sudo chmod +x /usr/sbin/policy-rc.d
        policy=1
    fi
    installed=0
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >&2 && installed=1 ||
        { $sudo apt-get update -qq >&2 && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >&2 && installed=1; } || true
    ((policy)) && $sudo rm -f /usr/sbin/policy-rc.d
    ((installed)) || die "apt-get could not install ${need_apt[*]}"
fi
nginx_bin="$(command -v nginx || echo /usr/sbin/nginx)"
MCP_PROXY_VERSION=0.13.0 SUPERGATEWAY_VERSION=4.0.0 NODE_VERSION=22.23.3
peers="$repo/.bench"
if [[ ! -x "$peers/venv/bin/mcp-proxy" ]] || ! "$peers/venv/bin/mcp-proxy" --version 2>&1 | grep -q "$MCP_PROXY_VERSION"; then
    log "installing mcp-proxy $MCP_PROXY_VERSION (PyPI) into $peers/venv"
    python3 -m venv "$peers/venv" >&2
    "$peers/venv/bin/pip" install -q --disable-pip-version-check "mcp-proxy==$MCP_PROXY_VERSION" >&2
fi
stamp="$peers/node/.installed-$SUPERGATEWAY_VERSION-$NODE_VERSION"
if [[ ! -f "$stamp" ]]; then
    command -v npm >/dev/null 2>&1 || die "npm is needed to install supergateway (apt-get install npm)"
    log "installing supergateway $SUPERGATEWAY_VERSION and node $NODE_VERSION (npm) into $peers/node"
    mkdir -p "$peers/node"
    npm install --silent --no-audit --no-fund --prefix "$peers/node" \
        "supergateway@$SUPERGATEWAY_VERSION" "node@$NODE_VERSION" >&2
    touch "$stamp"
fi
command -v unshare >/dev/null 2>&1 || die "unshare (util-linux) is needed for the stdio scenario's namespaces"
log "building mcpgate and the load generator (release)"
(cd "$repo" && cargo build --release --locked --bin mcpgate --example mcp_load --example tls_handshakes >&2)
mcpgate="$repo/target/release/mcpgate"
load="$repo/target/release/examples/mcp_load"
handshakes="$repo/target/release/examples/tls_handshakes"

cpus="$(nproc)"
if ((cpus >= 2)); then
    gen_cpu=0 sut_cpu=1
else
    gen_cpu=0 sut_cpu=0
    log "note: one CPU only; the load generator and the server share it"
fi

# --- fixtures ----------------------------------------------------------------------------------
rm -rf "$out"
mkdir -p "$out/logs" "$out/raw"
pids=()
cleanup() {
    for p in ${pids[@]+"${pids[@]}"}; do kill "$p" 2>/dev/null || true; done
    [[ -f "$out/nginx/nginx.pid" ]] && kill "$(cat "$out/nginx/nginx.pid")" 2>/dev/null || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    local port="$1" end=$((SECONDS + 20))
    until (exec 8<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
        ((SECONDS < end)) || die "nothing listens on 127.0.0.1:$port after 20 s (logs in $out/logs)"
        sleep 0.1
    done
}

"$mcpgate" cert --data-dir "$out/ca" server 127.0.0.1 --out "$out/certs" >/dev/null
crt="$out/certs/127.0.0.1.crt" key="$out/certs/127.0.0.1.key" ca="$out/ca/ca.crt"
# The RSA-2048 certificate of the handshake scenario (self-signed; the generator pins it).
rsa_crt="$out/certs/rsa.crt" rsa_key="$out/certs/rsa.key"
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
    -keyout "$rsa_key" -out "$rsa_crt" 2>"$out/logs/openssl.log" || die "openssl: $(cat "$out/logs/openssl.log")"

fixture_port="$(free_port)"
taskset -c "$sut_cpu" chrt --batch 0 "$mcpgate" demo-server --http "127.0.0.1:$fixture_port" >"$out/logs/fixture.log" 2>&1 &
pids+=($!)
wait_port "$fixture_port"
fixture_pid="${pids[-1]}"

# mcpgate in front of the HTTP fixture (the idle timeout is long for the memory scenario).
gate_yaml() { # port [cert key]
    cat <<EOF
server:
  listen: 127.0.0.1:$1
  max_sessions: 100000
  header_read_timeout: 300s
tls:
  cert_file: ${2:-$crt}
  key_file: ${3:-$key}
  curve_preferences: [X25519]
logging:
  level: warn
mcp_servers:
  fixture:
    url: http://127.0.0.1:$fixture_port/mcp
    transport: http
EOF
}
gate_port="$(free_port)"
gate_yaml "$gate_port" >"$out/mcpgate.yaml"
MCPGATE_DATA_DIR="$out/data" taskset -c "$sut_cpu" "$mcpgate" serve --config "$out/mcpgate.yaml" >"$out/logs/mcpgate.log" 2>&1 &
pids+=($!)
gate_pid="${pids[-1]}"
wait_port "$gate_port"
gate_rsa_port="$(free_port)"
gate_yaml "$gate_rsa_port" "$rsa_crt" "$rsa_key" >"$out/mcpgate-rsa.yaml"
MCPGATE_DATA_DIR="$out/data-rsa" taskset -c "$sut_cpu" "$mcpgate" serve --config "$out/mcpgate-rsa.yaml" >"$out/logs/mcpgate-rsa.log" 2>&1 &
pids+=($!)
gate_rsa_pid="${pids[-1]}"
wait_port "$gate_rsa_port"

nginx_port="$(free_port)" nginx_rsa_port="$(free_port)"
mkdir -p "$out/nginx"
cat >"$out/nginx/nginx.conf" <<EOF
worker_processes 1;
pid $out/nginx/nginx.pid;
error_log $out/logs/nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $out/nginx/body;
    proxy_temp_path $out/nginx/proxy;
    fastcgi_temp_path $out/nginx/fastcgi;
    uwsgi_temp_path $out/nginx/uwsgi;
    scgi_temp_path $out/nginx/scgi;
    upstream fixture { server 127.0.0.1:$fixture_port; keepalive 128; }
    ssl_ecdh_curve X25519;
    ssl_session_tickets on;
    # The suite order mcpgate's listener uses by default (Mozilla's), so both agree the same one.
    ssl_prefer_server_ciphers on;
    ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256;
    server {
        listen 127.0.0.1:$nginx_port ssl;
        ssl_certificate $crt;
        ssl_certificate_key $key;
        ssl_protocols TLSv1.2 TLSv1.3;
        keepalive_requests 1000000;
        location / {
            proxy_pass http://fixture;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
        }
    }
    server {
        listen 127.0.0.1:$nginx_rsa_port ssl;
        ssl_certificate $rsa_crt;
        ssl_certificate_key $rsa_key;
        ssl_protocols TLSv1.3;
        location / { return 200; }
    }
}
EOF
taskset -c "$sut_cpu" "$nginx_bin" -c "$out/nginx/nginx.conf" -e "$out/logs/nginx-error.log" \
    -g 'daemon on;' >"$out/logs/nginx.log" 2>&1 || die "nginx did not start: $(cat "$out/logs/nginx-error.log")"
wait_port "$nginx_port"
wait_port "$nginx_rsa_port"

declare -A url
url[direct]="http://127.0.0.1:$fixture_port/mcp"
url[nginx]="https://127.0.0.1:$nginx_port/mcp"
url[mcpgate]="https://127.0.0.1:$gate_port/mcp"
targets=(direct nginx mcpgate)
# The process doing each target's work (nginx: its one worker), for the CPU it spends.
declare -A sut_pid
sut_pid[mcpgate]="$gate_pid"
sut_pid[nginx]="$(pgrep -P "$(cat "$out/nginx/nginx.pid")" | head -1)"
[[ -n "${sut_pid[nginx]}" ]] || die "nginx has no worker process (logs in $out/logs)"

# --- rounds --------------------------------------------------------------------------------------
# CPU time (user and system, in clock ticks) a process has used so far: /proc/PID/stat.
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat"; }
# Samples the server's and the fixture's CPU time over the measured seconds (after the
# load generator's 1 s warmup), as seconds: {"server_user":..,"server_sys":..,"fixture_user":..}.
sample_cpu() { # server-pid-or-empty
    local hz s0=(0 0) s1=(0 0) f0 f1
    hz="$(getconf CLK_TCK)"
    sleep 1
    [[ -n "$1" ]] && read -ra s0 < <(cpu_ticks "$1")
    read -ra f0 < <(cpu_ticks "$fixture_pid")
    sleep "$duration"
    [[ -n "$1" ]] && read -ra s1 < <(cpu_ticks "$1")
    read -ra f1 < <(cpu_ticks "$fixture_pid")
    printf '{"server_user":%s,"server_sys":%s,"fixture_user":%s,"fixture_sys":%s}\n' \
        "$(((s1[0] - s0[0]) * 1000 / hz))e-3" "$(((s1[1] - s0[1]) * 1000 / hz))e-3" \
        "$(((f1[0] - f0[0]) * 1000 / hz))e-3" "$(((f1[1] - f0[1]) * 1000 / hz))e-3"
}
measure() { # target concurrency round
    local t="$1" c="$2" r="$3" name="https-$1-c$2-r$3" sampler
    sample_cpu "${sut_pid[$t]:-}" >"$out/raw/$name.cpu" &
    sampler=$!
    taskset -c "$gen_cpu" "$load" --url "${url[$t]}" --ca "$ca" --connections "$c" \
        --seconds "$duration" --warmup 1 >"$out/raw/$name.json" 2>"$out/raw/$name.err" ||
        die "the load generator failed for $name: $(cat "$out/raw/$name.err")"
    wait "$sampler" || die "could not sample the CPU time for $name"
}
for ((r = 1; r <= rounds; r++)); do
    log "https: round $r of $rounds"
    for c in "${concurrency[@]}"; do
        for ((i = 0; i < ${#targets[@]}; i++)); do
            measure "${targets[$(((i + r) % ${#targets[@]}))]}" "$c" "$r"
        done
    done
done

# Added latency below saturation: the same request rate through mcpgate (HTTPS) and to the
# fixture directly, paced by the load generator.
rate="${RATE:-2000}"
for ((r = 1; r <= rounds; r++)); do
    log "latency at $rate req/s: round $r of $rounds"
    order=(direct mcpgate)
    ((r % 2)) || order=(mcpgate direct)
    for t in "${order[@]}"; do
        name="latency-$t-c8-r$r"
        taskset -c "$gen_cpu" "$load" --url "${url[$t]}" --ca "$ca" --connections 8 --rate "$rate" \
            --seconds "$duration" --warmup 1 >"$out/raw/$name.json" 2>"$out/raw/$name.err" ||
            die "the load generator failed for $name: $(cat "$out/raw/$name.err")"
    done
done

# New TLS connections per second: full handshakes, then resumed ones, for each server and
# certificate, in an order that rotates from round to round. Each full-handshake run also
# samples the server's CPU time, and each round times, in mcpgate's crypto library, one
# CertificateVerify signature with each key and the server's side of an X25519 exchange
# (tls_handshakes --sign-speed, on the server's CPU).
declare -A hs_port hs_cert hs_key hs_pid
hs_port[mcpgate-ecdsa]="$gate_port" hs_port[mcpgate-rsa]="$gate_rsa_port"
hs_port[nginx-ecdsa]="$nginx_port" hs_port[nginx-rsa]="$nginx_rsa_port"
hs_pid[mcpgate-ecdsa]="$gate_pid" hs_pid[mcpgate-rsa]="$gate_rsa_pid"
hs_pid[nginx-ecdsa]="${sut_pid[nginx]}" hs_pid[nginx-rsa]="${sut_pid[nginx]}"
hs_cert[ecdsa]="$crt" hs_cert[rsa]="$rsa_crt" hs_key[ecdsa]="$key" hs_key[rsa]="$rsa_key"
hs_targets=(mcpgate-ecdsa nginx-ecdsa mcpgate-rsa nginx-rsa)
# A server's user and system CPU seconds over the measured seconds, after a warmup.
sample_server_cpu() { # pid warmup-seconds
    local hz s0 s1
    hz="$(getconf CLK_TCK)"
    sleep "$2"
    read -ra s0 < <(cpu_ticks "$1")
    sleep "$duration"
    read -ra s1 < <(cpu_ticks "$1")
    printf '{"server_user":%s,"server_sys":%s}\n' \
        "$(((s1[0] - s0[0]) * 1000 / hz))e-3" "$(((s1[1] - s0[1]) * 1000 / hz))e-3"
}
for ((r = 1; r <= rounds; r++)); do
    log "handshakes: round $r of $rounds"
    for cert in ecdsa rsa; do
        taskset -c "$sut_cpu" "$handshakes" --sign-speed "${hs_key[$cert]}" --seconds 1 \
            >"$out/raw/sign-$cert-r$r.json" 2>"$out/raw/sign-$cert-r$r.err" ||
            die "timing signatures with the $cert key failed: $(cat "$out/raw/sign-$cert-r$r.err")"
    done
    for kind in new resumed; do
        for ((i = 0; i < ${#hs_targets[@]}; i++)); do
            t="${hs_targets[$(((i + r) % ${#hs_targets[@]}))]}"
            name="handshake-$t-$kind-r$r"
            resume=() sampler=""
            [[ "$kind" == resumed ]] && resume=(--resume)
            if [[ "$kind" == new ]]; then
                sample_server_cpu "${hs_pid[$t]}" 0.5 >"$out/raw/$name.cpu" &
                sampler=$!
            fi
            taskset -c "$gen_cpu" "$handshakes" --addr "127.0.0.1:${hs_port[$t]}" --cert "${hs_cert[${t#*-}]}" \
                --connections 16 --seconds "$duration" --warmup 0.5 ${resume[@]+"${resume[@]}"} \
                >"$out/raw/$name.json" 2>"$out/raw/$name.err" ||
                die "the handshake generator failed for $name: $(cat "$out/raw/$name.err")"
            if [[ -n "$sampler" ]]; then
                wait "$sampler" || die "could not sample the CPU time for $name"
            fi
        done
    done
done

# Memory: resident memory of a fresh mcpgate holding 1,000 and then 10,000 idle TLS
# connections (one GET /healthz each) or legacy SSE streams; the slope is per connection.
mem_port="$(free_port)"
gate_yaml "$mem_port" >"$out/memory.yaml"
rss_kib() { awk '/^VmRSS:/{print $2}' "/proc/$1/status"; }
memory_point() { # mode connections round
    local mode="$1" n="$2" r="$3" name="memory-$1-n$2-r$3" gate holder base end
    MCPGATE_DATA_DIR="$out/data" taskset -c "$sut_cpu" "$mcpgate" serve --config "$out/memory.yaml" \
        >>"$out/logs/memory-mcpgate.log" 2>&1 &
    gate=$!
    wait_port "$mem_port"
    base="$(rss_kib "$gate")"
    taskset -c "$gen_cpu" "$load" --url "https://127.0.0.1:$mem_port/mcp" --ca "$ca" --idle "$mode" \
        --connections "$n" --seconds 120 >"$out/raw/$name.idle" 2>"$out/raw/$name.err" &
    holder=$!
    end=$((SECONDS + 120))
    until [[ -s "$out/raw/$name.idle" ]]; do
        if ((SECONDS >= end)) || ! kill -0 "$holder" 2>/dev/null; then
            kill "$gate" "$holder" 2>/dev/null || true
            die "$name: the connections did not all open: $(cat "$out/raw/$name.err")"
        fi
        sleep 0.2
    done
    sleep 1
    printf '{"mode":"%s","connections":%s,"baseline_kib":%s,"rss_kib":%s}\n' \
        "$mode" "$n" "$base" "$(rss_kib "$gate")" >"$out/raw/$name.json"
    kill "$holder" "$gate" 2>/dev/null || true
    wait "$holder" "$gate" 2>/dev/null || true
    # The port must be free again before the next point's server binds it.
    end=$((SECONDS + 20))
    while (exec 8<>"/dev/tcp/127.0.0.1/$mem_port") 2>/dev/null && ((SECONDS < end)); do sleep 0.1; done
}
(($(ulimit -n) > 10100)) || ulimit -n 20000 2>/dev/null ||
    die "10,000 connections need more than $(ulimit -n) open files (ulimit -n)"
for ((r = 1; r <= rounds; r++)); do
    log "memory: round $r of $rounds"
    for mode in tls sse; do
        for n in 1000 10000; do memory_point "$mode" "$n" "$r"; done
    done
done

export MCPGATE="$mcpgate" LOAD="$load" MCP_PROXY="$peers/venv/bin/mcp-proxy" \
    NODE="$peers/node/node_modules/.bin/node" SUPERGATEWAY="$peers/node/node_modules/supergateway/dist/index.js" \
    BENCH_OUT="$out" GEN_CPU="$gen_cpu" SUT_CPU="$sut_cpu"
bridges=(direct mcpgate mcp-proxy mcpgate-shared supergateway)
for ((r = 1; r <= rounds; r++)); do
    log "stdio bridge: round $r of $rounds"
    for c in "${concurrency[@]}"; do
        for ((i = 0; i < ${#bridges[@]}; i++)); do
            t="${bridges[$(((i + r) % ${#bridges[@]}))]}"
            name="stdio-$t-c$c-r$r"
            unshare -n "$repo/bench/stdio-one.sh" "$t" "$c" "$duration" "$out/raw/$name.json" \
                2>"$out/raw/$name.err" || die "$name failed: $(tail -5 "$out/raw/$name.err")"
        done
    done
done

python3 "$repo/bench/report.py" "$out/raw" "$rounds" >"$repo/BENCHMARKS.md"
log "wrote $repo/BENCHMARKS.md (raw output in $out)"
