"""``/mcp``: every program as a Model Context Protocol tool, over Streamable HTTP (docs/MCP.md).

Named ``mcp_tools`` because ``mcp`` is the SDK it is built on.
"""
