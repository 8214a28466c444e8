"""The `--demo` data and an offline stand-in for the KeyAPI endpoint: the same paging, envelope and error shapes.

`--demo` mode serves `demo_dataset()` through `mock_transport()` (in process, no socket at all). The tests and
benchmarks use the same emulation (`FakeUpstream`), over a socket on 127.0.0.1 (`tests/fakes.py`), so there
is one emulation of the upstream's behaviour.

Paging follows the documentation: rows of all requested videos, in the order the ids were given,
`page_size` (max 10) per page; a page past the end is an empty `data` array. Every successful
request is counted as one charged credit in `charged`.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx

from keyapi_mcp.core.domain import ENDPOINT

# The example row of the upstream documentation, verbatim.
DOCUMENTED_ROW: dict[str, Any] = {
    "create_time": "1751301603",
    "data_size": "6728409",
    "duration": 164,
    "hash_tag": "#SmallBusiness #startup #proteinsnacks ",
    "height": "1024",
    "play_addr": "https://v19.tiktokcdn-us.com/f5db72cd55e7002f5920822ad800cb72/6901d1d5/video/tos/useast5/"
    "tos-useast5-ve-0068c003-tx/oYBvGxWaA9PvzG5yBvIHrggdyEbUixTQ4iEKi/?a=1233&bti=MzU8OGYpNHYpNzo5ZjEuLj"
    "pkLTptNDQwOg%3D%3D&ch=0&cr=13&dr=0&er=0&lr=all&net=0&cd=0%7C0%7C0%7C&cv=1&br=1558&bt=779&cs=0&ds=6&f"
    "t=WgSBMNdkVcy5Uxl7KStG-XD5SdHKLKPXt2.NheoyqF_4&mime_type=video_mp4&qs=0&rc=OWY5NDxlPDk5Omg3PDc6OEBpa"
    "nV1Zms5cm1lNDMzZzczNEAtYi9eMTUyNWIxYzFhMS8yYSNwMV5tMmRrb2VhLS1kMS9zcw%3D%3D&vvpl=1&l=202510290232494"
    "D556438CDB21218AE73&btag=e00090000",
    "product_id": "1729422228922143703",
    "ratio": "540p",
    "reflow_cover": "https://echosell-images.tos-ap-southeast-1.volces.com/video-cover/836/7521783049722285367.jpeg",
    "region": "US",
    "total_comments_cnt": 3926,
    "total_digg_cnt": 920727,
    "total_favorites_cnt": 51447,
    "total_shares_cnt": 6213,
    "total_video_sale_cnt": 4479,
    "total_video_sale_gmv_amt": 133621.6,
    "total_views_cnt": 33635675,
    "user_id": "7190508362273735722",
    "video_desc": "he made our entire week FR 🥹 #SmallBusiness #startup #proteinsnacks ",
    "video_id": "7521783049722285367",
    "width": "576",
}
DOCUMENTED_VIDEO_ID = DOCUMENTED_ROW["video_id"]

_EMOJI = ["🔥", "✨", "🥹", "💅", "🛒", "😍", "🎉", "💯", "🙌", "📦"]
_WORDS = ["must-have", "restock", "viral", "glow", "snack", "haul", "deal", "gift", "routine", "review"]


def make_row(video_id: str, product_id: str, rng: random.Random, *, video_stats: dict[str, Any]) -> dict[str, Any]:
    """A realistic upstream row: documented fields and types, long signed CDN URLs, emoji text."""
    units = rng.randint(0, 9000)
    price = round(rng.uniform(4.99, 89.99), 2)
    sig = "".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789") for _ in range(180))
    row = dict(video_stats)
    row.update(
        {
            "product_id": product_id,
            "total_video_sale_cnt": units,
            "total_video_sale_gmv_amt": round(units * price, 2),
            "play_addr": f"https://v19.tiktokcdn-us.com/{rng.getrandbits(128):032x}/{rng.getrandbits(32):08x}/video/"
            f"tos/useast5/tos-useast5-ve-0068c003-tx/{sig[:40]}/?a=1233&bti={sig[40:90]}&ch=0&cr=13&br=1558&"
            f"bt=779&cs=0&ds=6&ft={sig[90:130]}&mime_type=video_mp4&qs=0&rc={sig[130:]}&vvpl=1&btag=e00090000",
            "reflow_cover": "https://echosell-images.tos-ap-southeast-1.volces.com/video-cover/"
            f"{rng.randint(100, 999)}/{video_id}.jpeg",
        }
    )
    return row


def video_stats(video_id: str, rng: random.Random, views: int | None = None) -> dict[str, Any]:
    if views is None:
        views = rng.choice([0, rng.randint(1_000, 50_000), rng.randint(50_000, 40_000_000)])
    words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 12)))
    tags = " ".join(f"#{rng.choice(_WORDS).replace('-', '')}" for _ in range(rng.randint(1, 5))) + " "
    return {
        "create_time": str(rng.randint(1_690_000_000, 1_760_000_000)),
        "data_size": str(rng.randint(1_000_000, 40_000_000)),
        "duration": rng.randint(8, 300),
        "hash_tag": tags,
        "height": "1024",
        "ratio": "540p",
        "region": rng.choice(["US", "GB", "ID", "MY", "TH", "VN", "PH"]),
        "total_comments_cnt": rng.randint(0, max(1, views // 500)),
        "total_digg_cnt": rng.randint(0, max(1, views // 20)),
        "total_favorites_cnt": rng.randint(0, max(1, views // 200)),
        "total_shares_cnt": rng.randint(0, max(1, views // 1000)),
        "total_views_cnt": views,
        "user_id": str(rng.randint(10**18, 9 * 10**18)),
        "video_desc": f"{words} {rng.choice(_EMOJI)}{rng.choice(_EMOJI)} {tags}",
        "video_id": video_id,
        "width": "576",
    }


def demo_dataset() -> dict[str, list[dict[str, Any]]]:
    """The `--demo` data: the documented example plus clearly synthetic videos (ids 9000000000000000xxx).

    - 7521783049722285367: the upstream documentation's example row;
    - 9000000000000000001: 3 products;  9000000000000000002: 12 products (two upstream pages);
    - 9000000000000000003: 0 views (engagement and per-1k metrics are null);
    - 9000000000000000004: no products (reported under `not_found`);
    - 9000000000000000005: 3 products also sold through 001 and 002, so totals across videos
      (`group_by="product"`, the `top_products` prompt) add up more than one video.
    """
    rng = random.Random(2026)
    data: dict[str, list[dict[str, Any]]] = {DOCUMENTED_VIDEO_ID: [dict(DOCUMENTED_ROW)]}
    for suffix, count, views in (
        ("001", 3, 1_250_000),
        ("002", 12, 8_400_000),
        ("003", 2, 0),
        ("004", 0, 5_000),
    ):
        vid = f"9000000000000000{suffix}"
        stats = video_stats(vid, rng, views)
        stats["video_desc"] = f"SYNTHETIC DEMO VIDEO {suffix} ✨ #demo "
        stats["hash_tag"] = "#demo "
        data[vid] = [make_row(vid, f"90000000000000{suffix}{i:03d}", rng, video_stats=stats) for i in range(count)]
    resold = [data["9000000000000000001"][0], data["9000000000000000001"][2], data["9000000000000000002"][7]]
    vid = "9000000000000000005"
    stats = video_stats(vid, rng, 2_300_000)
    stats["video_desc"] = "SYNTHETIC DEMO VIDEO 005 ✨ #demo "
    stats["hash_tag"] = "#demo "
    data[vid] = [make_row(vid, str(row["product_id"]), rng, video_stats=stats) for row in resold]
    return data


@dataclass
class FakeUpstream:
    """The paging/envelope logic. `script` holds canned failures served before normal answers."""

    data: dict[str, list[dict[str, Any]]]
    api_key: str | None = None
    latency: float = 0.0
    script: list[tuple[int, Any, dict[str, str]]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    charged: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def respond(self, query: str, headers: dict[str, str]) -> tuple[int, bytes, dict[str, str]]:
        params = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
        with self.lock:
            self.requests.append(
                {
                    "params": params,
                    "auth": headers.get("authorization", ""),
                    "user_agent": headers.get("user-agent", ""),
                    "at": time.time(),
                }
            )
            scripted = self.script.pop(0) if self.script else None
        if self.latency:
            time.sleep(self.latency)
        if scripted is not None:
            status, body, extra = scripted
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            if status == 200 and isinstance(body, dict) and body.get("code") == 0:
                with self.lock:
                    self.charged += 1
            return status, raw, extra
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            return 401, envelope(401, None, "apiKey is invalid"), {}
        ids_param = params.get("video_ids", "")
        try:
            page_num = int(params.get("page_num", ""))
            page_size = int(params.get("page_size", ""))
        except ValueError:
            return 400, envelope(400, None, "Missing required parameter: page_num/page_size"), {}
        if not ids_param or page_num < 1 or not 1 <= page_size <= 10:
            return 400, envelope(400, None, "Invalid parameter"), {}
        rows = [row for vid in ids_param.split(",") for row in self.data.get(vid.strip(), [])]
        page = rows[(page_num - 1) * page_size : page_num * page_size]
        with self.lock:
            self.charged += 1
        return 200, envelope(0, page, "success"), {}


def envelope(code: int, data: Any, message: str) -> bytes:
    body = {"code": code, "message": message, "data": data}
    if code == 0:
        body["requestId"] = str(uuid.uuid4())
    return json.dumps(body, ensure_ascii=False).encode()


def mock_transport(fake: FakeUpstream) -> httpx.MockTransport:
    """An in-process transport answering as `fake` would: no socket is ever opened."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path != ENDPOINT:
            return httpx.Response(404, content=envelope(404, None, "not found"))
        status, body, headers = fake.respond(
            request.url.query.decode(), {k.lower(): v for k, v in request.headers.items()}
        )
        return httpx.Response(status, content=body, headers={"content-type": "application/json", **headers})

    return httpx.MockTransport(handler)
