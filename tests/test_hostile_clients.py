"""Clients that send what no honest client would: made-up names, malformed prompt arguments, huge URIs.

Each test goes through the SDK's `Client` (in memory, or over Streamable HTTP on 127.0.0.1) and checks
that the server's answers, its metrics and its logs stay bounded and say what was wrong.
"""

from __future__ import annotations

import random
import string
import time

import httpx
import mcp_types
import pytest
from mcp.shared.exceptions import MCPError
from test_http import connect as connect_http
from test_http import http_settings, serving

pytestmark = pytest.mark.anyio

METRICS_TOKEN = "metrics_token_0123456789abcd"
OTHER = "_OTHER"


def _metrics_text(base: str) -> str:
    response = httpx.get(f"{base}/metrics", headers={"authorization": f"Bearer {METRICS_TOKEN}"})
    assert response.status_code == 200, response.text
    return response.text


def _random_name(rng: random.Random) -> str:
    return "".join(rng.choices(string.ascii_letters + string.digits + "/_-", k=rng.randint(8, 40)))


async def test_two_thousand_made_up_tool_and_method_names_leave_the_metrics_small():
    rng = random.Random(21)
    settings = http_settings(mcp_metrics=True, mcp_metrics_token=METRICS_TOKEN)
    with serving(settings) as base:
        async with connect_http(base) as client:
            await client.call_tool("get_credit_usage", {})
            await client.list_tools()
            before = _metrics_text(base)
            started = time.monotonic()
            for _ in range(1000):
                result = await client.call_tool(_random_name(rng), {})
                assert result.is_error
            for _ in range(1000):
                request = mcp_types.Request[dict[str, str] | None, str](method=_random_name(rng), params=None)
                with pytest.raises(MCPError):
                    await client.session.send_request(request, mcp_types.EmptyResult)
            took = time.monotonic() - started
        after = _metrics_text(base)
    # Every made-up name went under one label value; the known ones keep theirs.
    assert len(after) <= len(before) + 8_000, (len(before), len(after), took)  # two new series at most
    assert f'gen_ai_tool_name="{OTHER}"' in after and f'mcp_method_name="{OTHER}"' in after
    assert 'gen_ai_tool_name="get_credit_usage"' in after and 'mcp_method_name="tools/list"' in after
    labelled = {line.split("{", 1)[1].split("le=")[0] for line in after.splitlines() if line.startswith("mcp_server")}
    assert len(labelled) < 20, sorted(labelled)
