#!/usr/bin/env bash
# Creates (or refreshes) the virtualenv with the TLS scanner (sslyze) used by tests/scan.
# Idempotent; silent when already up to date. The venv lives at <repo>/.venv-scan.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo_root/.venv-scan"
requirements="$repo_root/tests/scan/requirements.txt"
stamp="$venv/.requirements.sha256"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python" ]]; then
    echo "scan-env: creating $venv" >&2
    "$python" -m venv --clear "$venv"
fi
want="$( { sha256sum "$requirements" | cut -d' ' -f1; "$venv/bin/python" -c 'import sys; print(sys.version)'; } | sha256sum | cut -d' ' -f1)"
if [[ "$want" == "$(cat "$stamp" 2>/dev/null || true)" ]]; then
    exit 0
fi
echo "scan-env: installing pinned requirements from tests/scan/requirements.txt" >&2
rm -f "$stamp"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
"$venv/bin/python" -c 'import sslyze'
echo "$want" > "$stamp"
