"""In-process servers for the token and credit measures (no subprocess: exact, fast, deterministic)."""

from __future__ import annotations

from bench.common import BENCH_API_KEY
from keyapi_mcp.config import load_settings
from keyapi_mcp.server import build_server
from keyapi_mcp.state.sqlite_store import SQLiteStore
from keyapi_mcp.surface.calls import KeyAPIMCPServer


def keyapi_server(base_url: str) -> KeyAPIMCPServer:
    """keyapi-mcp as shipped, pointed at the fake upstream, with a fresh private ledger/cache."""
    settings = load_settings(
        _env_file=None,
        api_key=BENCH_API_KEY,
        base_url=base_url,
        max_rps=10_000,
        max_credits_per_call=1000,
        daily_credit_limit=0,
        cache_ttl_seconds=21_600,
    )
    return build_server(settings, store=SQLiteStore(":memory:"))


def default_server(base_url: str) -> KeyAPIMCPServer:
    """keyapi-mcp with a user's default limits (per-call cap, daily limit, output budget), fresh state."""
    settings = load_settings(_env_file=None, api_key=BENCH_API_KEY, base_url=base_url, max_rps=10_000)
    return build_server(settings, store=SQLiteStore(":memory:"))
