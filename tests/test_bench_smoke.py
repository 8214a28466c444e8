"""Smoke test of the benchmark (`python -m bench`): its token and credit checks hold. Timings are not tested."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import credits, report, tokens
from bench.common import dataset, fake_upstream
from bench.stdio import keyapi_params, minimal_params
from bench.wire import WireClient


@pytest.mark.anyio
async def test_concise_text_is_a_small_share_of_raw_json_and_keeps_every_fact() -> None:
    result = await tokens.run(n_videos=12, seed=3)

    assert result["facts_expected"] == result["rows"] > 0
    assert result["bars"] == {
        "concise ≤ 6% of raw JSON": True,
        "concise ≤ 1.5× CSV floor": True,
        "every video_id, product_id, units, GMV present": True,
    }
    assert result["tokens"]["naive_wrapper"] >= result["tokens"]["raw_upstream_json"] * 0.99
    assert "| bar |" in report.table({"tokens": result})


@pytest.mark.anyio
async def test_scripted_session_charges_exactly_the_minimum_and_the_naive_wrapper_more() -> None:
    result = await credits.run()

    assert result["calls"] == len(credits.SESSION) >= 15
    assert [row["keyapi"] for row in result["per_call"]] == [row["minimum"] for row in result["per_call"]]
    assert all(result["bars"].values())
    assert result["credits"]["naive"] > result["credits"]["keyapi"] > 0


def test_fact_check_notices_a_product_line_missing_from_the_text() -> None:
    data = dataset(3, seed=3)
    rows = [row for vid in data for row in data[vid]]
    lines = [f"{vid} | 1k | 1.0 | 0 | 0" for vid in data]
    text_lines: list[str] = []
    for vid, head in zip(data, lines, strict=True):
        text_lines.append(head)
        text_lines += [
            f"- {r['product_id']} | {r['total_video_sale_cnt']} | {r['total_video_sale_gmv_amt']} | 0"
            for r in data[vid]
        ]
    complete = "\n".join(text_lines)
    dropped = "\n".join(line for line in text_lines if rows[0]["product_id"] not in line)

    assert tokens.facts_in_text(complete) == tokens.facts_of_rows(rows)
    assert tokens.facts_in_text(dropped) != tokens.facts_of_rows(rows)


def test_minimum_credits_are_free_for_known_ids_and_pages_of_ten_for_new_ones() -> None:
    data = {"1": [{}] * 10, "2": [{}] * 3, "3": []}

    assert credits.minimum_credits(data, [["1"], ["1"], ["2", "1"], ["3"], ["3", "2"]]) == [2, 0, 1, 1, 0]


def test_token_counter_is_deterministic_and_grows_with_the_text(monkeypatch: pytest.MonkeyPatch) -> None:
    # The local BPE is used even when an API key is around: the bench never calls the network.
    monkeypatch.setenv("ANTHROPIC_API_KEY", "not-a-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9")
    text = "7521783049722285367 | 33.6M | 2.9 | 4479 | 133621.6 🥹"

    assert tokens.count_tokens(text) == tokens.count_tokens(text) > 0
    assert tokens.count_tokens(text * 3) > tokens.count_tokens(text)


@pytest.mark.anyio
async def test_the_wire_client_gets_real_answers_from_keyapi_mcp_and_the_minimal_server(tmp_path: Path) -> None:
    data = dataset(4, seed=2)
    vid = next(v for v, rows in data.items() if rows)
    with fake_upstream(data) as upstream:
        async with WireClient.spawn(keyapi_params(upstream.url, tmp_path)) as wire:
            first = await wire.call_tool("get_video_products", {"video_ids": [vid]})
            again = await wire.call_tool("get_video_products", {"video_ids": [vid]})
            with pytest.raises(RuntimeError, match=r"\[invalid_input\]"):
                await wire.call_tool("get_video_products", {"video_ids": ["abc"]})
        async with WireClient.spawn(minimal_params(tmp_path)) as minimal:
            echoed = await minimal.call_tool("echo", {"text": "hi"})
    assert first["structuredContent"]["videos"][0]["video_id"] == vid
    assert first["structuredContent"]["videos"][0]["source"] == "upstream"
    assert again["structuredContent"]["videos"][0]["source"] == "cache"  # the cached column is really cached
    assert [c["text"] for c in echoed["content"]] == ["hi"]
