"""Clients that send what no honest client would: made-up names, malformed prompt arguments, huge URIs.

Each test goes through the SDK's `Client` (in memory, or over Streamable HTTP on 127.0.0.1) and checks
that the server's answers, its metrics and its logs stay bounded and say what was wrong.
"""

from __future__ import annotations

import json
import logging
import random
import string
import time

import httpx
import mcp_types
import pytest
from helpers import THREE_ROWS, TOOL, TWELVE_ROWS, connect, make_settings, text_of
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, PromptReference
from test_http import connect as connect_http
from test_http import http_settings, serving

from keyapi_mcp.server import build_server

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


# ---------------------------------------------------------------------------------------------
# Prompt arguments: the client is told what to fix


HUGE = 100_000
BAD_PROMPT_ARGUMENTS = [
    pytest.param("analyze_video_commerce", {"video_ids": "not-a-video"}, "video_ids", id="bad-id"),
    pytest.param("top_products", {"video_ids": "https://vm.tiktok.com/ZMabc/"}, "short link", id="short-link"),
    pytest.param("top_products", {"video_ids": THREE_ROWS, "n": "ten"}, "n:", id="n-ten"),
    pytest.param("top_products", {"video_ids": THREE_ROWS, "n": "0"}, "n:", id="n-zero"),
    pytest.param("compare_videos", {"video_ids_a": THREE_ROWS}, "video_ids_b", id="missing"),
    pytest.param("no_such_prompt", {}, "no prompt named", id="unknown"),
    pytest.param("top_products", {"video_ids": THREE_ROWS, "x" * HUGE: "1"}, "no argument", id="extra"),
]


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
@pytest.mark.parametrize(("prompt", "arguments", "names"), BAD_PROMPT_ARGUMENTS)
async def test_a_bad_prompt_argument_is_invalid_params_with_the_invalid_input_text_and_one_log_line(
    mode: str, prompt: str, arguments: dict[str, str], names: str, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO)
    async with Client(build_server(make_settings()), mode=mode) as client:
        assert client.protocol_version == ("2025-11-25" if mode == "legacy" else mode)
        with pytest.raises(MCPError) as raised:
            await client.get_prompt(prompt, arguments)
    error = raised.value.error
    assert error.code == INVALID_PARAMS
    assert error.message.startswith("[invalid_input] ") and names in error.message, error.message
    assert len(error.message) < 800
    ours = [r for r in caplog.records if r.name.startswith("keyapi_mcp")]
    assert len(ours) == 1 and "refused" in ours[0].getMessage() and "\n" not in ours[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]  # no traceback anywhere


# ---------------------------------------------------------------------------------------------
# Whatever a client sends, what comes back is bounded


async def test_a_video_uri_with_a_hundred_thousand_digits_says_which_id_is_wrong_in_a_bounded_message():
    async with connect(make_settings()) as client:
        with pytest.raises(MCPError) as raised:
            await client.read_resource("keyapi://videos/" + "7" * HUGE)
        with pytest.raises(MCPError) as letters:
            await client.read_resource("keyapi://videos/" + "x" * HUGE)
        with pytest.raises(MCPError) as other:
            await client.read_resource("keyapi://" + "y" * HUGE)
        with pytest.raises(MCPError) as short:
            await client.read_resource("keyapi://videos/12ab")
    error = raised.value.error
    assert error.code == INVALID_PARAMS
    assert error.message.startswith("[invalid_input] ") and f"{HUGE} digits" in error.message
    assert "video id" in letters.value.error.message and "xxxx" in letters.value.error.message
    assert "12ab" in short.value.error.message  # a short wrong id is quoted whole
    for refused in (raised, letters, other, short):
        assert len(json.dumps(refused.value.error.model_dump(mode="json"))) < 600, refused.value.error


async def test_names_arguments_and_typed_text_a_hundred_thousand_characters_long_get_bounded_answers():
    async with connect(make_settings(), demo=True) as client:
        tool = await client.call_tool("t" * HUGE, {})
        extra = await client.call_tool(TOOL, {"video_ids": [THREE_ROWS], "k" * HUGE: 1})
        ids = await client.call_tool(TOOL, {"video_ids": ["9" * HUGE]})
        with pytest.raises(MCPError) as prompt:
            await client.get_prompt("top_products", {"video_ids": "v" * HUGE})
        with pytest.raises(MCPError) as unknown:
            await client.get_prompt("p" * HUGE, {})
        await client.call_tool(TOOL, {"video_ids": [THREE_ROWS, TWELVE_ROWS]})  # cached: completion offers them
        completion = await client.complete(
            PromptReference(name="top_products"), {"name": "video_ids", "value": "1" * HUGE + ",9"}
        )
        typed = await client.complete(PromptReference(name="top_products"), {"name": "video_ids", "value": "1,9"})
    for result in (tool, extra, ids):
        assert result.is_error and len(text_of(result)) < 800, text_of(result)[:200]
    assert "no tool named" in text_of(tool) and "[invalid_input]" in text_of(extra)
    for refused in (prompt, unknown):
        assert refused.value.error.code == INVALID_PARAMS and len(refused.value.error.message) < 800
    assert completion.completion.values == []
    assert sorted(typed.completion.values) == [f"1,{THREE_ROWS}", f"1,{TWELVE_ROWS}"]  # short input still completes
