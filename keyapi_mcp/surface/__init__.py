"""The MCP surface: tools, resources, prompts, the App view, schema tweaks and the call wrapper."""
