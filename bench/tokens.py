"""Context tokens: what the model reads for one question about N videos, four ways.

- raw upstream JSON: every page body of the query (page_size 10, paged until a short page);
- naive wrapper: the text its tool returns for the same pages (the raw JSON again, as the model sees it);
- CSV floor: a bare `video_id,product_id,units,gmv,views` table of the same rows (no labels, no totals);
- keyapi-mcp: the concise text content of one `get_video_products` call (detailed shown for reference).

Every fact is checked: each (video_id, product_id, units, GMV) of the upstream rows must be read back
from keyapi-mcp's concise text, and every requested video_id must appear in it.
"""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
from mcp import Client

from bench.common import BENCH_API_KEY, PAGE_SIZE, Dataset, dataset, fake_upstream
from bench.inproc import keyapi_server
from bench.naive_server import ENDPOINT, build_naive_server

TOKENIZER = "anthropic-tokenizer (local BPE, offline)"


def count_tokens(text: str) -> int:
    # The package's module-level function is its embedded Rust BPE: no network. (Its ApiTokenizer
    # class would call the count_tokens API when ANTHROPIC_API_KEY is set; it is never used here.)
    from anthropic_tokenizer import count_tokens as local_count

    return int(local_count(text))


def csv_floor(rows: list[dict[str, Any]]) -> str:
    lines = ["video_id,product_id,units,gmv,views"]
    lines += [
        f"{r['video_id']},{r['product_id']},{r['total_video_sale_cnt']},{r['total_video_sale_gmv_amt']},"
        f"{r['total_views_cnt']}"
        for r in rows
    ]
    return "\n".join(lines)


_VIDEO_LINE = re.compile(r"^(\d{6,}) \| ")
_PRODUCT_LINE = re.compile(r"^- (\d+) \| (-?\d+) \| (-?[\d.]+) \|")


def facts_in_text(text: str) -> set[tuple[str, str, int, float]]:
    """(video_id, product_id, units, gmv) read back from keyapi-mcp's concise text."""
    found: set[tuple[str, str, int, float]] = set()
    video = None
    for line in text.splitlines():
        if m := _VIDEO_LINE.match(line):
            video = m.group(1)
        elif (m := _PRODUCT_LINE.match(line)) and video is not None:
            found.add((video, m.group(1), int(m.group(2)), round(float(m.group(3)), 2)))
    return found


def facts_of_rows(rows: list[dict[str, Any]]) -> set[tuple[str, str, int, float]]:
    return {
        (r["video_id"], r["product_id"], int(r["total_video_sale_cnt"]), round(float(r["total_video_sale_gmv_amt"]), 2))
        for r in rows
    }


def raw_pages(base_url: str, ids: list[str]) -> list[str]:
    """The upstream's page bodies for the query, page_size 10, until a short page."""
    bodies = []
    with httpx.Client(trust_env=False) as http:
        page = 1
        while True:
            response = http.get(
                base_url + ENDPOINT,
                params={"video_ids": ",".join(ids), "page_num": page, "page_size": PAGE_SIZE},
                headers={"Authorization": f"Bearer {BENCH_API_KEY}"},
            )
            bodies.append(response.text)
            if len(response.json()["data"]) < PAGE_SIZE:
                return bodies
            page += 1


async def naive_pages(client: Client, ids: list[str]) -> list[str]:
    """The naive tool's texts for the query, paging until a short page as a model would."""
    texts = []
    page = 1
    while True:
        result = await client.call_tool(
            "get_video_products", {"video_ids": ",".join(ids), "page_num": page, "page_size": PAGE_SIZE}
        )
        text = result.content[0].text  # type: ignore[union-attr]
        texts.append(text)
        if len(json.loads(text)["data"]) < PAGE_SIZE:
            return texts
        page += 1


async def run(*, n_videos: int = 25, seed: int = 11, data: Dataset | None = None) -> dict[str, Any]:
    data = data if data is not None else dataset(n_videos, seed=seed)
    ids = list(data)
    rows = [row for vid in ids for row in data[vid]]
    with fake_upstream(data) as upstream:
        raw = raw_pages(upstream.url, ids)
        async with Client(build_naive_server(upstream.url, BENCH_API_KEY)) as naive:
            naive_texts = await naive_pages(naive, ids)
        async with Client(keyapi_server(upstream.url)) as keyapi:
            concise = await keyapi.call_tool("get_video_products", {"video_ids": ids})
            detailed = await keyapi.call_tool("get_video_products", {"video_ids": ids, "response_format": "detailed"})
    concise_text = concise.content[0].text  # type: ignore[union-attr]
    detailed_text = detailed.content[0].text  # type: ignore[union-attr]

    raw_tokens = sum(count_tokens(b) for b in raw)
    naive_tokens = sum(count_tokens(t) for t in naive_texts)
    csv_tokens = count_tokens(csv_floor(rows))
    concise_tokens = count_tokens(concise_text)
    detailed_tokens = count_tokens(detailed_text)
    structured_tokens = count_tokens(json.dumps(concise.structured_content, ensure_ascii=False))

    expected = facts_of_rows(rows)
    found = facts_in_text(concise_text)
    missing_ids = [vid for vid in ids if vid not in concise_text]
    facts_ok = found == expected and not missing_ids

    share_of_raw = concise_tokens / raw_tokens
    vs_csv = concise_tokens / csv_tokens
    return {
        "tokenizer": TOKENIZER,
        "videos": len(ids),
        "videos_without_products": sum(1 for v in ids if not data[v]),
        "rows": len(rows),
        "pages": len(raw),
        "tokens": {
            "raw_upstream_json": raw_tokens,
            "naive_wrapper": naive_tokens,
            "csv_floor": csv_tokens,
            "keyapi_concise": concise_tokens,
            "keyapi_detailed": detailed_tokens,
            "keyapi_structured_content_json": structured_tokens,
        },
        "concise_share_of_raw": round(share_of_raw, 4),
        "concise_vs_csv_floor": round(vs_csv, 3),
        "facts_expected": len(expected),
        "facts_found": len(found & expected),
        "facts_wrong_or_extra": len(found - expected),
        "video_ids_missing": missing_ids,
        "bars": {
            "concise ≤ 6% of raw JSON": share_of_raw <= 0.06,
            "concise ≤ 1.5× CSV floor": vs_csv <= 1.5,
            "every video_id, product_id, units, GMV present": facts_ok,
        },
        "sample_concise_text": "\n".join(concise_text.splitlines()[:8]),
    }
