"""A minimal FastMCP server (official Python `mcp` SDK) speaking MCP over stdio.

Used by the interop tests as an upstream that mcpgate wraps:
    mcp_servers:
      upstream:
        transport: stdio
        command: <python>
        args: [".../fastmcp_stdio.py"]

Tools: echo(text) -> text, add(a, b) -> a + b.
Nothing may be printed to stdout except the MCP protocol itself.
"""

from mcp.server.fastmcp import FastMCP

server = FastMCP("mcpgate-interop-fastmcp")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
def add(a: int, b: int) -> int:
    """Return the sum of two integers."""
    return a + b


if __name__ == "__main__":
    server.run(transport="stdio")
