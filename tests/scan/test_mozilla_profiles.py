"""The listener's TLS, checked by a real scanner: sslyze against mcpgate serve meets Mozilla's
"intermediate" profile with the default TLS settings, and "modern" with min_version 1.3."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MCPGATE = Path(os.environ.get("MCPGATE_BIN") or REPO / "target" / "debug" / "mcpgate")
SCANNER = REPO / ".venv-scan" / "bin" / "python"


def start_serve(config: str, data: Path) -> tuple[subprocess.Popen, str]:
    cfg = data / "mcpgate.yaml"
    cfg.write_text(config)
    proc = subprocess.Popen(
        [str(MCPGATE), "serve", "--config", str(cfg)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "MCPGATE_DATA_DIR": str(data / "data")},
    )
    deadline = time.time() + 20
    while time.time() < deadline:
        line = proc.stdout.readline()
        m = re.search(r"listening on https://(\S+)", line or "")
        if m:
            return proc, m.group(1)
        if proc.poll() is not None:
            break
    proc.kill()
    pytest.fail("mcpgate serve did not start")


@pytest.mark.parametrize("profile,tls", [("intermediate", ""), ("modern", 'tls:\n  min_version: "1.3"\n')])
def test_serve_meets_the_mozilla_profile(profile: str, tls: str) -> None:
    assert MCPGATE.exists(), f"{MCPGATE} is missing: run cargo build"
    assert SCANNER.exists(), f"{SCANNER} is missing: run scripts/scan-env.sh"
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        proc, addr = start_serve(f"server:\n  listen: 127.0.0.1:0\n{tls}", data)
        try:
            scan = subprocess.run(
                [str(SCANNER), "-m", "sslyze", f"--mozilla_config={profile}",
                 "--certinfo_ca_file", str(data / "data" / "ca.crt"), addr],
                capture_output=True, text=True, timeout=180,
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
        tail = "\n".join(scan.stdout.splitlines()[-15:])
        assert f"{addr}: OK - Compliant" in scan.stdout, f"sslyze ({profile}) says:\n{tail}\n{scan.stderr[-2000:]}"
        assert scan.returncode == 0, tail
