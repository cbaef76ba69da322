"""Turns bench/run.sh's raw output into BENCHMARKS.md (on stdout).

Usage: report.py RAW_DIR ROUNDS. Files are named <scenario>-<target>-c<concurrency>-r<round>.json
(one line from examples/mcp_load).
Each figure is the median over the rounds with min and max; each ratio is computed within a
round (mcpgate and its peer measured back to back), then summarised the same way.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

CONCURRENCY = [1, 16, 64]
SCENARIOS = [
    ("https", ["mcpgate", "nginx", "direct"], "tools/call over HTTPS keep-alive",
     "mcpgate serve and nginx terminate TLS (ECDSA P-256 certificate) in front of the same "
     "plain-HTTP fixture (`mcpgate demo-server --http`, run as SCHED_BATCH so that its wakeups do "
     "not preempt the proxy sharing its CPU); direct is the fixture over plain HTTP, "
     "the limit. Goal: mcpgate at least 1.2x nginx's throughput, p99 no worse."),
    ("stdio", ["mcpgate", "mcpgate-shared", "mcp-proxy", "supergateway", "direct"], "The stdio bridge",
     "tools/call over plain HTTP through each bridge to the stdio fixture (`mcpgate demo-server`): "
     "mcpgate serve with a child per session (`session_mode: isolated`, its default) and with one "
     "child for all sessions (`session_mode: shared`), mcp-proxy (one child for all sessions, "
     "started with the proxy), supergateway `--stateful` (a child per session); direct is a stdio "
     "client writing to the fixture itself (a child per connection), the limit. Each peer is "
     "compared with mcpgate in the same shape: mcp-proxy with mcpgate-shared, supergateway and "
     "direct with mcpgate. Each bridge runs in a network namespace of its own. Goal: mcpgate at "
     "least 10x mcp-proxy and supergateway."),
]
# The mcpgate row each peer's ratio is taken against: the one with the same child-per-session shape.
COMPARED_WITH = {"mcp-proxy": "mcpgate-shared"}


def load(path: Path, needs: str | None = None) -> dict:
    """One raw result; exits naming the file when it is unreadable or `needs` is zero in it."""
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        sys.exit(f"report: cannot read {path}: {e}")
    if needs and not m.get(needs):
        sys.exit(f"report: no {needs} succeeded in {path}: {m.get('first_error')}")
    return m


def parse(raw: Path, scenario: str, target: str, c: int, r: int) -> dict:
    m = load(raw / f"{scenario}-{target}-c{c}-r{r}.json", "requests")
    return {"rps": m["rps"], "p50": m["p50_ms"], "p99": m["p99_ms"], "bad": m["errors"],
            "first_error": m.get("first_error")}


def cpu_per_request(raw: Path, target: str, c: int, r: int, rps: float) -> dict:
    """CPU microseconds per request over the measured seconds: the server's user and system
    time, and the fixture's total."""
    m = load(raw / f"https-{target}-c{c}-r{r}.cpu", "fixture_user")
    per = 1e6 / rps / float(load(raw / f"https-{target}-c{c}-r{r}.json", "seconds")["seconds"])
    return {"user": m["server_user"] * per, "sys": m["server_sys"] * per,
            "fixture": (m["fixture_user"] + m["fixture_sys"]) * per}


def summary(values: list[float], fmt: str) -> str:
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def cpu_budget(raw: Path, rounds: int, data: dict) -> list[str]:
    """The CPU each HTTPS target spends per request, and what 1.2x nginx's rate leaves mcpgate:
    server and fixture share CPU 1, so a rate is bounded by 1 s over their summed CPU time."""
    fmt = "{:.1f}"
    out = ["CPU time per request on CPU 1 over the measured seconds (from /proc/PID/stat: the "
           "server's user and system time, nginx's worker, and the fixture's), in microseconds:", "",
           "| concurrency | target | server user µs | server system µs | fixture µs |",
           "|---|---|---|---|---|"]
    budget = []
    for c in CONCURRENCY:
        per = {t: [cpu_per_request(raw, t, c, r, data[(t, c, r)]["rps"]) for r in range(1, rounds + 1)]
               for t in ("mcpgate", "nginx", "direct")}
        for t, rows in per.items():
            server = ("—", "—") if t == "direct" else (
                summary([x["user"] for x in rows], fmt), summary([x["sys"] for x in rows], fmt))
            out.append(f"| {c} | {t} | {server[0]} | {server[1]} | {summary([x['fixture'] for x in rows], fmt)} |")
        if c > 1:
            med = {t: {k: statistics.median(x[k] for x in rows) for k in ("user", "sys", "fixture")}
                   for t, rows in per.items()}
            nginx_total = med["nginx"]["user"] + med["nginx"]["sys"] + med["nginx"]["fixture"]
            left = nginx_total / 1.2 - med["mcpgate"]["fixture"]
            budget.append(
                f"At c={c}, nginx and the fixture spend {nginx_total:.1f} µs per request together, so 1.2x "
                f"nginx's rate leaves mcpgate {left:.1f} µs per request; its system time alone is "
                f"{med['mcpgate']['sys']:.1f} µs (nginx's {med['nginx']['sys']:.1f}), and its user time "
                f"{med['mcpgate']['user']:.1f} µs (nginx's {med['nginx']['user']:.1f}).")
    return out + ["", *budget, ""]


def round_trip_floor(rounds: int, https: dict, stdio: dict) -> list[str]:
    """At c=1 a bridge's rate is one over its round trip, which holds an HTTP round trip and a
    stdio one: the fixture's own (direct) ones bound what any bridge can reach."""
    floor = [1 / (1 / https[("direct", 1, r)]["rps"] + 1 / stdio[("direct", 1, r)]["rps"])
             for r in range(1, rounds + 1)]
    med = statistics.median
    over = {peer: med(f / stdio[(peer, 1, r)]["rps"] for r, f in enumerate(floor, 1))
            for peer in ("mcp-proxy", "supergateway")}
    http_us = med(1e6 / https[("direct", 1, r)]["rps"] for r in range(1, rounds + 1))
    stdio_us = med(1e6 / stdio[("direct", 1, r)]["rps"] for r in range(1, rounds + 1))
    return [
        f"At c=1 each request waits for the one before, so a bridge's rate is one over its round "
        f"trip, which holds an HTTP round trip and a stdio one. The fixtures' own take {http_us:.0f} µs "
        f"(plain HTTP, direct in the HTTPS table) and {stdio_us:.0f} µs (stdio, direct here): a "
        f"bridge adding nothing to them would reach {med(floor):.0f} req/s, "
        f"{over['mcp-proxy']:.1f}x mcp-proxy's and {over['supergateway']:.1f}x supergateway's rate.", ""]


def handshake_budget(raw: Path, rounds: int) -> list[str]:
    """CPU per full handshake on CPU 1 for each server, one signature's cost in mcpgate's
    library, and what 1.5x nginx's rate leaves mcpgate."""
    med = statistics.median
    out = ["CPU time per full handshake on CPU 1 over the measured seconds (from /proc/PID/stat: "
           "mcpgate, nginx's worker), and the two operations a full handshake cannot skip, timed "
           "on their own in mcpgate's crypto library (aws-lc, `tls_handshakes --sign-speed`): one "
           "CertificateVerify signature with the same key, and the server's side of an X25519 "
           "exchange, in microseconds:", "",
           "| certificate | target | server user µs | server system µs | one signature µs | X25519 µs |",
           "|---|---|---|---|---|---|"]
    budget = []
    for cert, label in (("ecdsa", "ECDSA P-256"), ("rsa", "RSA-2048")):
        timed = [load(raw / f"sign-{cert}-r{r}.json", "x25519_us") for r in range(1, rounds + 1)]
        sign, kx = [x["sign_us"] for x in timed], [x["x25519_us"] for x in timed]
        per = {}
        for target in ("mcpgate", "nginx"):
            rows = []
            for r in range(1, rounds + 1):
                name = f"handshake-{target}-{cert}-new-r{r}"
                m = load(raw / f"{name}.cpu", "server_user")
                h = load(raw / f"{name}.json", "handshakes")
                rows.append({"user": m["server_user"] * 1e6 / h["handshakes"],
                             "sys": m["server_sys"] * 1e6 / h["handshakes"]})
            per[target] = rows
            out.append(f"| {label} | {target} | {summary([x['user'] for x in rows], '{:.1f}')} | "
                       f"{summary([x['sys'] for x in rows], '{:.1f}')} | "
                       f"{summary(sign, '{:.1f}') if target == 'mcpgate' else '—'} | "
                       f"{summary(kx, '{:.1f}') if target == 'mcpgate' else '—'} |")
        total = {t: med(x["user"] + x["sys"] for x in rows) for t, rows in per.items()}
        m_sys = med(x["sys"] for x in per["mcpgate"])
        floor = m_sys + med(sign) + med(kx)
        spare = total["nginx"] / 1.5 - floor
        versus = f"{spare:.0f} µs under the budget" if spare >= 0 else f"already {-spare:.0f} µs over the budget"
        budget.append(
            f"{label}: nginx spends {total['nginx']:.0f} µs per full handshake, so 1.5x its rate leaves "
            f"mcpgate {total['nginx'] / 1.5:.0f} µs; mcpgate spends {total['mcpgate']:.0f} µs, of which "
            f"{m_sys:.0f} µs in the kernel (the connection's setup, I/O and teardown), and signing "
            f"({med(sign):.0f} µs) and X25519 ({med(kx):.0f} µs) take {med(sign) + med(kx):.0f} µs "
            f"more: {floor:.0f} µs before the handshake's hashing, rustls and tokio, {versus}.")
    return out + ["", *budget, ""]


def main() -> None:
    raw, rounds = Path(sys.argv[1]), int(sys.argv[2])
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor())
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    # When the last measurement was written, so a report rebuilt from the same raw output says
    # when the run was, not when the report was.
    finished = datetime.fromtimestamp(max(p.stat().st_mtime for p in raw.iterdir()), timezone.utc)
    out = [
        "# Benchmarks",
        "",
        "Written by `bench/run.sh`; rerun it to reproduce. Every figure is the median over "
        f"{rounds} interleaved rounds, with (min–max); ratios are computed within each round.",
        f"Machine: {cpu}, {len(os.sched_getaffinity(0))} CPUs; load generator "
        f"(`examples/mcp_load`: HTTP/1.1 keep-alive, a session per connection, every answer checked) on CPU 0, the server under test and the fixture on CPU 1. "
        f"Peers: {nginx}, mcp-proxy 0.13.0, supergateway 4.0.0 on Node 22. Run {finished:%Y-%m-%d %H:%M} UTC.",
        "",
    ]
    failures = []
    goals = []
    measured = {}
    for scenario, targets, title, text in SCENARIOS:
        data = {(t, c, r): parse(raw, scenario, t, c, r)
                for t in targets for c in CONCURRENCY for r in range(1, rounds + 1)}
        measured[scenario] = data
        out += [f"## {title}", "", text, "",
                "| concurrency | target | req/s | p50 ms | p99 ms | mcpgate/peer req/s |",
                "|---|---|---|---|---|---|"]
        for c in CONCURRENCY:
            for t in targets:
                rows = [data[(t, c, r)] for r in range(1, rounds + 1)]
                failures += [f"{scenario} {t} c={c} round {r}: {x['bad']} failed ({x['first_error']})"
                             for r, x in enumerate(rows, 1) if x["bad"]]
                ours = COMPARED_WITH.get(t, "mcpgate")
                ratios = [data[(ours, c, r)]["rps"] / data[(t, c, r)]["rps"] for r in range(1, rounds + 1)]
                ratio = "—" if t.startswith("mcpgate") else summary(ratios, "{:.2f}x")
                med = lambda xs: statistics.median(xs)  # noqa: E731
                if scenario == "https" and t == "nginx":
                    p99 = (med([data[("mcpgate", c, r)]["p99"] for r in range(1, rounds + 1)]),
                           med([x["p99"] for x in rows]))
                    goals.append(f"- HTTPS c={c}: {med(ratios):.2f}x nginx's throughput (goal 1.2x): "
                                 f"{'met' if med(ratios) >= 1.2 else 'not met'}; p99 {p99[0]:.3f} vs "
                                 f"{p99[1]:.3f} ms: {'met' if p99[0] <= p99[1] else 'not met'}.")
                if scenario == "stdio" and t in ("mcp-proxy", "supergateway"):
                    goals.append(f"- stdio c={c}: {ours} {med(ratios):.1f}x {t} (goal 10x): "
                                 f"{'met' if med(ratios) >= 10 else 'not met'}.")
                out.append(
                    f"| {c} | {t} | {summary([x['rps'] for x in rows], '{:.0f}')} | "
                    f"{summary([x['p50'] for x in rows], '{:.3f}')} | "
                    f"{summary([x['p99'] for x in rows], '{:.3f}')} | {ratio} |"
                )
        out.append("")
        if scenario == "https":
            out += cpu_budget(raw, rounds, data)
        if scenario == "stdio":
            out += round_trip_floor(rounds, measured["https"], data)
    # Added latency at a fixed rate.
    lat = {(t, r): parse(raw, "latency", t, 8, r) for t in ("direct", "mcpgate") for r in range(1, rounds + 1)}
    added = {q: [lat[("mcpgate", r)][q] - lat[("direct", r)][q] for r in range(1, rounds + 1)] for q in ("p50", "p99")}
    rate = round(statistics.median(lat[("direct", r)]["rps"] for r in range(1, rounds + 1)))
    out += ["## Added latency below saturation", "",
            f"tools/call at a fixed {rate} req/s over 8 connections (paced; latency from each "
            "request's send): mcpgate over HTTPS in front of the fixture, and the fixture "
            "directly over plain HTTP. Goal: added p50 at most 0.3 ms, p99 at most 1 ms.", "",
            "| target | p50 ms | p99 ms |", "|---|---|---|"]
    for t in ("mcpgate", "direct"):
        rows = [lat[(t, r)] for r in range(1, rounds + 1)]
        failures += [f"latency {t} round {r}: {x['bad']} failed ({x['first_error']})"
                     for r, x in enumerate(rows, 1) if x["bad"]]
        out.append(f"| {t} | {summary([x['p50'] for x in rows], '{:.3f}')} | "
                   f"{summary([x['p99'] for x in rows], '{:.3f}')} |")
    out.append(f"| added by mcpgate | {summary(added['p50'], '{:.3f}')} | {summary(added['p99'], '{:.3f}')} |")
    out.append("")
    a50, a99 = statistics.median(added["p50"]), statistics.median(added["p99"])
    goals.append(f"- added latency at {rate} req/s: p50 {a50:.3f} ms (goal 0.3): {'met' if a50 <= 0.3 else 'not met'}; "
                 f"p99 {a99:.3f} ms (goal 1): {'met' if a99 <= 1 else 'not met'}.")
    # New TLS connections per second.
    def handshakes(target: str, kind: str, r: int) -> dict:
        return load(raw / f"handshake-{target}-{kind}-r{r}.json", "handshakes")
    out += ["## New TLS connections per second", "",
            "TLS 1.3 handshakes per second from 16 connections in a loop (`examples/tls_handshakes`: "
            "connect, handshake, close_notify, read to the server's close; X25519 the only group "
            "offered, and the only one each server allows): full handshakes, and resumed ones "
            "(a session ticket from an earlier handshake; psk_dhe_ke, so X25519 still runs). "
            "The same certificate, group and cipher suite for both servers: each prefers "
            "TLS_AES_128_GCM_SHA256 (Mozilla's order), mcpgate by default and nginx by "
            "`ssl_conf_command Ciphersuites` with `ssl_prefer_server_ciphers on`; the suite column "
            "is what the handshakes agreed. Goal: full handshakes at least 1.5x nginx's.", "",
            "| certificate | handshake | suite | mcpgate /s | nginx /s | mcpgate/nginx | resumed share |",
            "|---|---|---|---|---|---|---|"]
    for cert, label in (("ecdsa", "ECDSA P-256"), ("rsa", "RSA-2048")):
        for kind in ("new", "resumed"):
            m = [handshakes(f"mcpgate-{cert}", kind, r) for r in range(1, rounds + 1)]
            n = [handshakes(f"nginx-{cert}", kind, r) for r in range(1, rounds + 1)]
            for target, rows in (("mcpgate", m), ("nginx", n)):
                failures += [f"handshake {target} {cert} {kind} round {r}: {x['errors']} failed ({x['first_error']})"
                             for r, x in enumerate(rows, 1) if x["errors"]]
            ratios = [a["hps"] / b["hps"] for a, b in zip(m, n)]
            share = [x["resumed"] / x["handshakes"] for x in m + n]
            suites = {"mcpgate": {x.get("suite") for x in m}, "nginx": {x.get("suite") for x in n}}
            if suites["mcpgate"] != suites["nginx"]:
                failures.append(f"handshake {cert} {kind}: the servers agreed different suites: {suites}")
            agreed = ", ".join(sorted(str(x) for x in suites["mcpgate"] | suites["nginx"]))
            out.append(f"| {label} | {'full' if kind == 'new' else 'resumed'} | {agreed} | "
                       f"{summary([x['hps'] for x in m], '{:.0f}')} | {summary([x['hps'] for x in n], '{:.0f}')} | "
                       f"{summary(ratios, '{:.2f}x')} | {min(share):.0%}–{max(share):.0%} |")
            if kind == "new":
                k = statistics.median(ratios)
                goals.append(f"- full TLS 1.3 handshakes, {label}: {k:.2f}x nginx's (goal 1.5x): "
                             f"{'met' if k >= 1.5 else 'not met'}.")
    out.append("")
    out += handshake_budget(raw, rounds)
    # Memory per idle connection.
    def mem(mode: str, n: int, r: int) -> dict:
        return load(raw / f"memory-{mode}-n{n}-r{r}.json")
    out += ["## Memory per idle connection", "",
            "Resident memory (VmRSS) of a fresh mcpgate serve holding 1,000 and 10,000 idle TLS "
            "connections (after one GET /healthz each) or idle legacy SSE streams (each a session); "
            "the slope is (RSS at 10,000 - RSS at 1,000) / 9,000. Goals: at most 32 KiB per idle TLS "
            "connection; 10,000 idle SSE streams in at most 500 MiB in total.", "",
            "| idle | RSS at start MiB | RSS at 1,000 MiB | RSS at 10,000 MiB | KiB per connection |",
            "|---|---|---|---|---|"]
    for mode, label in (("tls", "TLS connections"), ("sse", "SSE streams")):
        points = [(mem(mode, 1000, r), mem(mode, 10000, r)) for r in range(1, rounds + 1)]
        slopes = [(b["rss_kib"] - a["rss_kib"]) / 9000 for a, b in points]
        out.append(f"| {label} | {summary([a['baseline_kib'] / 1024 for a, _ in points], '{:.1f}')} | "
                   f"{summary([a['rss_kib'] / 1024 for a, _ in points], '{:.1f}')} | "
                   f"{summary([b['rss_kib'] / 1024 for _, b in points], '{:.1f}')} | "
                   f"{summary(slopes, '{:.1f}')} |")
        if mode == "tls":
            k = statistics.median(slopes)
            goals.append(f"- idle TLS connection: {k:.1f} KiB each (goal 32): {'met' if k <= 32 else 'not met'}.")
        else:
            total = statistics.median(b["rss_kib"] / 1024 for _, b in points)
            goals.append(f"- 10,000 idle SSE streams: {total:.0f} MiB in total (goal 500): "
                         f"{'met' if total <= 500 else 'not met'}.")
    out.append("")
    out[5:5] = ["## Goals, from the tables below (medians)", "", *goals, ""]
    out += ["Failed requests: " + ("; ".join(failures) if failures else "none."), ""]
    print("\n".join(out))


if __name__ == "__main__":
    main()
