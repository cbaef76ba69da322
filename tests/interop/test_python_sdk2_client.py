"""The Python SDK's 2.x client (mcp 2.x, the 2026-07-28 revision) through mcpgate over HTTPS.

mcp 2.x probes `server/discover` and speaks the stateless revision when the server answers,
falling back to the 2025 initialize handshake otherwise; mcpgate speaks both on `/mcp`, and
bridges either to 2025 stdio upstreams (the SDK 1.x FastMCP server, mcpgate's demo server) and,
as the gateway, to several at once. The 2.x client runs from <repo>/.venv-mcp2
(scripts/python-env.sh) as a subprocess; the 1.x client is exercised by test_python_sdk_client.

Run:  scripts/python-env.sh && .venv/bin/pytest -q tests/interop/test_python_sdk2_client.py
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import REPO_ROOT, Pki, demo_upstream, fastmcp_upstream, gateway_config

SDK2_PYTHON = REPO_ROOT / ".venv-mcp2" / "bin" / "python"
CLIENT = Path(__file__).with_name("sdk2_client.py")


def run_sdk2(url: str, pki: Pki, mode: str, tool: str, args: dict) -> dict:
    if not SDK2_PYTHON.is_file():
        pytest.fail(f"{SDK2_PYTHON} is missing: run scripts/python-env.sh (it installs mcp 2.x)", pytrace=False)
    done = subprocess.run(
        [str(SDK2_PYTHON), str(CLIENT), url, str(pki.server_ca), mode, tool, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, f"the mcp 2.x client failed ({mode}):\n{done.stderr[-4000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("upstream", ["fastmcp", "demo"])
def test_sdk2_client_negotiates_2026_07_28_and_calls_a_2025_upstream(upstream: str, pki: Pki, mcpgate) -> None:
    spec = fastmcp_upstream() if upstream == "fastmcp" else demo_upstream()
    base = mcpgate(gateway_config(pki, spec))
    tool, args, want = ("add", {"a": 2, "b": 3}, "5") if upstream == "fastmcp" else ("echo", {"text": "hi"}, "hi")
    out = run_sdk2(f"{base}/mcp", pki, "auto", tool, args)
    assert out["protocol_version"] == "2026-07-28", f"the 2.x client fell back: {out}"
    assert tool in out["tools"], out
    assert not out["is_error"] and out["texts"] and out["texts"][0].strip() == want, out


def test_sdk2_client_in_legacy_mode_gets_the_2025_handshake(pki: Pki, mcpgate) -> None:
    base = mcpgate(gateway_config(pki, demo_upstream()))
    out = run_sdk2(f"{base}/mcp", pki, "legacy", "echo", {"text": "old"})
    assert out["protocol_version"].startswith("2025-"), out
    assert out["texts"] == ["old"], out


def test_sdk2_client_through_the_gateway_over_several_upstreams(pki: Pki, mcpgate) -> None:
    servers = {"fast": fastmcp_upstream()["upstream"], "demo": demo_upstream()["upstream"]}
    base = mcpgate(gateway_config(pki, servers))
    out = run_sdk2(f"{base}/mcp", pki, "auto", "fast__add", {"a": 20, "b": 22})
    assert out["protocol_version"] == "2026-07-28", out
    assert {"fast__add", "demo__echo"} <= set(out["tools"]), out
    assert out["texts"][0].strip() == "42", out
    alone = run_sdk2(f"{base}/servers/demo/mcp", pki, "auto", "echo", {"text": "alone"})
    assert alone["protocol_version"] == "2026-07-28" and alone["texts"] == ["alone"], alone
