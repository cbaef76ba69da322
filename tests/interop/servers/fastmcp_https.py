"""A FastMCP server (official Python `mcp` SDK) served over HTTPS by uvicorn.

Used by the interop tests as a *remote* MCP server that `mcpgate connect` bridges to:

    python fastmcp_https.py --transport streamable-http|sse --cert server.crt --key server.key \
        --port-file PATH [--client-ca client-ca.crt]

- `streamable-http`: FastMCP's `streamable_http_app()`, endpoint `/mcp` (Streamable HTTP only).
- `sse`: FastMCP's `sse_app()`, endpoint `/sse` plus `/messages/` (legacy SSE only; a POST
  to `/sse` is not a Streamable HTTP endpoint, which is what `--transport auto` must detect).
- `--client-ca`: client certificates are REQUIRED (uvicorn `ssl_cert_reqs=CERT_REQUIRED`)
  and verified against that CA.

The listening socket is bound to 127.0.0.1 on a free port chosen by the kernel before
uvicorn starts; the port is written to `--port-file` (atomically). The socket only starts
listening once uvicorn (and the app's lifespan) is up, so "the port accepts connections"
means "the server is ready".

Tools: echo(text) -> text, add(a, b) -> a + b.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import sys

import uvicorn
from mcp.server.fastmcp import FastMCP
from mcp.server.transport_security import TransportSecuritySettings

SERVER_NAME = "mcpgate-interop-https"


def build_server(port: int) -> FastMCP:
    # FastMCP bound to a loopback host turns on DNS-rebinding protection (Host/Origin
    # checks) by itself; set it explicitly so the accepted Host values are known:
    # 127.0.0.1:<port> and localhost:<port> (what a client sends for these URLs).
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"127.0.0.1:{port}", f"localhost:{port}", "127.0.0.1:*", "localhost:*"],
        allowed_origins=[
            f"https://127.0.0.1:{port}",
            f"https://localhost:{port}",
            "https://127.0.0.1:*",
            "https://localhost:*",
        ],
    )
    server = FastMCP(SERVER_NAME, host="127.0.0.1", port=port, transport_security=security)

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    def add(a: int, b: int) -> int:
        """Return the sum of two integers."""
        return a + b

    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=["streamable-http", "sse"], required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--client-ca", default=None)
    parser.add_argument("--port-file", required=True)
    args = parser.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]

    server = build_server(port)
    app = server.streamable_http_app() if args.transport == "streamable-http" else server.sse_app()

    ssl_options: dict = {"ssl_certfile": args.cert, "ssl_keyfile": args.key}
    if args.client_ca:
        ssl_options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
        ssl_options["ssl_ca_certs"] = args.client_ca

    config = uvicorn.Config(
        app,
        log_level="info",
        access_log=True,
        lifespan="on",
        timeout_graceful_shutdown=2,
        **ssl_options,
    )

    tmp = f"{args.port_file}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{port}\n")
    os.replace(tmp, args.port_file)
    print(f"fastmcp_https: {args.transport} on https://127.0.0.1:{port}", file=sys.stderr, flush=True)

    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
