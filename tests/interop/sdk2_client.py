"""The Python SDK's 2.x client (the 2026-07-28 revision) against one MCP endpoint.

Run by tests/interop/test_python_sdk2_client.py with <repo>/.venv-mcp2's Python (mcp 2.x cannot
share a venv with the 1.x the other tests use). Prints one JSON line: the negotiated protocol
version, the server's name, the tool names, and the text of one tool call.

    sdk2_client.py URL CA_FILE MODE TOOL ARGS_JSON     # MODE: auto | legacy | 2026-07-28
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client


async def main(url: str, ca_file: str, mode: str, tool: str, args: dict) -> dict:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    async with httpx2.AsyncClient(verify=ctx, timeout=30) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            tools = await client.list_tools()
            result = await client.call_tool(tool, args)
            info = client.server_info
            return {
                "protocol_version": client.protocol_version,
                "server": info.name if info else None,
                "tools": sorted(t.name for t in tools.tools),
                "is_error": bool(result.is_error),
                "texts": [c.text for c in result.content if getattr(c, "type", "") == "text"],
            }


if __name__ == "__main__":
    url, ca_file, mode, tool, args = sys.argv[1:6]
    print(json.dumps(asyncio.run(main(url, ca_file, mode, tool, json.loads(args)))))
