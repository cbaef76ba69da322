#!/usr/bin/env bash
# Fuzzes each target in fuzz/ for a bounded time with cargo-fuzz (libFuzzer):
#   scripts/fuzz.sh                 # every target, FUZZ_SECONDS each (default 30)
#   scripts/fuzz.sh sse_parser 300  # one target, 300 s
# Runs on the stable toolchain: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z flags, and
# --sanitizer none needs no sanitizer runtime (Rust is memory safe; we hunt panics and hangs).
# Seed corpora live in fuzz/corpus/<target>/ (the 200 smallest inputs of a minimised run are
# kept in the repo; runs grow them locally); a crash lands in
# fuzz/artifacts/<target>/ and must become a regression test in tests/e2e/fuzz_regressions.rs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
targets=(config jsonrpc_framing sse_parser post_body pem chain_analysis)
[[ $# -ge 1 ]] && targets=("$1")
seconds="${2:-${FUZZ_SECONDS:-30}}"
cd fuzz
for t in "${targets[@]}"; do
    echo "== fuzz $t for ${seconds}s"
    mkdir -p "corpus/$t"
    RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none "$t" "corpus/$t" -- -max_total_time="$seconds" -max_len=65536 2>&1 | tail -3
done
