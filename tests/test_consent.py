"""Consent before a large spend, through the SDK's `Client` on both protocol revisions.

2025-11-25 (`mode="legacy"`) asks with a mid-call `elicitation/create`; 2026-07-28 with the input-required
round trip. A client without an elicitation callback declares no elicitation and gets the fallback: a
`[confirmation_required]` answer with a single-use token. What was really sent is counted on the fake
upstream (`fake.requests`), and every ask records how many requests had been sent when it was asked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from fakes import FakeUpstreamServer, synthetic_dataset
from helpers import (
    TEST_API_KEY,
    THREE_ROWS,
    TOOL,
    TWELVE_ROWS,
    ZERO_VIEWS,
    Clock,
    assert_tool_error,
    make_settings,
    parsed,
    text_of,
)
from mcp import Client, StdioServerParameters
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, ElicitRequestParams, ElicitResult, InputRequiredResult
from test_http import connect as http_connect
from test_http import http_settings, serving
from test_team import ALICE, BOB, team_build

from keyapi_mcp.core.consent import CONSENT_TTL_SECONDS
from keyapi_mcp.server import build_server
from keyapi_mcp.state.redis_store import RedisStore
from keyapi_mcp.state.sqlite_store import SQLiteStore
from keyapi_mcp.surface.consent import COST_META_KEY
from keyapi_mcp.upstream.demo import FakeUpstream, mock_transport

pytestmark = pytest.mark.anyio

REVISIONS = ["legacy", "2026-07-28"]  # 2025-11-25 through the handshake, and the input-required revision
SIXTY = "7600000000000000000"  # 60 product rows: 7 pages (6 full, 1 empty)
THREE = "7600000000000001000"  # 3 rows: 1 page
MANY = "7600000000000002000"  # 300 rows: 31 pages


def dataset() -> dict[str, list[dict[str, Any]]]:
    data: dict[str, list[dict[str, Any]]] = {}
    for first, count in ((SIXTY, 60), (THREE, 3), (MANY, 300)):
        data |= synthetic_dataset(1, seed=count, min_products=count, max_products=count, first_id=int(first))
    return data


@dataclass
class Asker:
    """An elicitation callback answering `action`; records each question and the requests sent before it."""

    fake: FakeUpstream
    action: str = "accept"
    content: dict[str, Any] | None = field(default_factory=lambda: {"spend": True})
    asked: list[tuple[str, int]] = field(default_factory=list)

    async def __call__(self, context: Any, params: ElicitRequestParams) -> ElicitResult:
        self.asked.append((params.message, len(self.fake.requests)))
        return ElicitResult(action=self.action, content=self.content if self.action == "accept" else None)  # type: ignore[arg-type]


@dataclass
class Rig:
    fake: FakeUpstream
    clock: Clock
    store: Any


@asynccontextmanager
async def rig(tmp_path: Any, store: Any = None) -> AsyncIterator[Rig]:
    clock = Clock()
    own = store is None
    store = store if store is not None else SQLiteStore(tmp_path / "state.sqlite3", clock=clock)
    try:
        yield Rig(FakeUpstream(dataset(), api_key=TEST_API_KEY), clock, store)
    finally:
        if own:
            await store.close()


def server(r: Rig, **settings: Any) -> Any:
    values = {"confirm_above_credits": 5, "max_credits_with_consent": 25, **settings}
    return build_server(make_settings(**values), transport=mock_transport(r.fake), store=r.store, clock=r.clock)


def confirmation(result: CallToolResult, code: str = "confirmation_required") -> dict[str, Any]:
    assert_tool_error(result, code)
    assert result.structured_content is not None
    return result.structured_content["confirmation"]


def cost(result: CallToolResult) -> dict[str, Any]:
    assert result.meta is not None
    return result.meta[COST_META_KEY]


@pytest.mark.parametrize("mode", REVISIONS)
async def test_a_call_within_the_free_cap_is_not_asked_and_spends_as_before(tmp_path, mode):
    async with rig(tmp_path) as r:
        asker = Asker(r.fake)
        async with Client(server(r), mode=mode, elicitation_callback=asker) as client:
            result = await client.call_tool(TOOL, {"video_ids": [SIXTY]})
    answer = parsed(result)
    assert asker.asked == []
    assert answer.credits.spent == 5 == len(r.fake.requests)  # stopped at the per-call cap, as before
    assert not answer.complete and answer.next_page_num == 6
    assert cost(result)["spent"] == 5


@pytest.mark.parametrize("mode", REVISIONS)
async def test_an_accepted_quote_is_asked_once_before_any_request_and_then_spent(tmp_path, mode):
    async with rig(tmp_path) as r:
        asker = Asker(r.fake)
        async with Client(server(r), mode=mode, elicitation_callback=asker) as client:
            result = await client.call_tool(TOOL, {"video_ids": [SIXTY, THREE], "max_credits": 10})
    answer = parsed(result)
    (question, sent_before), *more = asker.asked
    assert more == [] and sent_before == 0
    assert "up to 10 KeyAPI credits" in question and "2 new videos" in question
    assert "100 credits left today" in question
    # One query for both ids: 63 rows, 7 pages, all within the consented 10.
    assert answer.complete and answer.credits.spent == 7 == len(r.fake.requests) == r.fake.charged
    assert cost(result) == {"spent": 7, "cached_videos": 0, "remaining_today": 93, "daily_limit": 100}


@pytest.mark.parametrize("mode", REVISIONS)
@pytest.mark.parametrize("action", ["decline", "cancel"])
async def test_a_declined_or_dismissed_quote_sends_nothing_and_says_so(tmp_path, mode, action):
    async with rig(tmp_path) as r:
        asker = Asker(r.fake, action=action)
        async with Client(server(r), mode=mode, elicitation_callback=asker) as client:
            result = await client.call_tool(TOOL, {"video_ids": [SIXTY], "max_credits": 10})
            usage = await client.call_tool("get_credit_usage", {})
    text = assert_tool_error(result, "declined")
    assert len(asker.asked) == 1
    assert r.fake.requests == [] and r.fake.charged == 0
    assert "nothing was requested or charged" in text
    assert cost(result)["spent"] == 0
    assert usage.structured_content is not None and usage.structured_content["spent_today"] == 0


@pytest.mark.parametrize("mode", REVISIONS)
async def test_an_accepted_form_that_unticks_spend_counts_as_declined(tmp_path, mode):
    async with rig(tmp_path) as r:
        asker = Asker(r.fake, content={"spend": False})
        async with Client(server(r), mode=mode, elicitation_callback=asker) as client:
            result = await client.call_tool(TOOL, {"video_ids": [SIXTY], "max_credits": 10})
    assert_tool_error(result, "declined")
    assert r.fake.requests == []


@pytest.mark.parametrize("mode", REVISIONS)
async def test_without_elicitation_a_token_confirms_the_exact_call_once(tmp_path, mode):
    args = {"video_ids": [SIXTY, THREE], "max_credits": 10}
    async with rig(tmp_path) as r, Client(server(r), mode=mode) as client:
        first = await client.call_tool(TOOL, args)
        quote = confirmation(first)
        assert r.fake.requests == []
        text = text_of(first)
        token = quote["token"]
        # The text names the exact call to repeat, token included, and the free alternative.
        assert f'"confirm": "{token}"' in text and '"max_credits": 10' in text and "max_credits=5" in text
        assert quote["credits_at_most"] == 10 and set(quote["new_ids"]) == {SIXTY, THREE}
        assert cost(first) == {"spent": 0, "cached_videos": 0, "remaining_today": 100, "daily_limit": 100}

        confirmed = parsed(await client.call_tool(TOOL, {**args, "confirm": token}))
        assert confirmed.complete and confirmed.credits.spent == 7 == len(r.fake.requests)

        # Honoured once: the same token again is refused (a fresh quote comes with the refusal).
        again = await client.call_tool(TOOL, {**args, "refresh": True, "confirm": token})
        refused = confirmation(again, "confirmation_invalid")
        assert "already used" in refused["refused"] and refused["token"] != token
    assert len(r.fake.requests) == 7


@pytest.mark.parametrize("mode", REVISIONS)
async def test_a_token_is_refused_for_other_ids_another_page_a_larger_spend_or_after_it_expired(tmp_path, mode):
    args = {"video_ids": [SIXTY], "max_credits": 10}
    async with rig(tmp_path) as r, Client(server(r), mode=mode) as client:

        async def token() -> str:
            return confirmation(await client.call_tool(TOOL, args))["token"]

        for changed, reason in (
            ({"video_ids": [SIXTY, THREE]}, "other video ids"),
            ({"page_num": 2}, "another page_num"),
            ({"max_credits": 11}, "allows up to 10 credits"),
        ):
            refused = confirmation(
                await client.call_tool(TOOL, {**args, **changed, "confirm": await token()}), "confirmation_invalid"
            )
            assert reason in refused["refused"]
        stale = await token()
        r.clock.now += CONSENT_TTL_SECONDS + 1
        refused = confirmation(await client.call_tool(TOOL, {**args, "confirm": stale}), "confirmation_invalid")
        assert "unknown or expired" in refused["refused"]
        forged = confirmation(await client.call_tool(TOOL, {**args, "confirm": "kc_forged"}), "confirmation_invalid")
        assert "unknown or expired" in forged["refused"]
    assert r.fake.requests == []


@pytest.mark.parametrize("mode", REVISIONS)
async def test_consent_raises_the_per_call_cap_only_up_to_the_ceiling_and_never_the_daily_limit(tmp_path, mode):
    async with rig(tmp_path) as r:
        asker = Asker(r.fake)
        async with Client(server(r, daily_credit_limit=100), mode=mode, elicitation_callback=asker) as client:
            big = parsed(await client.call_tool(TOOL, {"video_ids": [MANY], "max_credits": 1000}))
        assert "up to 25 KeyAPI credits" in asker.asked[0][0]
        assert big.credits.spent == 25 == len(r.fake.requests) and not big.complete

    async with rig(tmp_path / "daily") as r:
        asker = Asker(r.fake)
        async with Client(server(r, daily_credit_limit=8), mode=mode, elicitation_callback=asker) as client:
            capped = parsed(await client.call_tool(TOOL, {"video_ids": [MANY], "max_credits": 20}))
        assert "up to 8 KeyAPI credits" in asker.asked[0][0] and "8 credits left today" in asker.asked[0][0]
        assert capped.credits.spent == 8 == len(r.fake.requests)


@pytest.mark.parametrize("mode", REVISIONS)
async def test_consent_off_keeps_the_per_call_cap_and_never_asks(tmp_path, mode):
    async with rig(tmp_path) as r:
        asker = Asker(r.fake)
        async with Client(server(r, confirm_above_credits=0), mode=mode, elicitation_callback=asker) as client:
            result = parsed(await client.call_tool(TOOL, {"video_ids": [MANY], "max_credits": 20}))
    assert asker.asked == [] and result.credits.spent == 5 == len(r.fake.requests)


async def test_cached_ids_are_free_in_the_quote_and_a_fully_cached_call_is_never_asked(tmp_path):
    async with rig(tmp_path) as r:
        asker = Asker(r.fake)
        async with Client(server(r, confirm_above_credits=1), elicitation_callback=asker) as client:
            parsed(await client.call_tool(TOOL, {"video_ids": [THREE], "max_credits": 1}))
            assert len(r.fake.requests) == 1 and asker.asked == []
            parsed(await client.call_tool(TOOL, {"video_ids": [THREE, SIXTY], "max_credits": 10}))
            cached = parsed(await client.call_tool(TOOL, {"video_ids": [THREE, SIXTY]}))
    (question, _), *more = asker.asked
    assert more == [] and "1 new video (7600000000000000000)" in question and "1 cached video is free" in question
    assert cached.credits.spent == 0 and cached.credits.cached_videos == 2


async def test_a_token_issued_by_one_replica_is_honoured_once_by_another_on_the_same_redis(tmp_path, redis_url):
    args = {"video_ids": [SIXTY], "max_credits": 10}
    clock = Clock()
    a_store = RedisStore.from_url(redis_url, clock=clock)
    b_store = RedisStore.from_url(redis_url, clock=clock)
    fake = FakeUpstream(dataset(), api_key=TEST_API_KEY)
    try:
        a = Rig(fake, clock, a_store)
        b = Rig(fake, clock, b_store)
        async with Client(server(a)) as on_a, Client(server(b)) as on_b:
            token = confirmation(await on_a.call_tool(TOOL, args))["token"]
            served = parsed(await on_b.call_tool(TOOL, {**args, "confirm": token}))
            assert served.credits.spent == 7
            reused = confirmation(
                await on_a.call_tool(TOOL, {**args, "refresh": True, "confirm": token}), "confirmation_invalid"
            )
            assert "already used" in reused["refused"]
    finally:
        await a_store.close()
        await b_store.close()
    assert len(fake.requests) == 7


async def test_a_token_is_never_honoured_for_another_caller_and_stays_usable_by_its_own(tmp_path):
    # Over stateless HTTP no client here declares elicitation: both get the fallback.
    settings = http_settings(mcp_auth_token=None, confirm_above_credits=1)
    args = {"video_ids": [TWELVE_ROWS]}
    with serving(settings, **team_build()) as base:
        async with http_connect(base, ALICE) as alice, http_connect(base, BOB) as bob:
            token = confirmation(await alice.call_tool(TOOL, args))["token"]
            stolen = confirmation(await bob.call_tool(TOOL, {**args, "confirm": token}), "confirmation_invalid")
            assert "another caller" in stolen["refused"]
            served = parsed(await alice.call_tool(TOOL, {**args, "confirm": token}))
    assert served.complete and served.credits.spent == 2


async def test_with_a_shared_request_state_key_the_users_answer_can_come_back_to_another_replica(tmp_path):
    """2026-07-28: the question and the answer are two requests, which a load balancer may send to two replicas.

    The answer's round trip state is sealed with KEYAPI_MCP_REQUEST_STATE_KEY; a replica with another key cannot
    open it and refuses the round (a JSON-RPC error), spending nothing.
    """
    args = {"video_ids": [SIXTY], "max_credits": 10}
    key = "k" * 40
    clock = Clock()
    fake = FakeUpstream(dataset(), api_key=TEST_API_KEY)
    stores = [SQLiteStore(tmp_path / "state.sqlite3", clock=clock) for _ in range(3)]
    keys = [key, key, "o" * 40]
    servers = [server(Rig(fake, clock, s), mcp_request_state_key=k) for s, k in zip(stores, keys, strict=True)]
    asker = Asker(fake)
    try:
        async with (
            Client(servers[0], mode="2026-07-28", elicitation_callback=asker) as on_a,
            Client(servers[1], mode="2026-07-28", elicitation_callback=asker) as on_b,
            Client(servers[2], mode="2026-07-28", elicitation_callback=asker) as other,
        ):
            asked = await on_a.session.call_tool(TOOL, args, allow_input_required=True)
            assert isinstance(asked, InputRequiredResult) and fake.requests == []
            ((wire_key, question),) = asked.input_requests.items()
            assert "up to 10 KeyAPI credits" in question.params.message  # type: ignore[union-attr]
            answer = {wire_key: ElicitResult(action="accept", content={"spend": True})}

            with pytest.raises(MCPError, match="requestState"):  # another key: the state does not open
                await other.session.call_tool(
                    TOOL, args, input_responses=answer, request_state=asked.request_state, allow_input_required=True
                )
            assert fake.requests == []

            served = await on_b.session.call_tool(
                TOOL, args, input_responses=answer, request_state=asked.request_state, allow_input_required=True
            )
            assert not isinstance(served, InputRequiredResult)
            assert parsed(served).credits.spent == 7 == len(fake.requests)
    finally:
        for s in stores:
            await s.close()


def test_the_consent_settings_default_to_each_calls_cap_and_the_state_key_must_be_long(monkeypatch):
    from keyapi_mcp.config import ConfigError, load_settings

    settings = load_settings()
    assert (settings.confirm_above_credits, settings.max_credits_with_consent) == (None, 25)  # None: the call's cap
    monkeypatch.setenv("KEYAPI_CONFIRM_ABOVE_CREDITS", "0")
    assert load_settings().confirm_above_credits == 0  # never ask
    monkeypatch.setenv("KEYAPI_MCP_REQUEST_STATE_KEY", "too-short-to-seal")
    with pytest.raises(ConfigError, match="KEYAPI_MCP_REQUEST_STATE_KEY: must be at least 32 characters"):
        load_settings()
    monkeypatch.setenv("KEYAPI_MCP_REQUEST_STATE_KEY", "s" * 32)
    assert load_settings().secret_values()[-1] == "s" * 32  # redacted from logs like the other secrets


@pytest.mark.parametrize(("mode", "asked"), [("legacy", 0), ("2026-07-28", 1)])
async def test_over_stateless_http_2026_asks_in_the_result_and_2025_falls_back_to_a_token(mode, asked):
    # 2025-11-25 elicits with a server-to-client request, which stateless HTTP cannot carry: the token instead.
    settings = http_settings(mcp_auth_token=None, confirm_above_credits=1)
    questions: list[str] = []

    async def accept(context: Any, params: ElicitRequestParams) -> ElicitResult:
        questions.append(params.message)
        return ElicitResult(action="accept", content={"spend": True})

    with serving(settings) as base:
        async with http_connect(base, None, mode=mode, elicitation_callback=accept) as client:
            result = await client.call_tool(TOOL, {"video_ids": [TWELVE_ROWS]})
            usage = await client.call_tool("get_credit_usage", {})
    assert len(questions) == asked
    assert usage.structured_content is not None
    if asked:
        assert parsed(result).credits.spent == 2 == usage.structured_content["spent_today"]
    else:
        assert confirmation(result)["credits_at_most"] == 5
        assert usage.structured_content["spent_today"] == 0


@pytest.mark.parametrize("mode", REVISIONS)
@pytest.mark.parametrize("action", ["accept", "decline"])
async def test_the_installed_command_asks_over_stdio_before_it_spends(
    command: str, base_env: dict[str, str], fake_upstream: FakeUpstreamServer, tmp_path, mode, action
):
    env = {
        **base_env,
        "KEYAPI_API_KEY": TEST_API_KEY,
        "KEYAPI_BASE_URL": fake_upstream.url,
        "KEYAPI_MAX_RPS": "100",
        "KEYAPI_CONFIRM_ABOVE_CREDITS": "1",
    }
    fake = fake_upstream.fake
    asker = Asker(fake, action=action)
    params = StdioServerParameters(command=command, args=[], env=env, cwd=tmp_path)
    async with Client(params, mode=mode, elicitation_callback=asker, read_timeout_seconds=30.0) as client:
        result = await client.call_tool(TOOL, {"video_ids": [TWELVE_ROWS]})
    ((question, sent_before),) = asker.asked
    assert sent_before == 0 and "up to 5 KeyAPI credits" in question
    if action == "accept":
        assert parsed(result).credits.spent == 2 == fake.charged
    else:
        assert_tool_error(result, "declined")
        assert fake.requests == []


async def test_metrics_count_what_became_of_each_quote():
    from test_team import METRICS_TOKEN, scrape, value

    settings = http_settings(
        mcp_auth_token=None, confirm_above_credits=1, mcp_metrics=True, mcp_metrics_token=METRICS_TOKEN
    )
    answers = iter(["accept", "decline"])

    async def answer(context: Any, params: ElicitRequestParams) -> ElicitResult:
        action = next(answers)
        return ElicitResult(action=action, content={"spend": True} if action == "accept" else None)  # type: ignore[arg-type]

    with serving(settings) as base:
        async with http_connect(base, None, mode="2026-07-28", elicitation_callback=answer) as asking:
            parsed(await asking.call_tool(TOOL, {"video_ids": [TWELVE_ROWS]}))
            assert_tool_error(await asking.call_tool(TOOL, {"video_ids": [THREE_ROWS]}), "declined")
        async with http_connect(base, None, mode="2026-07-28") as plain:
            token = confirmation(await plain.call_tool(TOOL, {"video_ids": [ZERO_VIEWS]}))["token"]
            parsed(await plain.call_tool(TOOL, {"video_ids": [ZERO_VIEWS], "confirm": token}))
            again = {"video_ids": [ZERO_VIEWS], "refresh": True, "confirm": token}
            confirmation(await plain.call_tool(TOOL, again), "confirmation_invalid")
        samples = scrape(base)
    expected = {"accepted": 1, "declined": 1, "token_issued": 2, "token_used": 1, "token_refused": 1}
    assert {outcome: value(samples, "keyapi_consent_total", outcome=outcome) for outcome in expected} == expected


@pytest.mark.parametrize("mode", REVISIONS)
async def test_unset_the_threshold_follows_the_cap_sized_from_the_ids_and_asks_only_beyond_it(tmp_path, mode):
    many = [str(7_650_000_000_000_000_000 + i) for i in range(20)]  # 20 ids: a sized cap of 1 + 6 = 7 credits
    async with rig(tmp_path) as r:
        asker = Asker(r.fake)
        settings = make_settings(max_credits_with_consent=25)  # KEYAPI_MAX_CREDITS_PER_CALL and the threshold unset
        built = build_server(settings, transport=mock_transport(r.fake), store=r.store, clock=r.clock)
        async with Client(built, mode=mode, elicitation_callback=asker) as client:
            within = parsed(await client.call_tool(TOOL, {"video_ids": many}))
            assert asker.asked == [] and within.credits.spent == 1  # no products: one short page
            more = [str(7_660_000_000_000_000_000 + i) for i in range(20)]
            parsed(await client.call_tool(TOOL, {"video_ids": more, "max_credits": 8}))
    ((question, sent_before),) = asker.asked
    assert "up to 8 KeyAPI credits" in question and sent_before == 1


GROUPS = [{"name": "creator A", "video_ids": [SIXTY]}, {"name": "creator B", "video_ids": [THREE]}]


@pytest.mark.parametrize("mode", REVISIONS)
async def test_compare_video_groups_asks_for_its_unions_quote_before_it_spends(tmp_path, mode):
    async with rig(tmp_path) as r:
        asker = Asker(r.fake)
        async with Client(server(r), mode=mode, elicitation_callback=asker) as client:
            within = await client.call_tool("compare_video_groups", {"groups": GROUPS})
            assert asker.asked == [] and len(r.fake.requests) == 5  # the default cap, not the consent ceiling
            assert cost(within)["spent"] == 5
            result = await client.call_tool("compare_video_groups", {"groups": GROUPS, "max_credits": 10})
    (question, sent_before), *more = asker.asked
    assert more == [] and sent_before == 5
    assert "up to 10 KeyAPI credits" in question
    assert result.is_error is not True and "PARTIAL" not in text_of(result)
    assert cost(result)["spent"] == len(r.fake.requests) - 5


@pytest.mark.parametrize("mode", REVISIONS)
async def test_compare_video_groups_without_elicitation_names_its_own_call_with_the_token(tmp_path, mode):
    args = {"groups": GROUPS, "max_credits": 10}
    async with rig(tmp_path) as r, Client(server(r), mode=mode) as client:
        first = await client.call_tool("compare_video_groups", args)
        token = confirmation(first)["token"]
        assert r.fake.requests == [] and "compare_video_groups {" in text_of(first)
        confirmed = await client.call_tool("compare_video_groups", {**args, "confirm": token})
        assert confirmed.is_error is not True and cost(confirmed)["spent"] == 7 == len(r.fake.requests)
        again = await client.call_tool("compare_video_groups", {**args, "refresh": True, "confirm": token})
        confirmation(again, "confirmation_invalid")
    assert len(r.fake.requests) == 7
