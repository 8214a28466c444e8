"""Guards around the HTTP transport for clients that are slow, idle or hostile, and for a graceful stop.

uvicorn bounds idle keep-alive connections (`timeout_keep_alive`) and, with `limit_concurrency`, how many
connections it serves at once, but it has no deadline for a request head or body: a client sending one
byte a second holds a connection forever, and 50 such sockets were held indefinitely (issue 14). So:

- `head_timeout_protocol` — uvicorn's h11 protocol with a deadline for each request head: a connection that
  has not completed its request line and headers within the deadline (from connect, or from the first byte
  of a keep-alive request) is closed;
- `BodyDeadlineMiddleware` — the body of a `POST /mcp` must arrive within a deadline, else 408 and the
  connection is closed; it is read only when the app asks for it, so a request refused on its headers (no
  token, a bad one) is answered at once, however slowly its body would come;
- `StatelessGetMiddleware` — `GET /mcp` answers 405: the server is stateless, so the standalone SSE stream a
  GET would open has nothing to carry and would never end;
- `keep_sse_streams_through_shutdown` — sse-starlette (the SDK's SSE responses) ends every open stream as
  soon as uvicorn receives SIGTERM, so a tool call in flight answered HTTP 200 with an empty body while the
  upstream had charged. Turned off, uvicorn's own graceful shutdown applies: stop accepting, let the
  responses in flight finish for up to the grace period, then cancel what is left.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)


def keep_sse_streams_through_shutdown() -> None:
    """Let SSE responses in flight finish on SIGTERM (sse-starlette's documented opt-out of its auto-drain).

    Process-wide: called by `run_http` only, in the process that serves. uvicorn's `timeout_graceful_shutdown`
    still bounds the wait: when it expires, uvicorn cancels the remaining requests.
    """
    from sse_starlette.sse import AppStatus

    AppStatus.disable_automatic_graceful_drain()


def head_timeout_protocol(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol class with a deadline of `seconds` for every request head (pass as `http=`)."""

    class HeadTimeoutH11Protocol(H11Protocol):
        head_timeout = seconds
        head_timer: asyncio.TimerHandle | None = None

        def reading_head(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def arm_head_timer(self) -> None:
            if self.head_timer is None and self.reading_head():
                self.head_timer = self.loop.call_later(self.head_timeout, self.head_timed_out)

        def disarm_head_timer(self) -> None:
            if self.head_timer is not None:
                self.head_timer.cancel()
                self.head_timer = None

        def head_timed_out(self) -> None:
            self.head_timer = None
            if self.reading_head() and not self.transport.is_closing():
                log.info("closed a connection that sent no complete request head within %.0f s", self.head_timeout)
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.arm_head_timer()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self.reading_head():
                self.arm_head_timer()  # a keep-alive request has begun: its head must complete in time
            else:
                self.disarm_head_timer()

        def on_response_complete(self) -> None:
            self.disarm_head_timer()  # idle again: uvicorn's keep-alive timeout takes over
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self.disarm_head_timer()
            super().connection_lost(exc)

    return HeadTimeoutH11Protocol


async def refuse_websocket(send: Send) -> None:
    """Nothing is served over WebSocket: close the upgrade (policy violation) before any app code runs."""
    await send({"type": "websocket.close", "code": 1008})


async def send_json(send: Send, status: int, payload: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    """Answer with a small JSON body straight from the ASGI layer (refusals made before the app runs)."""
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyDeadlineMiddleware:
    """The body of a POST to `path` must arrive within `seconds` of the request (else 408, connection closed).

    Nothing is read ahead: the deadline bounds the app's own reads, so whatever the app decides on the
    headers — the SDK's bearer check answering 401, 403 or (through `AuthGate`) 503 — is answered before a
    byte of the body is waited for. When the deadline passes, or the client leaves before its body is
    complete, the app is cancelled where it waits (the SDK then ends the request's transport, as it does
    for any cancelled request) and the 408 is sent if nothing was yet; a client that left gets nothing.
    The body's size is bounded by the SDK (`max_request_body_size`, 413), which reads it through here.
    """

    def __init__(self, app: ASGIApp, *, path: str, seconds: float) -> None:
        self.app = app
        self.path = path
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") != self.path:
            await self.app(scope, receive, send)
            return
        deadline = anyio.current_time() + self.seconds
        body_complete = False
        stopped: str | None = None  # why the app was cancelled: "timed out" or "left"
        response_started = False

        async def timed_receive() -> Message:
            nonlocal body_complete, stopped
            if body_complete:  # afterwards, e.g. waiting for a disconnect during an SSE response: no deadline
                return await receive()
            with anyio.CancelScope(deadline=deadline):
                message = await receive()
                if message["type"] == "http.request":
                    body_complete = not message.get("more_body", False)
                    return message
                stopped = "left"  # http.disconnect mid-body: the SDK would log it as a failed request
            stopped = stopped or "timed out"
            app_scope.cancel()
            await anyio.sleep_forever()  # cancelled at once: the app unwinds from its read
            raise AssertionError("unreachable")

        async def tracked_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        with anyio.CancelScope() as app_scope:
            await self.app(scope, timed_receive, tracked_send)
        if stopped != "timed out":
            return
        client = scope.get("client") or ("?", 0)
        log.info("request body from %s not received within %.0f s: 408", client[0], self.seconds)
        if not response_started:
            await send_json(
                send,
                408,
                {"error": "request_timeout", "error_description": "The request body did not arrive in time."},
                [(b"connection", b"close")],
            )


class StatelessGetMiddleware:
    """`GET path` answers 405 (`Allow: POST`): a stateless server has no stream for a GET to subscribe to."""

    def __init__(self, app: ASGIApp, *, path: str) -> None:
        self.app = app
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("method") == "GET" and scope.get("path") == self.path:
            await send_json(
                send,
                405,
                {
                    "error": "method_not_allowed",
                    "error_description": "This server is stateless: send MCP requests with POST; "
                    "there is no server-initiated stream to GET.",
                },
                [(b"allow", b"POST")],
            )
            return
        await self.app(scope, receive, send)
