"""Benchmarks for keyapi-mcp: `python -m bench` (method, bars and results: bench/README.md).

Everything runs offline in one process tree against `FakeUpstreamServer` on 127.0.0.1 and compares,
in the same run, the raw upstream JSON, a naive pass-through wrapper (`bench/naive_server.py`) and
keyapi-mcp. Nothing is imported at package import time, so `python -m bench.minimal_server` and
`python -m bench.naive_server` start as lean as a one-file server would.
"""
