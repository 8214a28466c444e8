"""The fake upstream in its own process, for the concurrency measure.

In the bench process the fake's handler threads would fight the load generator for one GIL, and the
"direct httpx floor" would measure that contention rather than the upstream. Prints its URL on the
first line of stdout and serves until stdin closes.

    python bench/fake_process.py --videos 960 --seed 33 --latency 0.05
"""

from __future__ import annotations

import argparse
import sys

from keyapi_mcp.upstream.demo import FakeUpstream
from tests.fakes import FakeUpstreamServer, synthetic_dataset


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--api-key", required=True)
    args = parser.parse_args()
    data = synthetic_dataset(args.videos, seed=args.seed, min_products=0, max_products=12)
    fake = FakeUpstream(data, api_key=args.api_key, latency=args.latency)
    with FakeUpstreamServer(fake) as server:
        print(server.url, flush=True)
        sys.stdin.read()  # until the bench closes our stdin
        print(f"charged {fake.charged}", flush=True)


if __name__ == "__main__":
    main()
