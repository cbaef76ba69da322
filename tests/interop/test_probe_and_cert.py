"""mcpgate probe against a real Python SDK server, its --json output checked against the
published schema; and certificates made by `mcpgate cert` accepted by the Python SDK client
(with Python's strict X.509 checks, as 3.13+ applies by default), mTLS included."""

from __future__ import annotations

import asyncio
import json
import ssl
import subprocess
from pathlib import Path

import pytest

from conftest import mcpgate_binary, demo_upstream

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "docs" / "probe.schema.json").read_text())


def run_probe(*args: str) -> tuple[int, dict]:
    proc = subprocess.run(
        [str(mcpgate_binary()), "probe", *args, "--json", "--timeout", "15s"],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError as e:
        pytest.fail(f"probe --json printed no JSON ({e}):\n{proc.stdout}\n{proc.stderr}")
    return proc.returncode, report


def validate(report: dict) -> None:
    from jsonschema import Draft202012Validator

    errors = sorted(Draft202012Validator(SCHEMA).iter_errors(report), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors)


def test_probe_json_matches_the_schema_for_a_healthy_and_a_failing_server(fastmcp_https, pki):
    server = fastmcp_https("streamable-http")
    code, ok = run_probe(server.endpoint, "--ca", str(pki.server_ca))
    validate(ok)
    assert code == 0, ok
    assert ok["http"]["transport"] == "streamable_http" and ok["http"]["tools"] >= 2, ok

    code, bad = run_probe(server.endpoint)
    validate(bad)
    assert code == 10 and bad["verdict"]["class"] == "unknown_issuer", bad

    sse = fastmcp_https("sse")
    code, report = run_probe(sse.endpoint, "--ca", str(pki.server_ca))
    validate(report)
    assert code == 0 and report["http"]["transport"] == "sse", report


def test_certificates_from_mcpgate_cert_pass_the_python_sdk_with_mtls(tmp_path, mcpgate):
    from mcp import ClientSession
    from mcp.client.streamable_http import streamablehttp_client
    import httpx

    data = tmp_path / "data"
    bin_ = str(mcpgate_binary())
    for args in (["ca"], ["server", "localhost", "127.0.0.1"], ["client", "carol"]):
        subprocess.run([bin_, "cert", "--data-dir", str(data), *args], check=True, capture_output=True, timeout=30)
    # Strict DER: Python's cryptography refuses what lenient parsers let through (an explicitly
    # encoded DEFAULT, a negative serial); every certificate made must parse, extensions too.
    from cryptography import x509 as cx509

    for name in ("ca.crt", "localhost.crt", "client-carol.crt"):
        cert = cx509.load_pem_x509_certificate((data / name).read_bytes())
        assert cert.serial_number > 0, name
        bc = cert.extensions.get_extension_for_class(cx509.BasicConstraints).value
        assert bc.ca == (name == "ca.crt"), name
        if name != "ca.crt":
            cert.extensions.get_extension_for_class(cx509.SubjectKeyIdentifier)
            cert.extensions.get_extension_for_class(cx509.AuthorityKeyIdentifier)

    base = mcpgate({
        "server": {"listen": "127.0.0.1:0"},
        "tls": {
            "cert_file": str(data / "localhost.crt"),
            "key_file": str(data / "localhost.key"),
            "client_ca_file": str(data / "ca.crt"),
            "client_auth": "verify",
        },
        "mcp_servers": demo_upstream(),
    })

    ctx = ssl.create_default_context(cafile=str(data / "ca.crt"))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # what Python 3.13 turns on by default
    ctx.load_cert_chain(str(data / "client-carol.crt"), str(data / "client-carol.key"))

    def factory(headers=None, timeout=None, auth=None):
        return httpx.AsyncClient(verify=ctx, headers=headers, timeout=timeout or httpx.Timeout(30), auth=auth, trust_env=False)

    async def session() -> str:
        async with streamablehttp_client(base + "/mcp", httpx_client_factory=factory) as (r, w, _):
            async with ClientSession(r, w) as s:
                await s.initialize()
                result = await s.call_tool("echo", {"text": "made by mcpgate cert"})
                return result.content[0].text

    assert asyncio.run(asyncio.wait_for(session(), 30)) == "made by mcpgate cert"
