"""Free reads (resources, resource links) and guided prompts with completion, as an MCP client sees them."""

from __future__ import annotations

import json

import pytest
from fakes import FakeUpstreamServer
from helpers import NO_PRODUCTS, THREE_ROWS, TOOL, TWELVE_ROWS, connect, links_of, make_settings, parsed, text_of
from mcp.shared.exceptions import MCPError
from mcp_types import PromptReference, ResourceTemplateReference

from keyapi_mcp.presentation.models import CreditUsage, VideoOut
from keyapi_mcp.upstream.demo import DOCUMENTED_VIDEO_ID, FakeUpstream, demo_dataset

pytestmark = pytest.mark.anyio

INVALID_PARAMS = -32602
DEMO = list(demo_dataset())


async def test_the_server_lists_the_usage_resource_the_video_template_and_three_prompts():
    async with connect(make_settings()) as client:
        capabilities = client.server_capabilities
        instructions = client.instructions or ""
        resources = (await client.list_resources()).resources
        templates = (await client.list_resource_templates()).resource_templates
        prompts = {p.name: p for p in (await client.list_prompts()).prompts}
    assert capabilities.resources is not None and capabilities.prompts is not None
    assert capabilities.completions is not None
    assert [(str(r.uri), r.mime_type) for r in resources] == [
        ("ui://keyapi/products", "text/html;profile=mcp-app"),  # the MCP Apps view (tests/test_app.py)
        ("keyapi://usage", "application/json"),
    ]
    assert [(t.uri_template, t.mime_type) for t in templates] == [("keyapi://videos/{video_id}", "application/json")]
    assert all(r.description and r.name for r in [*resources, *templates])
    assert {name: [(a.name, a.required) for a in p.arguments or []] for name, p in prompts.items()} == {
        "analyze_video_commerce": [("video_ids", True)],
        "compare_videos": [("video_ids_a", True), ("video_ids_b", True)],
        "top_products": [("video_ids", True), ("n", False)],
    }
    assert all(p.description and p.title for p in prompts.values())
    # The instructions point the model at all of it.
    for name in ("group_by", "keyapi://usage", "keyapi://videos/{video_id}", *prompts):
        assert name in instructions


async def test_the_usage_resource_is_the_usage_tools_structured_result(fake_upstream: FakeUpstreamServer):
    async with connect(make_settings(fake_upstream.url)) as client:
        await client.call_tool(TOOL, {"video_ids": [THREE_ROWS]})
        tool = await client.call_tool("get_credit_usage", {})
        read = await client.read_resource("keyapi://usage")
    (content,) = read.contents
    assert content.mime_type == "application/json"
    assert json.loads(content.text) == tool.structured_content  # type: ignore[union-attr]
    assert CreditUsage.model_validate_json(content.text).spent_today == 1  # type: ignore[union-attr]


async def test_a_fetched_video_is_named_and_re_read_for_free_without_any_upstream_request(
    fake_upstream: FakeUpstreamServer,
):
    async with connect(make_settings(fake_upstream.url)) as client:
        answer = await client.call_tool(
            TOOL, {"video_ids": [DOCUMENTED_VIDEO_ID, TWELVE_ROWS, NO_PRODUCTS], "response_format": "detailed"}
        )
        requests = len(fake_upstream.fake.requests)
        reads = {uri: await client.read_resource(uri) for uri in parsed(answer).resources}
        usage = await client.call_tool("get_credit_usage", {})
    assert len(fake_upstream.fake.requests) == requests  # reading never calls upstream
    assert usage.structured_content["spent_today"] == parsed(answer).credits.spent  # type: ignore[index]
    result = parsed(answer)
    # One URI per video returned (not for the id without products), in the answer's order; by default in the
    # structured result and one line of the text, with the text the only content item (docs/clients.md).
    assert result.resources == [f"keyapi://videos/{v.video_id}" for v in result.videos]
    assert links_of(answer) == [] and len(answer.content) == 1
    assert "re-read free while cached: keyapi://videos/{video_id} for each video above" in text_of(answer)
    for video in result.videos:
        read = reads[f"keyapi://videos/{video.video_id}"]
        cached = VideoOut.model_validate_json(read.contents[0].text)  # type: ignore[union-attr]
        assert cached.source == "cache"
        # gmv_share_pct is the video's share of one answer's GMV: a re-read of the video alone has none;
        # age_seconds is how old the data was when each was answered
        skip = {"source", "gmv_share_pct", "age_seconds"}
        assert cached.model_dump(exclude=skip) == video.model_dump(exclude=skip)
        assert cached.gmv_share_pct is None
        assert cached.age_seconds is not None and cached.age_seconds >= 0


async def test_reading_a_video_that_is_not_cached_is_a_not_found_error_and_spends_nothing(
    fake_upstream: FakeUpstreamServer,
):
    async with connect(make_settings(fake_upstream.url)) as client:
        with pytest.raises(MCPError) as not_cached:
            await client.read_resource(f"keyapi://videos/{THREE_ROWS}")
        with pytest.raises(MCPError) as not_an_id:
            await client.read_resource("keyapi://videos/abc")
        with pytest.raises(MCPError) as unknown:
            await client.read_resource("keyapi://nothing-here")
        usage = await client.call_tool("get_credit_usage", {})
    assert fake_upstream.fake.requests == []
    assert usage.structured_content["spent_today"] == 0  # type: ignore[index]
    for error in (not_cached, not_an_id, unknown):
        assert error.value.error.code == INVALID_PARAMS  # SEP-2164: resource not found is -32602
    message = not_cached.value.error.message
    assert message.startswith("[not_cached] ")
    assert f'get_video_products(video_ids=["{THREE_ROWS}"])' in message
    assert not_an_id.value.error.message.startswith("[invalid_input] ")


async def test_with_resource_links_on_each_named_video_is_also_a_resource_link(fake_upstream: FakeUpstreamServer):
    async with connect(make_settings(fake_upstream.url, resource_links=True)) as client:
        answer = await client.call_tool(TOOL, {"video_ids": [DOCUMENTED_VIDEO_ID, TWELVE_ROWS, NO_PRODUCTS]})
    assert links_of(answer) == parsed(answer).resources and len(parsed(answer).resources) == 2
    assert all(block.mime_type == "application/json" for block in answer.content[1:])  # type: ignore[union-attr]
    assert answer.content[0].type == "text"  # the whole answer stays first, for clients that keep only it


async def test_with_the_cache_off_answers_carry_no_links_and_reads_say_why(fake_upstream: FakeUpstreamServer):
    async with connect(make_settings(fake_upstream.url, cache_ttl_seconds=0, resource_links=True)) as client:
        answer = await client.call_tool(TOOL, {"video_ids": [THREE_ROWS]})
        with pytest.raises(MCPError) as error:
            await client.read_resource(f"keyapi://videos/{THREE_ROWS}")
    assert parsed(answer).videos and links_of(answer) == [] and parsed(answer).resources == []
    assert "re-read free" not in text_of(answer)
    assert "KEYAPI_CACHE_TTL_SECONDS=0" in error.value.error.message


async def test_an_incomplete_answer_names_only_its_complete_videos(fake_upstream: FakeUpstreamServer):
    async with connect(make_settings(fake_upstream.url, max_credits_per_call=1, resource_links=True)) as client:
        answer = await client.call_tool(TOOL, {"video_ids": [TWELVE_ROWS]})
    result = parsed(answer)
    assert not result.complete and result.pending_ids == [TWELVE_ROWS]
    assert links_of(answer) == [] and result.resources == []
    assert "INCOMPLETE" in text_of(answer)


async def test_each_prompt_names_the_batched_calls_and_the_budget_check():
    ids = f"{DOCUMENTED_VIDEO_ID}, https://www.tiktok.com/@a/video/{THREE_ROWS} {THREE_ROWS}"
    async with connect(make_settings()) as client:
        analyze = await client.get_prompt("analyze_video_commerce", {"video_ids": ids})
        compare = await client.get_prompt("compare_videos", {"video_ids_a": ids, "video_ids_b": TWELVE_ROWS})
        top = await client.get_prompt("top_products", {"video_ids": ids, "n": "3"})
        top_default = await client.get_prompt("top_products", {"video_ids": THREE_ROWS})
    texts = {}
    for name, prompt in (("analyze", analyze), ("compare", compare), ("top", top), ("default", top_default)):
        (message,) = prompt.messages
        assert message.role == "user"
        texts[name] = message.content.text  # type: ignore[union-attr]
        assert "get_credit_usage" in texts[name]
        assert len(texts[name]) < 900  # short
    both = f'["{DOCUMENTED_VIDEO_ID}", "{THREE_ROWS}"]'  # normalised: the URL and the duplicate fold into one id
    assert f"get_video_products once with all of them: video_ids={both}" in texts["analyze"]
    groups = f'[{{"name": "A", "video_ids": {both}}}, {{"name": "B", "video_ids": ["{TWELVE_ROWS}"]}}]'
    assert f"compare_video_groups(groups={groups}) once" in texts["compare"]  # one call: the union, fetched once
    assert 'sort_by="gmv_per_1k_views"' in texts["analyze"]
    assert f'get_video_products(video_ids={both}, group_by="product", top=3)' in texts["top"]
    assert "top=10" in texts["default"]


@pytest.mark.parametrize(
    ("name", "arguments"),
    [
        ("analyze_video_commerce", {"video_ids": "not-a-video"}),
        ("top_products", {"video_ids": THREE_ROWS, "n": "0"}),
        ("top_products", {"video_ids": THREE_ROWS, "n": "many"}),
        ("compare_videos", {"video_ids_a": THREE_ROWS}),
    ],
)
async def test_a_prompt_with_invalid_arguments_is_refused(name: str, arguments: dict[str, str]):
    async with connect(make_settings()) as client:
        with pytest.raises(MCPError):
            await client.get_prompt(name, arguments)


async def test_video_id_arguments_complete_from_the_cache_only(fake_upstream: FakeUpstreamServer):
    async with connect(make_settings(fake_upstream.url)) as client:
        before = await client.complete(PromptReference(name="top_products"), {"name": "video_ids", "value": ""})
        await client.call_tool(TOOL, {"video_ids": [DOCUMENTED_VIDEO_ID, THREE_ROWS, TWELVE_ROWS]})
        requests = len(fake_upstream.fake.requests)
        first = await client.complete(PromptReference(name="top_products"), {"name": "video_ids", "value": "9"})
        second = await client.complete(
            PromptReference(name="compare_videos"), {"name": "video_ids_b", "value": f"{THREE_ROWS},9"}
        )
        template = await client.complete(
            ResourceTemplateReference(uri="keyapi://videos/{video_id}"), {"name": "video_id", "value": "75"}
        )
        other = await client.complete(PromptReference(name="top_products"), {"name": "n", "value": "1"})
    assert len(fake_upstream.fake.requests) == requests  # completion reads the cache only
    assert before.completion.values == []
    assert sorted(first.completion.values) == [THREE_ROWS, TWELVE_ROWS]
    assert first.completion.total == 2 and first.completion.has_more is False
    assert second.completion.values == [f"{THREE_ROWS},{TWELVE_ROWS}"]  # what is typed already is not offered
    assert template.completion.values == [DOCUMENTED_VIDEO_ID]
    assert other.completion.values == []


async def test_the_demo_flow_a_prompt_exact_totals_and_a_free_re_read():
    """As a new user would try it: the prompt, then the call it names, then a cached video read for free."""
    async with connect(make_settings(), demo=True) as client:
        prompt = await client.get_prompt("top_products", {"video_ids": ",".join(DEMO), "n": "5"})
        assert 'group_by="product", top=5' in prompt.messages[0].content.text  # type: ignore[union-attr]
        answer = await client.call_tool(TOOL, {"video_ids": DEMO, "group_by": "product", "top": 5})
        spent = parsed(answer).credits.spent_today
        read = await client.read_resource(parsed(answer).resources[0])
        usage = await client.read_resource("keyapi://usage")
    assert spent > 0
    assert json.loads(usage.contents[0].text)["spent_today"] == spent  # type: ignore[union-attr]
    assert json.loads(read.contents[0].text)["video_id"] == parsed(answer).videos[0].video_id  # type: ignore[union-attr]
    assert "DEMO DATA" in text_of(answer)


def test_fake_upstream_fixture_data_is_the_demo_data_set():
    # The tests above name demo ids; they must be what the fixture serves.
    assert set(FakeUpstream(demo_dataset()).data) == set(DEMO)
