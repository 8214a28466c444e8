"""`python -m bench [--quick] [--only NAMES]`: run the benchmarks, print the table, write results and chart.

Writes `bench/results.json` and `bench/results.png` (or `--out DIR`). Exit status 1 with `--strict`
when a bar is missed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

from bench import report
from bench.common import BENCH_DIR, SERVER_PYTHON_VAR, runtime_environment

SECTIONS = ("tokens", "credits", "golden", "stdio", "concurrency")


def _all_bars(results: dict[str, Any]) -> dict[str, bool]:
    found: dict[str, bool] = {}

    def walk(node: Any, path: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "bars" and isinstance(value, dict):
                    found.update({f"{path}: {name}": bool(ok) for name, ok in value.items()})
                else:
                    walk(value, f"{path}.{key}" if path else key)

    walk(results, "")
    return found


async def run(sections: list[str], quick: bool) -> dict[str, Any]:
    from bench import concurrency, credits, golden, stdio, tokens

    results: dict[str, Any] = {
        "quick": quick,
        "machine": {"python": platform.python_version(), "platform": platform.platform(), "cpus": _cpus()},
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    runners = {
        "tokens": lambda: tokens.run(),
        "credits": lambda: credits.run(),
        "golden": lambda: golden.run(),
        "stdio": lambda: stdio.run(quick=quick),
        "concurrency": lambda: concurrency.run(quick=quick),
    }
    for name in sections:
        started = time.perf_counter()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        results[name] = await runners[name]()
        print(f"  {name} done in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    return results


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a few iterations of everything (a smoke run)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--out", type=Path, default=BENCH_DIR, help="where results.json/results.png go")
    parser.add_argument("--strict", action="store_true", help="exit 1 if any bar is missed")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("httpx", "httpx2", "mcp", "uvicorn"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    sections = list(args.only or SECTIONS)
    with tempfile.TemporaryDirectory(prefix="keyapi-bench-env-") as envdir:
        if {"stdio", "concurrency"} & set(sections):
            print("making a runtime-only environment for the measured servers ...", file=sys.stderr, flush=True)
            os.environ[SERVER_PYTHON_VAR] = runtime_environment(Path(envdir))
        results = anyio.run(run, sections, args.quick)
    bars = _all_bars(results)
    results["bars_missed"] = [name for name, ok in bars.items() if not ok]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    report.chart(results, args.out / "results.png")
    print(report.table(results))
    print()
    if results["bars_missed"]:
        print("bars missed:\n  " + "\n  ".join(results["bars_missed"]))
    else:
        print(f"all {len(bars)} bars held")
    print(f"wrote {args.out / 'results.json'} and {args.out / 'results.png'}")
    return 1 if args.strict and results["bars_missed"] else 0


if __name__ == "__main__":
    sys.exit(main())
