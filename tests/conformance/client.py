#!/usr/bin/env python3
"""A real MCP client (the official Python SDK) for the conformance suite's client scenarios.

The suite runs `client.py <server-url>` with the scenario in MCP_CONFORMANCE_SCENARIO. The
client does not talk HTTP itself: it launches `mcpgate connect <server-url>` and speaks to it
over stdio, so every scenario checks mcpgate's client side as a desktop client would use it.
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp import ClientSession, StdioServerParameters, types
from mcp.client.stdio import stdio_client


async def accept_with_defaults(context, params: types.ElicitRequestParams):
    """Accepts every elicitation, filling each field with its schema default."""
    schema = getattr(params, "requestedSchema", None) or {}
    content = {k: v["default"] for k, v in schema.get("properties", {}).items() if "default" in v}
    return types.ElicitResult(action="accept", content=content)


async def run(url: str) -> None:
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "")
    server = StdioServerParameters(command=os.environ["MCPGATE_BIN"], args=["connect", url, "--timeout", "20s"])
    async with stdio_client(server) as (read, write):
        async with ClientSession(read, write, elicitation_callback=accept_with_defaults) as session:
            await session.initialize()
            tools = (await session.list_tools()).tools
            if scenario == "tools_call":
                await session.call_tool("add_numbers", {"a": 5, "b": 3})
            elif scenario == "elicitation-sep1034-client-defaults":
                await session.call_tool("test_client_elicitation_defaults", {})
            elif scenario == "sse-retry":
                for t in tools:
                    await session.call_tool(t.name, {})


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(run(sys.argv[1]), 60))
