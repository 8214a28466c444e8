"""Opt-in Prometheus metrics (`KEYAPI_MCP_METRICS=1` → `GET /metrics` on the HTTP transport).

A tiny recording API the rest of the code calls in one line each; `NO_METRICS` (the default everywhere)
does nothing and never imports prometheus-client, so a server without metrics pays nothing for them.
`PrometheusMetrics` keeps its series in a private `CollectorRegistry` (not the process-wide default), so
two servers in one process, and tests, never share counters.

Series (no per-user labels: the caller is in the ledger, not in label sets that grow with the team):

- `mcp_server_operation_duration_seconds{mcp_method_name, gen_ai_tool_name, error_type}` — every MCP
  request, named as in the OpenTelemetry MCP semantic conventions (`error_type` is the JSON-RPC error
  code, `tool_error` for a tool result with `isError`, or the exception type; empty on success). A method
  the protocol does not define, or a tool this server does not have, is labelled `_OTHER` (the
  OpenTelemetry spelling for a value outside the known set): clients choose those names, so labelling
  by them would let any client grow the series without bound;
- `keyapi_credits_charged_total{outcome="yes|uncertain"}` — upstream requests that cost (or may have
  cost) a credit;
- `keyapi_cache_videos_total{result="hit|miss"}` — requested videos answered free (cache or a shared
  walk) vs. fetched;
- `keyapi_upstream_request_duration_seconds` — each upstream HTTP request, to its response headers;
- `keyapi_budget_refusals_total{limit="per_call|daily|user"}` — requests refused by a local limit;
- `keyapi_consent_total{outcome}` — quotes above KEYAPI_CONFIRM_ABOVE_CREDITS and what became of them:
  `accepted`/`declined` (asked by elicitation), `token_issued`, `token_used`, `token_refused` (the fallback).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from keyapi_mcp.errors import BudgetExceeded

if TYPE_CHECKING:
    from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

METRICS_PATH = "/metrics"
METRICS_EXTRA_HINT = "pip install 'keyapi-mcp[metrics]'"
CHARGED_OUTCOMES = ("yes", "uncertain")
BUDGET_LIMITS = ("per_call", "daily", "user")
CONSENT_OUTCOMES = ("accepted", "declined", "token_issued", "token_used", "token_refused")
# Upstream pages take from tens of ms to the client's 30 s timeout; MCP operations include whole page walks.
UPSTREAM_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OPERATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
OTHER_LABEL = "_OTHER"  # a client-chosen method or tool name outside the known set


def protocol_methods() -> frozenset[str]:
    """The request methods the MCP protocol defines (the client-request union of `mcp_types`)."""
    from typing import get_args

    from mcp_types import ClientRequest

    return frozenset(str(request.model_fields["method"].default) for request in get_args(ClientRequest))


class Metrics:
    """The recording API. This base class records nothing (`NO_METRICS`); `PrometheusMetrics` does."""

    enabled = False

    def operation(self, method: str, tool: str, error_type: str, seconds: float) -> None:
        """One MCP request served (see `MetricsMiddleware`)."""

    def credit_settled(self, charged: str) -> None:
        """One upstream attempt settled as charged `yes`, `no` or `uncertain` (only the first two count)."""

    def cache_videos(self, hits: int, misses: int) -> None:
        """Videos of one answer served free vs. fetched."""

    def upstream_request(self, seconds: float) -> None:
        """One upstream HTTP request, from connect to its last byte (or failure)."""

    def budget_refusal(self, exc: BudgetExceeded) -> None:
        """A reservation refused; counted when the refusal names a limit (not an unusable ledger)."""

    def consent(self, outcome: str) -> None:
        """One quoted call's consent: one of `CONSENT_OUTCOMES`."""


NO_METRICS = Metrics()


class PrometheusMetrics(Metrics):
    """Prometheus series in a private registry, rendered by `render()` for `GET /metrics`."""

    enabled = True

    def __init__(self) -> None:
        try:
            from prometheus_client import CollectorRegistry, Counter, Histogram
        except ImportError:
            raise RuntimeError(
                f"KEYAPI_MCP_METRICS=1 needs the prometheus-client package: {METRICS_EXTRA_HINT}"
            ) from None
        self.registry = CollectorRegistry(auto_describe=True)
        self._operations = Histogram(
            "mcp_server_operation_duration_seconds",
            "MCP requests served, by method, tool and error type (OpenTelemetry MCP semantic conventions).",
            ["mcp_method_name", "gen_ai_tool_name", "error_type"],
            buckets=OPERATION_BUCKETS,
            registry=self.registry,
        )
        self._charged = Counter(
            "keyapi_credits_charged_total",
            "Upstream requests that cost a credit (yes) or may have (uncertain: the outcome was not seen).",
            ["outcome"],
            registry=self.registry,
        )
        self._videos = Counter(
            "keyapi_cache_videos_total",
            "Requested videos answered free from the cache or a shared walk (hit) or fetched upstream (miss).",
            ["result"],
            registry=self.registry,
        )
        self._upstream = Histogram(
            "keyapi_upstream_request_duration_seconds",
            "Upstream KeyAPI requests, from sending to the response headers.",
            buckets=UPSTREAM_BUCKETS,
            registry=self.registry,
        )
        self._refusals = Counter(
            "keyapi_budget_refusals_total",
            "Upstream requests refused by a local credit limit.",
            ["limit"],
            registry=self.registry,
        )
        self._consent = Counter(
            "keyapi_consent_total",
            "Calls quoted above KEYAPI_CONFIRM_ABOVE_CREDITS, by what became of the user's consent.",
            ["outcome"],
            registry=self.registry,
        )
        # Every label value a dashboard filters on exists from the start (at 0), so rate() has a baseline.
        for outcome in CHARGED_OUTCOMES:
            self._charged.labels(outcome)
        for result in ("hit", "miss"):
            self._videos.labels(result)
        for limit in BUDGET_LIMITS:
            self._refusals.labels(limit)
        for outcome in CONSENT_OUTCOMES:
            self._consent.labels(outcome)

    def operation(self, method: str, tool: str, error_type: str, seconds: float) -> None:
        self._operations.labels(method, tool, error_type).observe(seconds)

    def credit_settled(self, charged: str) -> None:
        if charged in CHARGED_OUTCOMES:
            self._charged.labels(charged).inc()

    def cache_videos(self, hits: int, misses: int) -> None:
        if hits > 0:
            self._videos.labels("hit").inc(hits)
        if misses > 0:
            self._videos.labels("miss").inc(misses)

    def upstream_request(self, seconds: float) -> None:
        self._upstream.observe(seconds)

    def budget_refusal(self, exc: BudgetExceeded) -> None:
        if exc.limit is not None:
            self._refusals.labels(exc.limit).inc()

    def consent(self, outcome: str) -> None:
        if outcome in CONSENT_OUTCOMES:
            self._consent.labels(outcome).inc()

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """SDK server middleware (`MCPServer.middleware`) timing every request, labelled like the SDK's OTel spans."""

    def __init__(self, metrics: Metrics, tool_names: Iterable[str]) -> None:
        self._metrics = metrics
        self._methods = protocol_methods()
        self._tools = frozenset(tool_names)

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.request_id is None:  # a notification: no operation to time
            return await call_next(ctx)
        from mcp.shared.exceptions import MCPError
        from mcp_types import INVALID_PARAMS, CallToolResult
        from pydantic import ValidationError

        method = ctx.method if ctx.method in self._methods else OTHER_LABEL
        tool = ""
        if method == "tools/call":
            name = ctx.params.get("name") if ctx.params else None
            tool = name if isinstance(name, str) and name in self._tools else OTHER_LABEL
        started = time.perf_counter()

        def done(error_type: str) -> None:
            self._metrics.operation(method, tool, error_type, time.perf_counter() - started)

        try:
            result = await call_next(ctx)
        except MCPError as exc:
            done(str(exc.error.code))
            raise
        except ValidationError:
            done(str(INVALID_PARAMS))
            raise
        except Exception as exc:
            done(type(exc).__qualname__)
            raise
        match result:
            case CallToolResult(is_error=True) | {"isError": True}:
                done("tool_error")
            case _:
                done("")
        return result
