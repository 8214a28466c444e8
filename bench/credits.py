"""Credit efficiency over a scripted session of 15 calls, as a model asks follow-up questions.

The session has repeats, subsets, reorderings, overlaps, a single video with exactly 10 products (its
second page is empty), and multi-page batches. Per call, the minimum any client could pay is 0 if every
id is already known, else floor(new rows / 10) + 1 (the new ids' rows in pages of 10, the last page
short). Credits are counted by the fake upstream itself (`FakeUpstream.charged`), not by the servers.

The naive wrapper has no cache; the model pages it until a short page, as a real model would.
"""

from __future__ import annotations

import json
from typing import Any

from mcp import Client

from bench.common import BENCH_API_KEY, Dataset, dataset, fake_upstream, pages_for
from bench.inproc import keyapi_server
from bench.naive_server import build_naive_server
from bench.tokens import count_tokens, naive_pages

SEED = 7
N_VIDEOS = 40

# (what the call is, indexes into the data set's videos)
SESSION: list[tuple[str, list[int]]] = [
    ("first look: 5 new videos", [0, 1, 2, 3, 4]),
    ("exact repeat", [0, 1, 2, 3, 4]),
    ("subset", [1, 3]),
    ("reordering", [4, 2, 0]),
    ("overlap: 2 known + 4 new", [3, 4, 5, 6, 7, 8]),
    ("one new video with exactly 10 products", [11]),
    ("multi-page batch of 10 (1 known)", list(range(9, 19))),
    ("subset of that batch, reordered", [18, 12, 9]),
    ("1 known + 3 new", [0, 19, 20, 21]),
    ("multi-page batch of 10 new", list(range(22, 32))),
    ("everything so far (all known)", list(range(32))),
    ("overlap at the tail", list(range(30, 36))),
    ("one new video", [36]),
    ("mixed reordering (all known)", [35, 6, 36, 0]),
    ("all 40 videos (3 new)", list(range(40))),
]


def minimum_credits(data: Dataset, calls: list[list[str]]) -> list[int]:
    known: set[str] = set()
    out = []
    for ids in calls:
        new = [v for v in dict.fromkeys(ids) if v not in known]
        out.append(pages_for(sum(len(data[v]) for v in new)) if new else 0)
        known.update(ids)
    return out


async def run(*, data: Dataset | None = None) -> dict[str, Any]:
    data = data if data is not None else dataset(N_VIDEOS, seed=SEED)
    videos = list(data)
    calls = [[videos[i] for i in idx] for _, idx in SESSION]
    minimum = minimum_credits(data, calls)
    keyapi_charged: list[int] = []
    keyapi_reported: list[int] = []
    keyapi_tokens: list[int] = []
    naive_charged: list[int] = []
    naive_tokens: list[int] = []
    with fake_upstream(data) as upstream:
        fake = upstream.fake
        async with Client(keyapi_server(upstream.url)) as keyapi:
            for ids in calls:
                before = fake.charged
                result = await keyapi.call_tool("get_video_products", {"video_ids": ids})
                if result.is_error:
                    raise RuntimeError(f"keyapi-mcp call failed: {result.content}")
                keyapi_charged.append(fake.charged - before)
                keyapi_reported.append(int((result.structured_content or {})["credits"]["spent"]))
                keyapi_tokens.append(count_tokens(result.content[0].text))  # type: ignore[union-attr]
        async with Client(build_naive_server(upstream.url, BENCH_API_KEY)) as naive:
            for ids in calls:
                before = fake.charged
                texts = await naive_pages(naive, ids)
                naive_charged.append(fake.charged - before)
                naive_tokens.append(sum(count_tokens(t) for t in texts))
                assert all(json.loads(t)["code"] == 0 for t in texts)
    per_call = [
        {
            "call": what,
            "ids": len(ids),
            "minimum": m,
            "keyapi": k,
            "keyapi_reported": r,
            "naive": n,
            "keyapi_tokens": kt,
            "naive_tokens": nt,
        }
        for (what, _), ids, m, k, r, n, kt, nt in zip(
            SESSION,
            calls,
            minimum,
            keyapi_charged,
            keyapi_reported,
            naive_charged,
            keyapi_tokens,
            naive_tokens,
            strict=True,
        )
    ]
    total_min, total_keyapi, total_naive = sum(minimum), sum(keyapi_charged), sum(naive_charged)
    return {
        "calls": len(calls),
        "per_call": per_call,
        "credits": {"minimum": total_min, "keyapi": total_keyapi, "naive": total_naive},
        "keyapi_vs_minimum": round(total_keyapi / total_min, 3),
        "naive_vs_minimum": round(total_naive / total_min, 3),
        "session_tokens": {"keyapi": sum(keyapi_tokens), "naive": sum(naive_tokens)},
        "bars": {
            "keyapi-mcp charged = minimum on every call": keyapi_charged == minimum,
            "keyapi-mcp reports what the upstream charged": keyapi_reported == keyapi_charged,
        },
    }
