"""The official Python MCP SDK client talking to mcpgate over HTTPS.

Each case runs over both client transports of the SDK: Streamable HTTP
(`streamablehttp_client`, `<base>/mcp`) and legacy SSE (`sse_client`, `<base>/sse`).
The client trusts only the test server CA (never verification off) through an
`httpx_client_factory`, and presents a client certificate where the case needs one.

Run:  scripts/python-env.sh && .venv/bin/pytest -q tests/interop
"""

from __future__ import annotations

import asyncio
import os
import secrets
import ssl
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, AsyncIterator, Callable

import pytest

from conftest import (
    CertFiles,
    Pki,
    demo_upstream,
    fastmcp_upstream,
    gateway_config,
)

# `import mcp` / `import httpx` failing makes every test fail (conftest's
# pytest_runtest_call names the reason); it must not become a skip or a collection error.
try:
    import httpx
    from mcp import ClientSession
    from mcp.client.sse import sse_client
    from mcp.client.streamable_http import streamablehttp_client
except Exception:  # pragma: no cover - reported by conftest.pytest_runtest_call
    httpx = None  # type: ignore[assignment]

pytestmark = [
    # streamablehttp_client (the factory-taking API) is deprecated in favour of
    # streamable_http_client(http_client=...) in recent 1.x SDKs; it is still what
    # many clients call, so it is the one exercised here.
    pytest.mark.filterwarnings("ignore:Use `streamable_http_client` instead:DeprecationWarning"),
]

TRANSPORTS = ["streamable-http", "sse"]
SUCCESS_TIMEOUT_S = 60.0
REJECT_TIMEOUT_S = 15.0
TOKEN_ENV = "MCPGATE_TEST_TOKEN"

FASTMCP_TOOLS = {"echo", "add"}
DEMO_TOOLS = {"echo", "add", "slow", "large"}


# --------------------------------------------------------------------------- client side


def client_ssl_context(pki: Pki, client_cert: CertFiles | None = None) -> ssl.SSLContext:
    """Trusts exactly the test server CA; optionally presents a client certificate."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.server_ca))
    # What Python 3.13+ enables by default: keeps the test PKI honest for newer clients.
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    if client_cert is not None:
        ctx.load_cert_chain(str(client_cert.cert), str(client_cert.key))
    return ctx


def httpx_client_factory(ctx: ssl.SSLContext) -> Callable[..., Any]:
    """An `mcp.shared._httpx_utils.McpHttpClientFactory` using `ctx` for TLS."""

    def factory(
        headers: dict[str, str] | None = None,
        timeout: "httpx.Timeout | None" = None,
        auth: "httpx.Auth | None" = None,
    ) -> "httpx.AsyncClient":
        kwargs: dict[str, Any] = {
            "verify": ctx,
            "timeout": timeout if timeout is not None else httpx.Timeout(30.0, read=300.0),
            # No proxies or CA bundles from the environment: the gateway is on loopback.
            "trust_env": False,
        }
        if headers is not None:
            kwargs["headers"] = headers
        if auth is not None:
            kwargs["auth"] = auth
        return httpx.AsyncClient(**kwargs)

    return factory


@asynccontextmanager
async def open_session(
    base_url: str,
    transport: str,
    ctx: ssl.SSLContext,
    headers: dict[str, str] | None = None,
) -> AsyncIterator["ClientSession"]:
    factory = httpx_client_factory(ctx)
    read_timeout = timedelta(seconds=20)
    if transport == "streamable-http":
        async with streamablehttp_client(
            f"{base_url}/mcp",
            headers=headers,
            timeout=10,
            sse_read_timeout=60,
            httpx_client_factory=factory,
        ) as (read, write, _get_session_id):
            async with ClientSession(read, write, read_timeout_seconds=read_timeout) as session:
                yield session
    elif transport == "sse":
        async with sse_client(
            f"{base_url}/sse",
            headers=headers,
            timeout=10,
            sse_read_timeout=60,
            httpx_client_factory=factory,
        ) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=read_timeout) as session:
                yield session
    else:  # pragma: no cover
        raise ValueError(transport)


@dataclass
class Exchange:
    protocol_version: str
    server_name: str
    tool_names: set[str]
    is_error: bool
    texts: list[str]


async def _exchange(
    base_url: str,
    transport: str,
    ctx: ssl.SSLContext,
    tool: str,
    arguments: dict[str, Any],
    headers: dict[str, str] | None = None,
) -> Exchange:
    async with open_session(base_url, transport, ctx, headers) as session:
        init = await session.initialize()
        tools = await session.list_tools()
        result = await session.call_tool(tool, arguments)
    return Exchange(
        protocol_version=str(init.protocolVersion),
        server_name=init.serverInfo.name,
        tool_names={t.name for t in tools.tools},
        is_error=bool(result.isError),
        texts=[getattr(c, "text", repr(c)) for c in result.content],
    )


def exchange(*args: Any, **kwargs: Any) -> Exchange:
    """initialize, list_tools, call_tool: must all succeed within SUCCESS_TIMEOUT_S."""

    async def main() -> Exchange:
        return await asyncio.wait_for(_exchange(*args, **kwargs), SUCCESS_TIMEOUT_S)

    try:
        return asyncio.run(main())
    except TimeoutError:
        pytest.fail(
            f"MCP session (initialize, list_tools, call_tool) did not complete within "
            f"{SUCCESS_TIMEOUT_S:.0f} s",
            pytrace=False,
        )


def _all_exceptions(exc: BaseException) -> list[BaseException]:
    """exc, the members of exception groups, and causes/contexts, flattened."""
    seen: list[BaseException] = []
    stack = [exc]
    while stack:
        current = stack.pop()
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        stack.extend(getattr(current, "exceptions", ()) or ())
        stack.append(current.__cause__)  # type: ignore[arg-type]
        stack.append(current.__context__)  # type: ignore[arg-type]
    return seen


def _describe(excs: list[BaseException]) -> str:
    return "\n".join(f"  {type(e).__module__}.{type(e).__qualname__}: {e}" for e in excs[:12])


def expect_rejected(*args: Any, **kwargs: Any) -> list[BaseException]:
    """The same exchange must fail with an exception (not hang) within REJECT_TIMEOUT_S.

    Returns every exception in the raised tree, for the caller to check its kind.
    """

    async def main() -> BaseException | Exchange | None:
        try:
            return await asyncio.wait_for(_exchange(*args, **kwargs), REJECT_TIMEOUT_S)
        except TimeoutError:
            return None
        except Exception as exc:  # includes ExceptionGroup
            return exc

    outcome = asyncio.run(main())
    if outcome is None:
        pytest.fail(
            f"expected the connection to be rejected, but nothing failed within "
            f"{REJECT_TIMEOUT_S:.0f} s (the client hung instead)",
            pytrace=False,
        )
    if isinstance(outcome, Exchange):
        pytest.fail(
            f"expected the connection to be rejected, but the MCP session worked: {outcome}",
            pytrace=False,
        )
    return _all_exceptions(outcome)


def assert_tls_rejection(excs: list[BaseException]) -> None:
    """A refusal at the TLS layer: an ssl/transport error, not an HTTP response."""
    assert any(isinstance(e, (ssl.SSLError, httpx.TransportError)) for e in excs), (
        "expected a TLS/transport error (handshake refused by the gateway), got:\n" + _describe(excs)
    )
    assert not any(isinstance(e, httpx.HTTPStatusError) for e in excs), (
        "the gateway answered over HTTP instead of refusing the TLS handshake:\n" + _describe(excs)
    )


def assert_http_401(excs: list[BaseException]) -> None:
    statuses = [e.response.status_code for e in excs if isinstance(e, httpx.HTTPStatusError)]
    assert 401 in statuses, "expected an HTTP 401 from the gateway, got:\n" + _describe(excs)


def assert_tool_result(result: Exchange, expected_tools: set[str], check: Callable[[str], bool], what: str):
    assert result.protocol_version, "initialize returned no protocolVersion"
    missing = expected_tools - result.tool_names
    assert not missing, f"tools/list lacks {sorted(missing)}; got {sorted(result.tool_names)}"
    assert not result.is_error, f"tool call returned isError: {result.texts}"
    assert result.texts and check(result.texts[0]), f"{what}; got {result.texts}"


# --------------------------------------------------------------------------- 1. FastMCP upstream


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_fastmcp_stdio_upstream(transport: str, pki: Pki, mcpgate) -> None:
    base = mcpgate(gateway_config(pki, fastmcp_upstream()))
    assert base.startswith("https://"), f"gateway with TLS configured announced {base}"
    result = exchange(base, transport, client_ssl_context(pki), "add", {"a": 2, "b": 3})
    assert_tool_result(result, FASTMCP_TOOLS, lambda t: t.strip() == "5", "add(2, 3) should be '5'")


# --------------------------------------------------------------------------- 2. built-in demo server


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_builtin_demo_server_upstream(transport: str, pki: Pki, mcpgate) -> None:
    base = mcpgate(gateway_config(pki, demo_upstream()))
    result = exchange(base, transport, client_ssl_context(pki), "echo", {"text": "hi"})
    assert_tool_result(result, DEMO_TOOLS, lambda t: "hi" in t, "echo('hi') should contain 'hi'")


# --------------------------------------------------------------------------- 3. mTLS


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_mtls_with_client_certificate(transport: str, pki: Pki, mcpgate) -> None:
    base = mcpgate(gateway_config(pki, fastmcp_upstream(), mtls=True))
    result = exchange(base, transport, client_ssl_context(pki, pki.client), "add", {"a": 2, "b": 3})
    assert_tool_result(result, FASTMCP_TOOLS, lambda t: t.strip() == "5", "add(2, 3) should be '5'")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_mtls_without_client_certificate_is_refused(transport: str, pki: Pki, mcpgate) -> None:
    base = mcpgate(gateway_config(pki, fastmcp_upstream(), mtls=True))
    excs = expect_rejected(base, transport, client_ssl_context(pki), "add", {"a": 2, "b": 3})
    assert_tls_rejection(excs)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_mtls_client_certificate_from_other_ca_is_refused(transport: str, pki: Pki, mcpgate) -> None:
    base = mcpgate(gateway_config(pki, fastmcp_upstream(), mtls=True))
    excs = expect_rejected(
        base, transport, client_ssl_context(pki, pki.other_client), "add", {"a": 2, "b": 3}
    )
    assert_tls_rejection(excs)


# --------------------------------------------------------------------------- 4. bearer auth


def start_bearer_gateway(pki: Pki, mcpgate) -> tuple[str, str]:
    """A gateway requiring `Authorization: Bearer <token>`, the token given as ${MCPGATE_TEST_TOKEN}."""
    token = "tok-" + secrets.token_urlsafe(24)
    base = mcpgate(
        gateway_config(pki, fastmcp_upstream(), bearer_env=TOKEN_ENV),
        env={TOKEN_ENV: token},
    )
    return base, token


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_bearer_token_accepted(transport: str, pki: Pki, mcpgate) -> None:
    base, token = start_bearer_gateway(pki, mcpgate)
    result = exchange(
        base,
        transport,
        client_ssl_context(pki),
        "add",
        {"a": 2, "b": 3},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert_tool_result(result, FASTMCP_TOOLS, lambda t: t.strip() == "5", "add(2, 3) should be '5'")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_bearer_wrong_token_refused(transport: str, pki: Pki, mcpgate) -> None:
    base, token = start_bearer_gateway(pki, mcpgate)
    excs = expect_rejected(
        base,
        transport,
        client_ssl_context(pki),
        "add",
        {"a": 2, "b": 3},
        headers={"Authorization": f"Bearer {token}-wrong"},
    )
    assert_http_401(excs)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_bearer_missing_token_refused(transport: str, pki: Pki, mcpgate) -> None:
    base, _token = start_bearer_gateway(pki, mcpgate)
    excs = expect_rejected(base, transport, client_ssl_context(pki), "add", {"a": 2, "b": 3})
    assert_http_401(excs)
