"""A server shared by a team over HTTP: who the caller is, per-user budgets, and `/metrics`.

Callers get distinct identities from `TokenMapVerifier` (a `TokenVerifier`, the SDK's protocol) given to
`build_server`; the SDK's bearer middleware verifies each request and `keyapi_mcp.caller` reads the result.
Servers run in a thread on 127.0.0.1 (`serving` from tests/test_http.py), in demo mode: the bundled
sample data, an in-memory ledger.
"""

from __future__ import annotations

from typing import Any

import helpers
import httpx
import pytest
from fakes import TokenMapVerifier
from helpers import TEST_AUTH_TOKEN, THREE_ROWS, TOOL, TWELVE_ROWS, ZERO_VIEWS, assert_tool_error, parsed
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from prometheus_client.parser import text_string_to_metric_families
from test_http import connect, http_settings, serving

from keyapi_mcp.config import load_settings
from keyapi_mcp.core.domain import LOCAL_CALLER
from keyapi_mcp.errors import ConfigError, HttpConfigError
from keyapi_mcp.server import build_server
from keyapi_mcp.surface.caller import STATIC_CALLER, caller_of
from keyapi_mcp.transport.http import build_http_app
from keyapi_mcp.transport.oauth import KeyAPITokenVerifier
from keyapi_mcp.upstream.demo import DOCUMENTED_VIDEO_ID

ALICE = "alice_token_0123456789abcdef"
BOB = "bob_token_0123456789abcdef01"
METRICS_TOKEN = "metrics_token_0123456789abcd"
# Never contacted: the SDK needs an issuer to build its auth settings; these tokens are checked locally.
ISSUER = "http://127.0.0.1:9/issuer"


def team_build(**overrides: Any) -> dict[str, Any]:
    return {
        "token_verifier": TokenMapVerifier({ALICE: "alice", BOB: "bob"}),
        "auth": AuthSettings(issuer_url=ISSUER, resource_server_url=None),  # type: ignore[arg-type]
        **overrides,
    }


def test_the_caller_is_the_tokens_user_else_its_client_else_static_or_local():
    token = AccessToken(token="t", client_id="ci-app", scopes=[], subject="user-42")
    assert caller_of(token) == "user-42"
    assert caller_of(token.model_copy(update={"subject": None})) == "ci-app"
    assert caller_of(None, static=True) == STATIC_CALLER
    assert caller_of(None) == LOCAL_CALLER


# Identities that earlier versions merged (trimmed, control characters replaced, cut at 200 characters) or
# that are spelled like a built-in caller.
LOOKALIKES = [" alice ", "alice", "a\nb", "a?b", "x" * 200 + "1", "x" * 200 + "2", "static", "local", ""]


@pytest.mark.anyio
async def test_distinct_identities_get_distinct_bounded_keys_and_plain_ones_keep_their_name():
    # As keyapi_mcp.auth makes them: a verified JWT carries its issuer; the static token is the built-in caller.
    token = AccessToken(token="t", client_id="ci-app", scopes=[], claims={"iss": ISSUER})
    static = KeyAPITokenVerifier(static_token=TEST_AUTH_TOKEN, jwt_verifier=None, resource_url=None, static_scopes=[])
    assert caller_of(await static.verify_token(TEST_AUTH_TOKEN)) == STATIC_CALLER
    keys = [caller_of(token.model_copy(update={"subject": who, "client_id": who})) for who in LOOKALIKES]
    assert len(set(keys)) == len(LOOKALIKES)
    assert STATIC_CALLER not in keys and LOCAL_CALLER not in keys
    assert keys[1] == "alice" and keys[3] == "a?b"  # plain identities read as before (existing ledgers)
    assert all(len(key) <= 200 and key.isprintable() for key in keys)
    assert keys[0].startswith("~") and "alice" in keys[0]  # a digested identity still shows who it is
    # A long identity is never cut into another one's key, however they begin.
    long_key = caller_of(token.model_copy(update={"subject": "y" * 5000}))
    assert long_key != caller_of(token.model_copy(update={"subject": "y" * 4999})) and len(long_key) < 100


@pytest.mark.anyio
async def test_callers_that_earlier_versions_merged_each_spend_from_their_own_limit_over_http():
    tokens = {f"token-{i:02d}-0123456789abcdef": who for i, who in enumerate(LOOKALIKES) if who}
    settings = http_settings(
        mcp_auth_token=None, user_daily_credit_limit=1, daily_credit_limit=100, cache_ttl_seconds=0
    )
    build = {**team_build(), "token_verifier": TokenMapVerifier(tokens)}
    usages = []
    with serving(settings, **build) as base:
        for token in tokens:
            async with connect(base, token) as client:
                # With the cache off every call costs a credit: a merged caller would be refused here.
                paid = parsed(await client.call_tool(TOOL, {"video_ids": [THREE_ROWS]}))
                assert paid.credits.spent == 1
                usages.append((await client.call_tool("get_credit_usage", {})).structured_content)
    assert all(u is not None and u["you"]["spent_today"] == 1 and len(u["recent"]) == 1 for u in usages)
    names = [u["you"]["caller"] for u in usages if u is not None]
    assert len(set(names)) == len(tokens) and not set(names) & {STATIC_CALLER, LOCAL_CALLER}
    assert usages[-1] is not None and usages[-1]["spent_today"] == len(tokens)  # the team's figure counts all


@pytest.mark.anyio
async def test_token_map_verifier_accepts_only_its_tokens():
    verifier = TokenMapVerifier({ALICE: "alice"}, scopes=("keyapi:read",))
    token = await verifier.verify_token(ALICE)
    assert token is not None and token.client_id == "alice" and token.scopes == ["keyapi:read"]
    assert await verifier.verify_token(BOB) is None
    assert await verifier.verify_token("") is None


@pytest.mark.anyio
async def test_each_http_caller_spends_from_its_own_daily_limit_and_sees_only_its_own_usage():
    settings = http_settings(mcp_auth_token=None, user_daily_credit_limit=1, daily_credit_limit=10)
    with serving(settings, **team_build()) as base:
        async with connect(base, ALICE) as alice, connect(base, BOB) as bob:
            first = parsed(await alice.call_tool(TOOL, {"video_ids": [THREE_ROWS]}))
            assert first.credits.spent == 1
            refused = await alice.call_tool(TOOL, {"video_ids": [ZERO_VIEWS]})
            text = assert_tool_error(refused, "budget_exceeded")
            assert "per-user daily credit limit" in text and "KEYAPI_USER_DAILY_CREDIT_LIMIT" in text
            # The cache is shared: a video alice paid for is free for bob, and does not touch his limit.
            shared = parsed(await bob.call_tool(TOOL, {"video_ids": [THREE_ROWS]}))
            assert shared.credits.spent == 0
            assert parsed(await bob.call_tool(TOOL, {"video_ids": [ZERO_VIEWS]})).credits.spent == 1

            alice_usage = (await alice.call_tool("get_credit_usage", {})).structured_content
            bob_usage = (await bob.call_tool("get_credit_usage", {})).structured_content
    assert alice_usage is not None and bob_usage is not None
    assert alice_usage["spent_today"] == bob_usage["spent_today"] == 2  # the team's figures
    assert alice_usage["you"] == {
        "caller": "alice",
        "spent_today": 1,
        "daily_limit": 1,
        "remaining_today": 0,
        "uncertain_today": 0,
    }
    assert bob_usage["you"]["caller"] == "bob" and bob_usage["you"]["spent_today"] == 1
    assert len(alice_usage["recent"]) == len(bob_usage["recent"]) == 1  # never the other user's requests


def test_an_unknown_token_is_refused_by_the_sdks_bearer_check():
    with serving(http_settings(mcp_auth_token=None), **team_build()) as base:
        response = httpx.post(f"{base}/mcp", headers={"authorization": "Bearer nope"}, json={})
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.anyio
async def test_the_static_token_is_one_caller_named_static():
    with serving(http_settings(user_daily_credit_limit=5)) as base:
        async with connect(base, TEST_AUTH_TOKEN) as client:
            await client.call_tool(TOOL, {"video_ids": [THREE_ROWS]})
            usage = (await client.call_tool("get_credit_usage", {})).structured_content
    assert usage is not None
    assert usage["you"]["caller"] == STATIC_CALLER and usage["you"]["spent_today"] == 1


# ---------------------------------------------------------------------------------------------
# Metrics


def scrape(base: str, token: str = METRICS_TOKEN) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(f"{base}/metrics", headers={"authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.mark.anyio
async def test_metrics_count_operations_credits_cache_upstream_requests_and_refusals():
    settings = http_settings(mcp_metrics=True, mcp_metrics_token=METRICS_TOKEN)
    with serving(settings) as base:
        before = scrape(base)
        assert value(before, "keyapi_credits_charged_total", outcome="yes") == 0
        assert value(before, "keyapi_budget_refusals_total", limit="user") == 0  # every series exists at 0
        async with connect(base) as client:
            ids = [DOCUMENTED_VIDEO_ID, THREE_ROWS, TWELVE_ROWS]
            paid = parsed(await client.call_tool(TOOL, {"video_ids": ids}))
            again = parsed(await client.call_tool(TOOL, {"video_ids": ids}))
            refused = await client.call_tool(TOOL, {"video_ids": [ZERO_VIEWS], "max_credits": 0})
            assert_tool_error(refused, "budget_exceeded")
            await client.list_tools()
        after = scrape(base)

    assert paid.credits.spent >= 2 and again.credits.spent == 0
    assert value(after, "keyapi_credits_charged_total", outcome="yes") == paid.credits.spent
    assert value(after, "keyapi_credits_charged_total", outcome="uncertain") == 0
    assert value(after, "keyapi_cache_videos_total", result="miss") == len(ids)
    assert value(after, "keyapi_cache_videos_total", result="hit") == len(ids)
    assert value(after, "keyapi_upstream_request_duration_seconds_count") == paid.credits.spent
    assert value(after, "keyapi_budget_refusals_total", limit="per_call") == 1
    assert value(after, "keyapi_budget_refusals_total", limit="daily") == 0
    ok = {"mcp_method_name": "tools/call", "gen_ai_tool_name": "get_video_products", "error_type": ""}
    assert value(after, "mcp_server_operation_duration_seconds_count", **ok) == 2
    assert value(after, "mcp_server_operation_duration_seconds_count", **{**ok, "error_type": "tool_error"}) == 1
    listed = {"mcp_method_name": "tools/list", "gen_ai_tool_name": "", "error_type": ""}
    assert value(after, "mcp_server_operation_duration_seconds_count", **listed) >= 1
    assert not any("alice" in str(key) or "static" in str(key) for key in after)  # no per-user labels


def test_metrics_need_the_metrics_token_or_the_static_token():
    settings = http_settings(mcp_metrics=True, mcp_metrics_token=METRICS_TOKEN)
    with serving(settings) as base:
        assert httpx.get(f"{base}/metrics").status_code == 401
        wrong = httpx.get(f"{base}/metrics", headers={"authorization": "Bearer wrong-token-0123456789"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"].startswith("Bearer")
        assert METRICS_TOKEN not in wrong.text
        assert scrape(base, TEST_AUTH_TOKEN)  # the static token reads them too
        # The metrics token opens /metrics only, never /mcp.
        assert httpx.post(f"{base}/mcp", headers={"authorization": f"Bearer {METRICS_TOKEN}"}).status_code == 401


def test_metrics_without_any_token_refuse_to_start_and_are_off_by_default():
    settings = http_settings(mcp_auth_token=None, mcp_metrics=True)
    with pytest.raises(HttpConfigError, match="KEYAPI_MCP_METRICS_TOKEN"):
        build_http_app(build_server(settings, demo=True), settings)
    plain = http_settings()
    with serving(plain) as base:
        assert httpx.get(f"{base}/metrics", headers={"authorization": f"Bearer {TEST_AUTH_TOKEN}"}).status_code == 404


@pytest.mark.anyio
async def test_the_lists_carry_cache_hints_a_client_may_share_for_five_minutes():
    async with helpers.connect(helpers.make_settings(), demo=True) as client:
        listed = [await client.list_tools(), await client.list_prompts(), await client.list_resources()]
    for result in listed:
        assert (result.ttl_ms, result.cache_scope) == (300_000, "public")


def test_metrics_without_prometheus_client_name_the_extra_to_install(monkeypatch: pytest.MonkeyPatch):
    import importlib.util

    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return None if name == "prometheus_client" else real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ConfigError, match=r"KEYAPI_MCP_METRICS: .*pip install 'keyapi-mcp\[metrics\]'"):
        load_settings(mcp_metrics=True)
    assert not load_settings().mcp_metrics  # off by default, and then never imported
