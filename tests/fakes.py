"""Test and benchmark tools that never ship: the fake upstream over a socket, synthetic data, a token-map verifier.

- `FakeUpstreamServer` serves `keyapi_mcp.upstream.demo.FakeUpstream` (the one emulation of the upstream,
  which `--demo` also uses in process) over real HTTP on 127.0.0.1; point KEYAPI_BASE_URL at its `url`.
- `synthetic_dataset` makes realistic catalogues of any size.
- `TokenMapVerifier` gives HTTP callers distinct identities without an authorization server.
- `python tests/fakes.py --port 8765` runs the fake upstream by hand (demo data plus synthetic videos).
"""

from __future__ import annotations

import argparse
import hmac
import random
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from mcp.server.auth.provider import AccessToken

from keyapi_mcp.core.domain import ENDPOINT
from keyapi_mcp.upstream.demo import FakeUpstream, demo_dataset, envelope, make_row, video_stats


def synthetic_dataset(
    n_videos: int,
    *,
    seed: int = 7,
    min_products: int = 0,
    max_products: int = 12,
    first_id: int = 7_400_000_000_000_000_000,
) -> dict[str, list[dict[str, Any]]]:
    """`n_videos` synthetic videos with `min_products..max_products` product rows each."""
    rng = random.Random(seed)
    data: dict[str, list[dict[str, Any]]] = {}
    for i in range(n_videos):
        vid = str(first_id + i * 7919)
        stats = video_stats(vid, rng)
        count = rng.randint(min_products, max_products)
        data[vid] = [
            make_row(vid, str(1_729_000_000_000_000_000 + rng.getrandbits(40)), rng, video_stats=stats)
            for _ in range(count)
        ]
    return data


class FakeUpstreamServer:
    """`FakeUpstream` over real HTTP on 127.0.0.1, in a background thread. Use as a context manager."""

    def __init__(self, fake: FakeUpstream, host: str = "127.0.0.1", port: int = 0) -> None:
        self.fake = fake
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body in one send, no Nagle: otherwise a keep-alive client waits ~40 ms
            # for a delayed ACK between the two writes, which would swamp any latency measured here.
            wbufsize = -1
            disable_nagle_algorithm = True

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                if parts.path != ENDPOINT:
                    status, body, extra = 404, envelope(404, None, "not found"), {}
                else:
                    status, body, extra = outer.fake.respond(
                        parts.query, {k.lower(): v for k, v in self.headers.items()}
                    )
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    for key, value in extra.items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout tests): nothing to report

            def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # the default listen backlog (5) drops connects of a 100-call burst

        self._httpd = Server((host, port), Handler)
        self._httpd.daemon_threads = True
        # A short poll interval: shutdown() waits up to one interval, and tests start many servers.
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeUpstreamServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Run a fake KeyAPI upstream on 127.0.0.1 (demo data).")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--videos", type=int, default=0, help="add N synthetic videos to the demo data")
    args = parser.parse_args(argv)
    data = demo_dataset()
    data.update(synthetic_dataset(args.videos))
    with FakeUpstreamServer(FakeUpstream(data), port=args.port) as server:
        print(f"fake KeyAPI upstream on {server.url} ({len(data)} videos)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


class TokenMapVerifier:
    """A `TokenVerifier` (the SDK's protocol) for a fixed map of bearer tokens to caller identities.

    Each token verifies as `AccessToken(client_id=<identity>, scopes=<scopes>)`; any other token is refused.
    Comparison is constant-time per entry. For tests and embedders, not configured by environment: a team
    deployment verifies real OAuth access tokens instead.
    """

    def __init__(self, tokens: Mapping[str, str], *, scopes: tuple[str, ...] = ()) -> None:
        self._tokens = [(token.encode(), identity) for token, identity in tokens.items()]
        self._scopes = list(scopes)

    async def verify_token(self, token: str) -> AccessToken | None:
        presented = token.encode()
        found: str | None = None
        for expected, identity in self._tokens:
            if hmac.compare_digest(presented, expected):
                found = identity
        if found is None:
            return None
        return AccessToken(token=token, client_id=found, scopes=list(self._scopes))


if __name__ == "__main__":
    main()
