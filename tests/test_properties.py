"""Property-based: any JSON value for any tool argument gives a valid result or a clean error, never a crash.

One in-memory `Client` per test serves every Hypothesis example (the server, its ledger and cache persist
across examples, as in a long session). The fake upstream's request log is the oracle for "never an
upstream request with invalid parameters".
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import AsyncIterator
from typing import Any

import pytest
from helpers import TEST_API_KEY, TOOL, connect, make_settings, parsed, text_of
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from mcp import Client
from mcp_types import CallToolResult

from keyapi_mcp.core import text as text_module
from keyapi_mcp.presentation.models import CreditUsage
from keyapi_mcp.upstream.demo import FakeUpstream, demo_dataset, mock_transport

pytestmark = pytest.mark.anyio

CODES = {
    "invalid_input",
    "missing_api_key",
    "unauthorized",
    "out_of_credits",
    "budget_exceeded",
    "rate_limited",
    "upstream_error",
    "timeout",
    "confirmation_required",  # a large max_credits asks first (keyapi_mcp.surface.consent)
    "confirmation_invalid",
}
ERROR_RE = re.compile(r"^\[(?P<code>[a-z_]+)\] \S")
IDS_PARAM_RE = re.compile(r"^[0-9]{1,25}(,[0-9]{1,25}){0,49}$")
DEMO_IDS = list(demo_dataset())
HYPOTHESIS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=12,
)
digits = st.from_regex(r"[0-9]{1,25}", fullmatch=True)
unicode_digits = st.from_regex(r"\d{1,25}", fullmatch=True)  # "႐", "༡": digits, but not ids
valid_id = (
    digits
    | st.sampled_from(DEMO_IDS)
    | digits.map(lambda d: f"https://www.tiktok.com/@user/video/{d}")
    | digits.map(lambda d: f"tiktok.com/v/{d}.html?lang=en")
    | st.lists(st.sampled_from(DEMO_IDS), min_size=2, max_size=4).map(",".join)
)
odd_id = (
    unicode_digits
    | st.text(max_size=30)
    | st.sampled_from(
        [
            "https://vm.tiktok.com/ZMabc/",
            "https://www.tiktok.com/@user",
            "https://evil.example/video/123",
            "",
            " , ",
            "0" * 26,
            "12\u0000",
            "7521783049722285367\n",
            "-1",
            "1e18",
        ]
    )
)
# Half the examples are plausible calls (so the upstream is really reached), half anything at all.
plausible_args = st.fixed_dictionaries(
    {"video_ids": st.lists(valid_id, min_size=1, max_size=6)},
    optional={
        "max_credits": st.integers(0, 6),
        "page_num": st.integers(1, 3),
        "response_format": st.sampled_from(["concise", "detailed"]),
        "refresh": st.booleans(),
    },
)
wild_args = st.fixed_dictionaries(
    {},
    optional={
        "video_ids": st.lists(valid_id | odd_id, max_size=60) | json_values,
        "max_credits": st.integers(-10, 200_000) | json_values,
        "page_num": st.integers(-5, 200_000) | json_values,
        "response_format": st.sampled_from(["concise", "detailed", "CONCISE", ""]) | json_values,
        "refresh": st.booleans() | json_values,
    },
)
unknown_args = st.dictionaries(st.text(max_size=12), json_values, max_size=2)


@pytest.fixture
async def session() -> AsyncIterator[tuple[Client, FakeUpstream]]:
    fake = FakeUpstream(demo_dataset(), api_key=TEST_API_KEY)
    config = make_settings(max_rps=10_000.0, daily_credit_limit=0)
    async with connect(config, transport=mock_transport(fake)) as client:
        yield client, fake


def check_error(result: CallToolResult) -> str:
    text = text_of(result)
    match = ERROR_RE.match(text)
    assert match and match.group("code") in CODES, f"not a coded error: {text[:300]!r}"
    assert "unexpected internal error" not in text, text
    return match.group("code")


def check_request(request: dict[str, Any], args: dict[str, Any]) -> None:
    params = request["params"]
    assert set(params) == {"video_ids", "page_num", "page_size"}
    assert IDS_PARAM_RE.match(params["video_ids"]), params
    ids = params["video_ids"].split(",")
    assert len(set(ids)) == len(ids)
    given_text = json.dumps(args.get("video_ids"), ensure_ascii=False)
    assert all(vid in given_text for vid in ids), "every id sent was one the caller gave"
    assert params["page_size"] == "10"
    page = int(params["page_num"])
    assert 1 <= page <= 100_000
    start = args.get("page_num", 1)
    assert page >= (start if isinstance(start, int) and not isinstance(start, bool) else 1)


@given(args=plausible_args | st.tuples(wild_args, unknown_args).map(lambda pair: {**pair[1], **pair[0]}))
@example(args={"video_ids": ["႐༡"]})  # found by this test: \d accepted other scripts' digits as ids
@example(args={"video_ids": [DEMO_IDS[0]], "page_num": True, "max_credits": False, "refresh": 1})
@HYPOTHESIS
async def test_any_arguments_to_get_video_products_give_a_result_or_a_coded_error_and_only_valid_requests(
    session: tuple[Client, FakeUpstream], caplog: pytest.LogCaptureFixture, args: dict[str, Any]
):
    client, fake = session
    before = len(fake.requests)
    with caplog.at_level(logging.ERROR):
        result = await client.call_tool(TOOL, args)
    new_requests = fake.requests[before:]

    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], "no internal error was logged"
    caplog.clear()
    for request in new_requests:
        check_request(request, args)
    event(f"upstream requests: {min(len(new_requests), 2)}")
    if result.is_error:
        code = check_error(result)
        event(f"error {code}")
        if code == "invalid_input":
            assert new_requests == [], "an invalid argument never reaches the upstream"
        if code.startswith("confirmation_"):
            assert new_requests == [], "nothing is sent before the user's consent"
        return
    event("result")
    answer = parsed(result)
    given_text = json.dumps(args["video_ids"], ensure_ascii=False)
    assert all(v.video_id in given_text for v in answer.videos)
    assert answer.credits.spent == len(new_requests)
    assert all(ch == "\n" or ch.isprintable() for ch in text_of(result))


@given(args=unknown_args)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
async def test_get_credit_usage_takes_no_arguments_and_rejects_any_with_invalid_input(
    session: tuple[Client, FakeUpstream], args: dict[str, Any]
):
    client, fake = session
    result = await client.call_tool("get_credit_usage", args)

    if args:
        assert result.is_error
        assert check_error(result) == "invalid_input"
    else:
        assert not result.is_error
        CreditUsage.model_validate(result.structured_content)
    assert fake.requests == []


def _reference_clean(value: str) -> str:
    """clean_text's definition, spelled without its fast paths: escape sequences out whole, then every character of
    a control category (but the emoji joiner) out, whitespace runs as one space."""
    value = text_module._TERMINAL_SEQUENCE.sub("", value)
    kept = "".join(
        " " if ch in "\t\n\r" else ch
        for ch in value
        if ch in "\t\n\r" or unicodedata.category(ch) not in {"Cc", "Cf", "Cs", "Co", "Cn"} or ch == "\u200d"
    )
    return re.sub(r"\s+", " ", kept).strip()


@settings(max_examples=400, deadline=None)
@given(value=st.text(alphabet=st.characters(codec=None), max_size=60) | st.text(max_size=60))
@example(value="plain «text» \x1b[31mred\x1b[0m")
@example(value="emoji 👩\u200d💻 and \u202eoverride\u00a0nbsp\u3000ideographic")
@example(value="C1 \x9b31m and \x9d title \x07 bell")
def test_clean_text_fast_paths_agree_with_its_definition(value: str) -> None:
    assert text_module.clean_text(value, limit=10_000) == _reference_clean(value)
