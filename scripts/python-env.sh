#!/usr/bin/env bash
# Creates (or refreshes) the Python virtualenv used by the interop tests.
#
#   scripts/python-env.sh            # idempotent; silent when already up to date
#   .venv/bin/pytest -q tests/interop
#
# The venv lives at <repo>/.venv (pins in tests/interop/requirements.txt), and the SDK's 2.x
# line in <repo>/.venv-mcp2 (tests/interop/requirements-mcp2.txt);
# a stamp file in the venv records the hash of that file (plus the Python
# version), so the install only runs when the pins change.
# Environment: PYTHON (interpreter used to create the venv, default python3).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/.venv"
requirements="$repo_root/tests/interop/requirements.txt"
python="${PYTHON:-python3}"

if ! command -v "$python" >/dev/null 2>&1; then
    echo "python-env: '$python' not found; install Python 3.10+ or set PYTHON=/path/to/python3" >&2
    exit 1
fi
if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)'; then
    echo "python-env: $("$python" --version 2>&1) is too old; the mcp SDK needs Python 3.10+" >&2
    exit 1
fi

# ensure VENV REQUIREMENTS CHECK: creates VENV, installs REQUIREMENTS when their hash changed,
# then runs the Python snippet CHECK in it (failing here, not in the tests, if it is unusable).
ensure() {
    local venv="$1" requirements="$2" check="$3" stamp="$1/.mcpgate-requirements.sha256" want have
    if [[ ! -x "$venv/bin/python" ]]; then
        echo "python-env: creating $venv" >&2
        "$python" -m venv --clear "$venv"
    fi
    want="$( { sha256sum "$requirements" | cut -d' ' -f1; "$venv/bin/python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
    have="$(cat "$stamp" 2>/dev/null || true)"
    [[ "$want" == "$have" ]] && return 0
    echo "python-env: installing pinned requirements from ${requirements#"$repo_root"/}" >&2
    rm -f "$stamp"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    "$venv/bin/python" -c "$check"
    echo "$want" > "$stamp"
    echo "python-env: ready ($venv)" >&2
}

ensure "$venv" "$requirements" \
    'import mcp, pytest, cryptography, httpx, anyio; from mcp.server.fastmcp import FastMCP'
# The SDK's 2.x line (the 2026-07-28 revision) in a venv of its own: it shares mcp 1.x's name.
ensure "$repo_root/.venv-mcp2" "$repo_root/tests/interop/requirements-mcp2.txt" \
    'import mcp, httpx2; from mcp import Client; from mcp_types.version import MODERN_PROTOCOL_VERSIONS as v; assert "2026-07-28" in v'
