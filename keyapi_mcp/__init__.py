"""keyapi-mcp: an MCP server for KeyAPI's TikTok Video Products (Analytics) endpoint.

Nothing happens at import time: the CLI (`keyapi_mcp.__main__`) builds settings and the server.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("keyapi-mcp")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
