"""`mcpgate connect`: local stdio to a remote HTTPS MCP server, driven by a real MCP client.

The remote server is the official Python SDK's FastMCP, served over HTTPS by uvicorn
(servers/fastmcp_https.py, the `fastmcp_https` fixture) with a certificate signed by the
test server CA: Streamable HTTP at /mcp, or legacy SSE at /sse, optionally requiring client
certificates. The local client is the SDK's stdio client (`stdio_client` + `ClientSession`)
running `mcpgate connect <url> --ca <test CA> ...` as its "stdio server".

The `direct` tests check the remote server fixture on its own with the SDK's HTTP clients
(no mcpgate), so a broken fixture is not mistaken for a broken bridge.

Run:  scripts/python-env.sh && .venv/bin/pytest -q tests/interop/test_connect_bridge.py
Binary: MCPGATE_BIN, default <repo>/target/debug/mcpgate (`cargo build`).
"""

from __future__ import annotations

import os
import re
import ssl
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path


import pytest

from conftest import CertFiles, Pki, RemoteServer, mcpgate_binary

# A missing `mcp`/`anyio`/`httpx`/`uvicorn` makes every test FAIL (conftest's
# pytest_runtest_call names the reason): never a skip, never a collection error.
try:
    import anyio
    import httpx
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.sse import sse_client
    from mcp.client.stdio import stdio_client
    from mcp.client.streamable_http import streamablehttp_client
except Exception:  # pragma: no cover - reported by conftest.pytest_runtest_call
    anyio = None  # type: ignore[assignment]

pytestmark = [
    pytest.mark.filterwarnings("ignore:Use `streamable_http_client` instead:DeprecationWarning"),
]

SERVER_NAME = "mcpgate-interop-https"  # FastMCP's name in servers/fastmcp_https.py
TOOLS = {"echo", "add"}
SUCCESS_TIMEOUT_S = 60.0
REJECT_TIMEOUT_S = 20.0
CLIENT_CERT_RE = re.compile(r"client[ _-]?cert", re.IGNORECASE)


# --------------------------------------------------------------------------- helpers


@dataclass
class Exchange:
    protocol_version: str
    server_name: str
    tool_names: set[str]
    add_is_error: bool
    add_texts: list[str]
    echo_texts: list[str]


async def _run_session(session: "ClientSession") -> Exchange:
    init = await session.initialize()
    tools = await session.list_tools()
    added = await session.call_tool("add", {"a": 2, "b": 3})
    echoed = await session.call_tool("echo", {"text": "héllo over the bridge"})
    return Exchange(
        protocol_version=str(init.protocolVersion),
        server_name=init.serverInfo.name,
        tool_names={t.name for t in tools.tools},
        add_is_error=bool(added.isError),
        add_texts=[getattr(c, "text", repr(c)) for c in added.content],
        echo_texts=[getattr(c, "text", repr(c)) for c in echoed.content],
    )


def assert_exchange(result: Exchange) -> None:
    assert result.protocol_version, "initialize returned no protocolVersion"
    assert result.server_name == SERVER_NAME, (
        f"serverInfo.name is {result.server_name!r}: the bridge should pass the remote "
        f"server's initialize result through ({SERVER_NAME!r})"
    )
    missing = TOOLS - result.tool_names
    assert not missing, f"tools/list lacks {sorted(missing)}; got {sorted(result.tool_names)}"
    assert not result.add_is_error, f"add returned isError: {result.add_texts}"
    assert result.add_texts and result.add_texts[0].strip() == "5", f"add(2, 3) should be '5'; got {result.add_texts}"
    assert result.echo_texts == ["héllo over the bridge"], f"echo round trip; got {result.echo_texts}"


def connect_args(
    remote: RemoteServer,
    pki: Pki,
    *,
    transport: str,
    client_cert: CertFiles | None = None,
    url: str | None = None,
) -> list[str]:
    args = ["connect", url or remote.endpoint, "--ca", str(pki.server_ca), "--transport", transport]
    if client_cert is not None:
        args += ["--cert", str(client_cert.cert), "--key", str(client_cert.key)]
    return args


def _binary() -> Path:
    binary = mcpgate_binary()
    if not binary.is_file() or not os.access(binary, os.X_OK):
        pytest.fail(
            f"mcpgate binary not found at {binary}: run `cargo build` (or set MCPGATE_BIN)",
            pytrace=False,
        )
    return binary


def _tail(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


def _describe(exc: BaseException) -> str:
    """exc and the members of exception groups, one per line."""
    lines: list[str] = []
    stack = [exc]
    while stack and len(lines) < 12:
        current = stack.pop()
        lines.append(f"  {type(current).__module__}.{type(current).__qualname__}: {current}")
        stack.extend(getattr(current, "exceptions", ()) or ())
    return "\n".join(lines)


class Bridge:
    """Runs `mcpgate connect ...` under the SDK's stdio client; stderr goes to a file."""

    def __init__(self, args: list[str], stderr_path: Path, remote: RemoteServer):
        self.args = args
        self.stderr_path = stderr_path
        self.remote = remote

    def stderr(self) -> str:
        try:
            return self.stderr_path.read_text("utf-8", "replace")
        except OSError:
            return ""

    def context(self) -> str:
        return (
            f"command: {_binary()} {' '.join(self.args)}\n"
            f"--- mcpgate connect stderr ---\n{_tail(self.stderr())}\n"
            f"--- remote FastMCP server ({self.remote.transport}, mtls={self.remote.mtls}) log ---\n"
            f"{self.remote.log()}"
        )

    async def _session(self) -> Exchange:
        params = StdioServerParameters(command=str(_binary()), args=self.args)
        with open(self.stderr_path, "w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write):
                async with ClientSession(read, write, read_timeout_seconds=timedelta(seconds=30)) as session:
                    return await _run_session(session)

    def exchange(self) -> Exchange:
        """initialize, list_tools, call_tool(add), call_tool(echo): all within SUCCESS_TIMEOUT_S."""

        async def main() -> Exchange | BaseException | None:
            try:
                with anyio.fail_after(SUCCESS_TIMEOUT_S):
                    return await self._session()
            except TimeoutError:
                return None
            except Exception as exc:
                return exc

        outcome = anyio.run(main)
        if outcome is None:
            pytest.fail(
                f"the MCP session through `mcpgate connect` did not complete within "
                f"{SUCCESS_TIMEOUT_S:.0f} s\n{self.context()}",
                pytrace=False,
            )
        if isinstance(outcome, BaseException):
            pytest.fail(
                f"the MCP session through `mcpgate connect` failed:\n{_describe(outcome)}\n{self.context()}",
                pytrace=False,
            )
        return outcome

    def expect_failure(self) -> BaseException:
        """The session must fail (JSON-RPC error or the bridge exiting) within REJECT_TIMEOUT_S."""

        async def main() -> Exchange | BaseException | None:
            try:
                with anyio.fail_after(REJECT_TIMEOUT_S):
                    return await self._session()
            except TimeoutError:
                return None
            except Exception as exc:
                return exc

        outcome = anyio.run(main)
        if outcome is None:
            pytest.fail(
                f"expected the session through `mcpgate connect` to fail, but nothing failed "
                f"within {REJECT_TIMEOUT_S:.0f} s (it hung)\n{self.context()}",
                pytrace=False,
            )
        if isinstance(outcome, Exchange):
            pytest.fail(
                f"expected the session through `mcpgate connect` to fail, but it worked: "
                f"{outcome}\n{self.context()}",
                pytrace=False,
            )
        return outcome


@pytest.fixture
def bridge(tmp_path: Path):
    """Factory: bridge(remote, args) -> Bridge (stderr in tmp_path/connect-<n>.stderr)."""
    count = [0]

    def make(remote: RemoteServer, args: list[str]) -> Bridge:
        count[0] += 1
        return Bridge(args, tmp_path / f"connect-{count[0]}.stderr", remote)

    return make


# --------------------------------------------------------------------------- the remote fixture on its own


def _direct_ssl_context(pki: Pki, client_cert: CertFiles | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.server_ca))
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    if client_cert is not None:
        ctx.load_cert_chain(str(client_cert.cert), str(client_cert.key))
    return ctx


async def _direct_session(remote: RemoteServer, pki: Pki, client_cert: CertFiles | None) -> Exchange:
    ctx = _direct_ssl_context(pki, client_cert)

    def factory(headers=None, timeout=None, auth=None) -> "httpx.AsyncClient":
        return httpx.AsyncClient(
            verify=ctx,
            headers=headers,
            timeout=timeout if timeout is not None else httpx.Timeout(30.0, read=300.0),
            auth=auth,
            trust_env=False,
        )

    read_timeout = timedelta(seconds=20)
    if remote.transport == "streamable-http":
        async with streamablehttp_client(remote.endpoint, timeout=10, httpx_client_factory=factory) as (r, w, _):
            async with ClientSession(r, w, read_timeout_seconds=read_timeout) as session:
                return await _run_session(session)
    async with sse_client(remote.endpoint, timeout=10, httpx_client_factory=factory) as (r, w):
        async with ClientSession(r, w, read_timeout_seconds=read_timeout) as session:
            return await _run_session(session)


@pytest.mark.parametrize("mtls", [False, True], ids=["tls", "mtls"])
@pytest.mark.parametrize("transport", ["streamable-http", "sse"])
def test_direct_sdk_client_against_remote_fixture(transport: str, mtls: bool, pki: Pki, fastmcp_https) -> None:
    remote = fastmcp_https(transport, mtls=mtls)

    async def main() -> Exchange:
        with anyio.fail_after(SUCCESS_TIMEOUT_S):
            return await _direct_session(remote, pki, pki.client if mtls else None)

    try:
        result = anyio.run(main)
    except BaseException as exc:
        pytest.fail(f"direct SDK client failed:\n{_describe(exc)}\n--- server log ---\n{remote.log()}", pytrace=False)
    assert_exchange(result)


def test_direct_sdk_client_without_client_cert_is_refused(pki: Pki, fastmcp_https) -> None:
    """The mTLS fixture really enforces client certificates (else the bridge test proves nothing)."""
    remote = fastmcp_https("streamable-http", mtls=True)

    async def main() -> Exchange | BaseException | None:
        try:
            with anyio.fail_after(REJECT_TIMEOUT_S):
                return await _direct_session(remote, pki, None)
        except TimeoutError:
            return None
        except Exception as exc:
            return exc

    outcome = anyio.run(main)
    assert isinstance(outcome, BaseException), f"expected a refusal, got {outcome!r}\n{remote.log()}"
    leaves: list[BaseException] = []
    stack = [outcome]
    while stack:
        current = stack.pop()
        members = getattr(current, "exceptions", None)
        if members:
            stack.extend(members)
        else:
            leaves.append(current)
    assert any(isinstance(e, (ssl.SSLError, httpx.TransportError)) for e in leaves), (
        f"expected a TLS-level refusal, got:\n{_describe(outcome)}\n{remote.log()}"
    )


# --------------------------------------------------------------------------- mcpgate connect


def test_connect_streamable_http(pki: Pki, fastmcp_https, bridge) -> None:
    remote = fastmcp_https("streamable-http")
    result = bridge(remote, connect_args(remote, pki, transport="http")).exchange()
    assert_exchange(result)


def test_connect_sse(pki: Pki, fastmcp_https, bridge) -> None:
    remote = fastmcp_https("sse")
    result = bridge(remote, connect_args(remote, pki, transport="sse")).exchange()
    assert_exchange(result)


def test_connect_auto_uses_streamable_http(pki: Pki, fastmcp_https, bridge) -> None:
    remote = fastmcp_https("streamable-http")
    result = bridge(remote, connect_args(remote, pki, transport="auto")).exchange()
    assert_exchange(result)


def test_connect_auto_falls_back_to_sse(pki: Pki, fastmcp_https, bridge) -> None:
    """The server only speaks legacy SSE: `auto` must try Streamable HTTP, then fall back."""
    remote = fastmcp_https("sse")
    result = bridge(remote, connect_args(remote, pki, transport="auto")).exchange()
    assert_exchange(result)


@pytest.mark.parametrize(
    "server_transport,flag", [("streamable-http", "http"), ("sse", "sse")], ids=["http", "sse"]
)
def test_connect_mtls_with_client_certificate(
    server_transport: str, flag: str, pki: Pki, fastmcp_https, bridge
) -> None:
    remote = fastmcp_https(server_transport, mtls=True)
    result = bridge(remote, connect_args(remote, pki, transport=flag, client_cert=pki.client)).exchange()
    assert_exchange(result)


@pytest.mark.parametrize(
    "server_transport,flag", [("streamable-http", "http"), ("sse", "sse")], ids=["http", "sse"]
)
def test_connect_mtls_without_client_certificate_fails_clearly(
    server_transport: str, flag: str, pki: Pki, fastmcp_https, bridge
) -> None:
    remote = fastmcp_https(server_transport, mtls=True)
    run = bridge(remote, connect_args(remote, pki, transport=flag))
    outcome = run.expect_failure()
    # Either a JSON-RPC error answering initialize (McpError), or the bridge exiting
    # (the SDK then fails the pending request: McpError "Connection closed" or a closed stream).
    stderr = run.stderr()
    assert CLIENT_CERT_RE.search(stderr), (
        f"mcpgate connect failed as expected, but its stderr does not say that the server "
        f"requires a client certificate (no match for {CLIENT_CERT_RE.pattern!r})\n"
        f"--- what the MCP client saw ---\n{_describe(outcome)}\n{run.context()}"
    )
