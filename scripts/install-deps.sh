#!/usr/bin/env bash
# Installs the system tools the tests use, when missing: openssl (key format conversion and
# certificate checks), python3 with venv, and npm (which fetches the conformance suite and
# Node 22). Idempotent; silent when all is there.
set -euo pipefail

missing=()
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v python3 >/dev/null 2>&1 || missing+=(python3 python3-venv)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
if ! command -v cargo >/dev/null 2>&1; then
    echo "install-deps: cargo is missing; install the Rust toolchain (rustup) first" >&2
    exit 1
fi
if [[ ${#missing[@]} -gt 0 ]]; then
    echo "install-deps: installing ${missing[*]}" >&2
    SUDO=""
    [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
