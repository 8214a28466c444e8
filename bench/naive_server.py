"""The naive wrapper baseline: what most community MCP servers for an HTTP API do.

One tool passes `video_ids`, `page_num` and `page_size` straight to the upstream and returns the raw
JSON text: no cache, no paging of its own, no condensing. It is not a strawman: it shares one
`httpx.AsyncClient` across calls (no per-call construction). Configured by the same variables as
keyapi-mcp (`KEYAPI_API_KEY`, `KEYAPI_BASE_URL`). Run over stdio with `python bench/naive_server.py`.
"""

from __future__ import annotations

import os

import httpx
from mcp.server.mcpserver import MCPServer

ENDPOINT = "/v1/tiktok/video/products/analytics"


def build_naive_server(base_url: str, api_key: str) -> MCPServer:
    server = MCPServer("naive-keyapi", log_level="WARNING")  # as quiet as keyapi-mcp by default
    http: dict[str, httpx.AsyncClient] = {}

    @server.tool(structured_output=False)
    async def get_video_products(video_ids: str, page_num: int = 1, page_size: int = 10) -> str:
        """TikTok video products and sales from KeyAPI. video_ids: comma-separated ids. 1 credit per page."""
        if "client" not in http:
            http["client"] = httpx.AsyncClient(trust_env=False, timeout=30.0)
        response = await http["client"].get(
            base_url.rstrip("/") + ENDPOINT,
            params={"video_ids": video_ids, "page_num": page_num, "page_size": page_size},
            headers={"Authorization": f"Bearer {api_key}"},
        )
        return response.text

    return server


if __name__ == "__main__":
    build_naive_server(os.environ["KEYAPI_BASE_URL"], os.environ.get("KEYAPI_API_KEY", "")).run("stdio")
