"""Unit tests for keyapi_mcp.client with respx: requests, status mapping, retries, ledger attempts, redaction.

No test waits for real: the client's `sleep` and `clock` are a fake that records each wait and moves
its own time forward, and the rate limiter gets a no-op sleep.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import traceback
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import respx
from helpers import TEST_API_KEY

from keyapi_mcp import __version__
from keyapi_mcp.core.domain import ENDPOINT, PAGE_SIZE, Attempt
from keyapi_mcp.errors import (
    BudgetExceeded,
    KeyAPIError,
    OutOfCredits,
    RateLimited,
    Unauthorized,
    UpstreamError,
    UpstreamTimeout,
)
from keyapi_mcp.upstream import client as client_module
from keyapi_mcp.upstream.client import (
    BACKOFF_BASE_SECONDS,
    BACKOFF_MAX_SECONDS,
    MAX_ATTEMPTS,
    RETRY_BUDGET_SECONDS,
    KeyAPIClient,
    RateLimiter,
    backoff_seconds,
    retry_after_seconds,
)

pytestmark = pytest.mark.anyio

BASE = "https://api.keyapi.ai"
IDS = ["7521783049722285367", "7300000000000000001"]
# Building an SSL context costs ~50 ms; respx intercepts before TLS anyway, so share one.
SSL_CONTEXT = httpx.create_ssl_context()
ROW = {"video_id": IDS[0], "product_id": "1729422228922143703", "total_video_sale_cnt": 4479}


def ok(rows: list[dict[str, Any]] | None = None, request_id: str = "rid-ok") -> httpx.Response:
    return httpx.Response(200, json={"code": 0, "message": "success", "data": rows or [ROW], "requestId": request_id})


def envelope(code: object, message: str = "something went wrong") -> httpx.Response:
    return httpx.Response(200, json={"code": code, "message": message, "data": None, "requestId": "rid-env"})


class FakeTime:
    """A clock and a sleep: `sleep` records the wait and advances `now` instead of waiting."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class RecordingGate:
    """A CreditGate that records each reserve/settle; can refuse the n-th reservation."""

    def __init__(self, refuse_at: int | None = None) -> None:
        self.reserved: list[tuple[int, int]] = []
        self.settled: list[tuple[object, Attempt]] = []
        self.refuse_at = refuse_at

    async def reserve(self, ids_count: int, page: int) -> object:
        if self.refuse_at is not None and len(self.reserved) + 1 >= self.refuse_at:
            raise BudgetExceeded("The per-call credit cap was reached.")
        self.reserved.append((ids_count, page))
        return f"reservation-{len(self.reserved)}"

    async def settle(self, reservation: object, attempt: Attempt) -> None:
        self.settled.append((reservation, attempt))

    @property
    def attempts(self) -> list[Attempt]:
        return [a for _, a in self.settled]

    @property
    def charged(self) -> list[str]:
        return [a.charged for a in self.attempts]


class CountingLimiter(RateLimiter):
    def __init__(self) -> None:
        async def no_wait(_: float) -> None:
            return None

        super().__init__(1000.0, sleep=no_wait)
        self.acquired = 0

    async def acquire(self) -> None:
        self.acquired += 1
        await super().acquire()


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def gate() -> RecordingGate:
    return RecordingGate()


@pytest.fixture
def limiter() -> CountingLimiter:
    return CountingLimiter()


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    # assert_all_mocked (the default) turns any request to an unmocked URL into an error: no network.
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        yield mock


@pytest.fixture
def route(router: respx.MockRouter) -> respx.Route:
    return router.get(ENDPOINT)


@pytest.fixture
async def client(fake_time: FakeTime, limiter: CountingLimiter) -> AsyncIterator[KeyAPIClient]:
    async with httpx.AsyncClient(verify=SSL_CONTEXT) as http:
        yield KeyAPIClient(
            http,
            api_key=TEST_API_KEY,
            base_url=BASE + "/",
            rate_limiter=limiter,
            timeout_seconds=5,
            sleep=fake_time.sleep,
            clock=fake_time.clock,
        )


async def fetch_error(client: KeyAPIClient, gate: RecordingGate, page: int = 1) -> KeyAPIError:
    with pytest.raises(KeyAPIError) as info:
        await client.fetch_page(IDS, page, gate)
    return info.value


def assert_no_key(*texts: str) -> None:
    for text in texts:
        assert TEST_API_KEY not in text
        assert TEST_API_KEY[:12] not in text  # not even a recognisable prefix


# ---------------------------------------------------------------------------------------------
# The request


async def test_request_carries_bearer_key_user_agent_and_accepts_json(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate
) -> None:
    route.mock(return_value=ok())
    await client.fetch_page(IDS, 1, gate)
    request = route.calls.last.request
    assert request.headers["authorization"] == f"Bearer {TEST_API_KEY}"
    assert request.headers["user-agent"] == f"keyapi-mcp/{__version__}"
    assert request.headers["accept"] == "application/json"
    assert request.method == "GET"


async def test_request_sends_comma_joined_ids_page_num_and_page_size_ten(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate
) -> None:
    route.mock(return_value=ok())
    await client.fetch_page(IDS, 4, gate)
    request = route.calls.last.request
    assert request.url.path == ENDPOINT  # the trailing slash of the base URL is not doubled
    assert request.url.host == "api.keyapi.ai"
    assert dict(request.url.params) == {"video_ids": ",".join(IDS), "page_num": "4", "page_size": str(PAGE_SIZE)}
    assert PAGE_SIZE == 10
    assert request.url.params["video_ids"] == "7521783049722285367,7300000000000000001"


async def test_a_success_returns_the_rows_and_request_id(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate
) -> None:
    rows = [ROW, {**ROW, "product_id": "2"}]
    route.mock(return_value=ok(rows, request_id="6c7b787e"))
    page = await client.fetch_page(IDS, 1, gate)
    assert page.rows == rows
    assert page.request_id == "6c7b787e"


async def test_a_success_with_null_data_is_an_empty_page(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate
) -> None:
    route.mock(return_value=httpx.Response(200, json={"code": 0, "message": "success", "data": None}))
    page = await client.fetch_page(IDS, 1, gate)
    assert page.rows == []
    assert gate.charged == ["yes"]


async def test_a_string_zero_code_counts_as_success(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate
) -> None:
    route.mock(return_value=httpx.Response(200, json={"code": "0", "data": [ROW]}))
    assert (await client.fetch_page(IDS, 1, gate)).rows == [ROW]


async def test_request_id_falls_back_to_the_response_header(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate
) -> None:
    route.mock(return_value=httpx.Response(200, json={"code": 0, "data": []}, headers={"x-request-id": "hdr-1"}))
    assert (await client.fetch_page(IDS, 1, gate)).request_id == "hdr-1"


async def test_each_attempt_passes_the_rate_limiter_once(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate, limiter: CountingLimiter
) -> None:
    route.side_effect = [httpx.Response(503), ok()]
    await client.fetch_page(IDS, 1, gate)
    assert limiter.acquired == 2 == route.call_count


# ---------------------------------------------------------------------------------------------
# Status → error kind (never retried)


@pytest.mark.parametrize(
    ("status", "error_class", "code"),
    [
        (400, UpstreamError, "upstream_error"),
        (401, Unauthorized, "unauthorized"),
        (403, Unauthorized, "unauthorized"),
        (402, OutOfCredits, "out_of_credits"),
        (404, UpstreamError, "upstream_error"),
    ],
)
async def test_client_errors_map_to_their_code_without_retry(
    client: KeyAPIClient,
    route: respx.Route,
    gate: RecordingGate,
    fake_time: FakeTime,
    status: int,
    error_class: type[KeyAPIError],
    code: str,
) -> None:
    route.mock(return_value=httpx.Response(status, json={"code": status, "message": "nope"}))
    error = await fetch_error(client, gate)
    assert type(error) is error_class
    assert error.code == code
    assert str(error).startswith(f"[{code}]")
    assert error.status == status
    assert route.call_count == 1
    assert fake_time.sleeps == []
    assert gate.charged == ["no"]
    assert gate.attempts[0].http_status == status


async def test_unauthorized_says_what_to_do_and_quotes_the_upstream(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate
) -> None:
    route.mock(return_value=httpx.Response(401, json={"code": 401, "message": "invalid api key"}))
    error = await fetch_error(client, gate)
    assert "KEYAPI_API_KEY" in str(error)
    assert "«invalid api key»" in str(error)


async def test_out_of_credits_points_to_the_dashboard(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate
) -> None:
    route.mock(return_value=httpx.Response(402, text="Payment Required"))
    error = await fetch_error(client, gate)
    assert isinstance(error, OutOfCredits)
    assert "keyapi.ai/app/dashboard" in str(error)


# ---------------------------------------------------------------------------------------------
# Retries: 429, 5xx, error envelopes, connect errors


async def test_rate_limit_then_success_retries_after_the_retry_after_delay(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate, fake_time: FakeTime
) -> None:
    route.side_effect = [httpx.Response(429, headers={"Retry-After": "3"}), ok()]
    page = await client.fetch_page(IDS, 1, gate)
    assert page.rows == [ROW]
    assert route.call_count == 2
    assert fake_time.sleeps == [3.0]
    assert gate.charged == ["no", "yes"]
    assert [a.outcome for a in gate.attempts] == ["http_429", "ok"]


async def test_a_persistent_rate_limit_gives_rate_limited_after_three_attempts_saying_when_to_retry(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate, fake_time: FakeTime
) -> None:
    route.mock(return_value=httpx.Response(429, headers={"Retry-After": "2"}, json={"code": 429, "message": "slow"}))
    error = await fetch_error(client, gate)
    assert isinstance(error, RateLimited)
    assert str(error).startswith("[rate_limited]")
    assert "Retry in about 2 s" in str(error)
    assert route.call_count == MAX_ATTEMPTS == 3
    assert fake_time.sleeps == [2.0, 2.0]
    assert gate.charged == ["no", "no", "no"]


async def test_a_rate_limit_without_retry_after_backs_off_with_bounded_jitter(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate, fake_time: FakeTime
) -> None:
    route.side_effect = [httpx.Response(429), httpx.Response(429), ok()]
    await client.fetch_page(IDS, 1, gate)
    first, second = fake_time.sleeps
    assert BACKOFF_BASE_SECONDS / 2 <= first <= BACKOFF_BASE_SECONDS
    assert BACKOFF_BASE_SECONDS <= second <= 2 * BACKOFF_BASE_SECONDS


async def test_a_retry_after_longer_than_the_retry_budget_fails_at_once_and_says_when(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate, fake_time: FakeTime
) -> None:
    route.mock(return_value=httpx.Response(429, headers={"Retry-After": "120"}))
    error = await fetch_error(client, gate)
    assert isinstance(error, RateLimited)
    assert "120 s" in str(error)
    assert route.call_count == 1
    assert fake_time.sleeps == []


async def test_retries_stop_when_the_next_wait_would_exceed_the_retry_budget(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate, fake_time: FakeTime
) -> None:
    wait = RETRY_BUDGET_SECONDS * 0.6
    route.mock(return_value=httpx.Response(429, headers={"Retry-After": str(wait)}))
    error = await fetch_error(client, gate)
    assert isinstance(error, RateLimited)
    assert route.call_count == 2
    assert fake_time.sleeps == [wait]
    assert sum(fake_time.sleeps) <= RETRY_BUDGET_SECONDS


async def test_an_unusable_retry_after_falls_back_to_backoff_without_crashing(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate, fake_time: FakeTime
) -> None:
    route.side_effect = [
        httpx.Response(429, headers={"Retry-After": "inf"}),
        httpx.Response(429, headers={"Retry-After": "soon"}),
        ok(),
    ]
    await client.fetch_page(IDS, 1, gate)
    assert len(fake_time.sleeps) == 2
    assert all(0 < s <= BACKOFF_MAX_SECONDS for s in fake_time.sleeps)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
async def test_server_errors_are_retried_until_success(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate, fake_time: FakeTime, status: int
) -> None:
    route.side_effect = [httpx.Response(status), httpx.Response(status), ok()]
    page = await client.fetch_page(IDS, 1, gate)
    assert page.rows == [ROW]
    assert route.call_count == 3
    assert len(fake_time.sleeps) == 2
    assert gate.charged == ["no", "no", "yes"]


async def test_persistent_server_errors_give_upstream_error_after_three_attempts(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate, fake_time: FakeTime
) -> None:
    route.mock(return_value=httpx.Response(503, json={"code": 503, "message": "maintenance window"}))
    error = await fetch_error(client, gate)
    assert type(error) is UpstreamError
    assert str(error).startswith("[upstream_error]")
    assert "HTTP 503" in str(error)
    assert "«maintenance window»" in str(error)
    assert route.call_count == MAX_ATTEMPTS
    assert len(fake_time.sleeps) == MAX_ATTEMPTS - 1
    assert sum(fake_time.sleeps) <= RETRY_BUDGET_SECONDS
    assert gate.charged == ["no"] * MAX_ATTEMPTS


async def test_an_error_envelope_on_http_200_is_retried_then_succeeds(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate, fake_time: FakeTime
) -> None:
    route.side_effect = [envelope(500, "busy"), ok()]
    assert (await client.fetch_page(IDS, 1, gate)).rows == [ROW]
    assert len(fake_time.sleeps) == 1
    assert gate.charged == ["no", "yes"]
    assert gate.attempts[0].outcome == "envelope_500"


async def test_a_persistent_error_envelope_gives_upstream_error_quoting_the_upstream_message(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate
) -> None:
    route.mock(return_value=envelope(10001, "video_ids parameter error"))
    error = await fetch_error(client, gate)
    assert type(error) is UpstreamError
    assert str(error).startswith("[upstream_error]")
    assert "10001" in str(error)
    assert "Upstream said: «video_ids parameter error»" in str(error)
    assert route.call_count == MAX_ATTEMPTS
    assert error.request_id == "rid-env"


@pytest.mark.parametrize(
    ("code", "error_class"),
    [(401, Unauthorized), (403, Unauthorized), (402, OutOfCredits), ("401", Unauthorized), ("402", OutOfCredits)],
)
async def test_an_auth_or_credit_envelope_maps_to_its_code_without_retry(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate, code: object, error_class: type[KeyAPIError]
) -> None:
    route.mock(return_value=envelope(code, "refused"))
    error = await fetch_error(client, gate)
    assert type(error) is error_class
    assert "«refused»" in str(error)
    assert route.call_count == 1


@pytest.mark.parametrize("code", [400, "400"])
async def test_a_bad_request_envelope_is_not_retried(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate, code: object
) -> None:
    route.mock(return_value=envelope(code, "bad video_ids"))
    error = await fetch_error(client, gate)
    assert type(error) is UpstreamError
    assert "«bad video_ids»" in str(error)
    assert route.call_count == 1


async def test_a_rate_limit_envelope_is_retried(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate, fake_time: FakeTime
) -> None:
    route.mock(return_value=envelope(429, "too many"))
    error = await fetch_error(client, gate)
    assert isinstance(error, RateLimited)
    assert route.call_count == MAX_ATTEMPTS


async def test_a_connect_error_is_retried_and_was_not_charged(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate, fake_time: FakeTime
) -> None:
    route.side_effect = [httpx.ConnectError, httpx.ConnectTimeout, ok()]
    assert (await client.fetch_page(IDS, 1, gate)).rows == [ROW]
    assert route.call_count == 3
    assert len(fake_time.sleeps) == 2
    assert gate.charged == ["no", "no", "yes"]
    assert [a.http_status for a in gate.attempts] == [None, None, 200]


async def test_persistent_connect_errors_give_upstream_error_saying_nothing_was_charged(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate
) -> None:
    route.side_effect = httpx.ConnectError
    error = await fetch_error(client, gate)
    assert type(error) is UpstreamError
    assert "nothing was charged" in str(error)
    assert route.call_count == MAX_ATTEMPTS


# ---------------------------------------------------------------------------------------------
# Outcomes that may have been charged: never retried silently


async def test_a_read_timeout_gives_timeout_without_retry_and_counts_as_uncertain(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate, fake_time: FakeTime
) -> None:
    route.side_effect = [httpx.ReadTimeout, ok()]
    error = await fetch_error(client, gate)
    assert type(error) is UpstreamTimeout
    assert str(error).startswith("[timeout]")
    assert "KEYAPI_TIMEOUT_SECONDS" in str(error)
    assert route.call_count == 1
    assert fake_time.sleeps == []
    assert gate.charged == ["uncertain"]
    assert gate.attempts[0].outcome == "timeout"


async def test_a_connection_lost_after_sending_gives_upstream_error_without_retry(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate
) -> None:
    route.side_effect = [httpx.RemoteProtocolError("peer closed connection"), ok()]
    error = await fetch_error(client, gate)
    assert type(error) is UpstreamError
    assert "may have been charged" in str(error)
    assert route.call_count == 1
    assert gate.charged == ["uncertain"]


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body><h1>502 Bad Gateway</h1></body></html>",
        b'{"code": 0, "message": "success", "data": [{"video_id": "75217',
        b"",
        b"\xff\xfe\x00garbage",
        b'["code", 0]',
        b'{"message": "success", "data": []}',
    ],
)
async def test_a_200_body_that_is_not_the_documented_json_gives_upstream_error_without_retry(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate, body: bytes
) -> None:
    route.mock(return_value=httpx.Response(200, content=body, headers={"content-type": "text/html"}))
    error = await fetch_error(client, gate)
    assert type(error) is UpstreamError
    assert str(error).startswith("[upstream_error]")
    assert "not the documented JSON" in str(error)
    assert route.call_count == 1
    assert gate.charged == ["uncertain"]


async def test_success_whose_data_is_not_a_list_is_an_upstream_error_counted_as_charged(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate
) -> None:
    route.mock(return_value=httpx.Response(200, json={"code": 0, "data": {"rows": []}}))
    error = await fetch_error(client, gate)
    assert type(error) is UpstreamError
    assert route.call_count == 1
    assert gate.charged == ["yes"]


async def test_an_oversized_body_is_refused(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "MAX_BODY_BYTES", 64)
    route.mock(return_value=ok([ROW] * 10))
    error = await fetch_error(client, gate)
    assert type(error) is UpstreamError
    assert "oversized" in str(error)
    assert gate.charged == ["uncertain"]


async def test_a_cancelled_request_is_settled_as_uncertain(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate
) -> None:
    started = asyncio.Event()

    async def hang(request: httpx.Request) -> httpx.Response:
        started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    route.side_effect = hang
    task = asyncio.create_task(client.fetch_page(IDS, 1, gate))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gate.charged == ["uncertain"]
    assert gate.attempts[0].outcome == "cancelled"


async def test_a_call_cancelled_while_waiting_for_the_rate_limiter_releases_its_credit(
    route: respx.Route, gate: RecordingGate
) -> None:
    waiting = asyncio.Event()

    async def blocked_sleep(_: float) -> None:
        waiting.set()
        await asyncio.Event().wait()

    clock = ManualClock()
    limiter = RateLimiter(1.0, clock=clock, sleep=blocked_sleep)
    await limiter.acquire()  # takes the free slot: the next caller must wait
    route.mock(return_value=ok())
    async with httpx.AsyncClient(verify=SSL_CONTEXT) as http:
        client = KeyAPIClient(http, api_key=TEST_API_KEY, base_url=BASE, rate_limiter=limiter)
        task = asyncio.create_task(client.fetch_page(IDS, 1, gate))
        await waiting.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert route.call_count == 0
    assert gate.charged == ["no"]


# ---------------------------------------------------------------------------------------------
# The credit gate


async def test_the_gate_sees_one_reserve_and_one_settle_per_attempt_with_the_attempt_details(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate
) -> None:
    route.side_effect = [httpx.Response(500), httpx.ConnectError, ok(request_id="rid-3")]
    await client.fetch_page(IDS, 7, gate)
    assert gate.reserved == [(len(IDS), 7)] * 3
    assert [r for r, _ in gate.settled] == ["reservation-1", "reservation-2", "reservation-3"]
    last = gate.attempts[-1]
    assert last == Attempt(ids_count=2, page=7, http_status=200, outcome="ok", charged="yes", request_id="rid-3")
    assert gate.attempts[0].http_status == 500
    assert gate.attempts[0].outcome == "http_500"


async def test_a_refused_reservation_makes_no_request(client: KeyAPIClient, route: respx.Route) -> None:
    route.mock(return_value=ok())
    refusing = RecordingGate(refuse_at=1)
    with pytest.raises(BudgetExceeded):
        await client.fetch_page(IDS, 1, refusing)
    assert route.call_count == 0
    assert refusing.settled == []


async def test_a_refused_reservation_stops_the_retries(
    client: KeyAPIClient, route: respx.Route, fake_time: FakeTime
) -> None:
    route.mock(return_value=httpx.Response(503))
    refusing = RecordingGate(refuse_at=2)
    with pytest.raises(BudgetExceeded):
        await client.fetch_page(IDS, 1, refusing)
    assert route.call_count == 1
    assert refusing.charged == ["no"]


# ---------------------------------------------------------------------------------------------
# The API key never leaks


def key_echo(status: int, code: int) -> Any:
    def respond(request: httpx.Request) -> httpx.Response:
        auth = request.headers["authorization"]
        return httpx.Response(
            status,
            json={"code": code, "message": f"bad credentials: {auth} (key {TEST_API_KEY})", "requestId": auth},
        )

    return respond


@pytest.mark.parametrize(("status", "code"), [(401, 401), (402, 402), (400, 400), (503, 503), (429, 429), (200, 500)])
async def test_an_upstream_echoing_the_key_does_not_leak_it_into_the_error(
    client: KeyAPIClient,
    route: respx.Route,
    gate: RecordingGate,
    caplog: pytest.LogCaptureFixture,
    status: int,
    code: int,
) -> None:
    caplog.set_level(logging.DEBUG)
    route.side_effect = key_echo(status, code)
    error = await fetch_error(client, gate)
    assert "bad credentials" in str(error)  # the message is still quoted...
    assert "***" in str(error)  # ...with the key replaced
    assert_no_key(
        str(error),
        error.render(),
        error.message,
        error.hint or "",
        repr(error),
        "".join(traceback.format_exception(error)),
        caplog.text,
        str(error.request_id),
        *(str(a) for a in gate.attempts),
    )


async def test_a_key_cut_by_the_message_length_cap_leaves_no_prefix_of_it(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate
) -> None:
    # The key straddles the 200-character cap on quoted upstream text.
    message = "x" * 180 + " " + TEST_API_KEY
    route.mock(return_value=httpx.Response(401, json={"code": 401, "message": message}))
    error = await fetch_error(client, gate)
    assert_no_key(str(error))


async def test_upstream_text_in_errors_is_cleaned_of_control_characters(
    client: KeyAPIClient, route: respx.Route, gate: RecordingGate
) -> None:
    route.mock(return_value=httpx.Response(403, json={"code": 403, "message": "no\u202e access\n[ok] fine\x1b[0m"}))
    error = await fetch_error(client, gate)
    assert "\u202e" not in str(error)
    assert "\n" not in str(error)
    assert "\x1b" not in str(error)


# ---------------------------------------------------------------------------------------------
# RateLimiter, backoff_seconds, retry_after_seconds


class ManualClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)


async def test_rate_limiter_spaces_simultaneous_callers_one_interval_apart() -> None:
    clock = ManualClock()
    limiter = RateLimiter(4.0, clock=clock, sleep=clock.sleep)
    await asyncio.gather(*(limiter.acquire() for _ in range(4)))
    assert clock.sleeps == pytest.approx([0.25, 0.5, 0.75])


async def test_rate_limiter_lets_the_first_call_through_without_waiting() -> None:
    clock = ManualClock()
    clock.now = 500.0
    limiter = RateLimiter(1.0, clock=clock, sleep=clock.sleep)
    await limiter.acquire()
    assert clock.sleeps == []


async def test_rate_limiter_waits_only_for_the_rest_of_the_interval() -> None:
    clock = ManualClock()
    limiter = RateLimiter(2.0, clock=clock, sleep=clock.sleep)
    await limiter.acquire()
    clock.now += 0.2
    await limiter.acquire()
    assert clock.sleeps == pytest.approx([0.3])


async def test_rate_limiter_does_not_bank_idle_time_into_a_burst() -> None:
    clock = ManualClock()
    limiter = RateLimiter(2.0, clock=clock, sleep=clock.sleep)
    await limiter.acquire()
    clock.now += 100.0
    await asyncio.gather(limiter.acquire(), limiter.acquire(), limiter.acquire())
    assert clock.sleeps == pytest.approx([0.5, 1.0])


@pytest.mark.parametrize("attempt", range(1, 12))
def test_backoff_is_jittered_between_half_and_all_of_an_exponential_ceiling(attempt: int) -> None:
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (attempt - 1))
    low = backoff_seconds(attempt, rng=lambda: 0.0)
    high = backoff_seconds(attempt, rng=lambda: 0.999999)
    assert low == pytest.approx(ceiling / 2)
    assert high == pytest.approx(ceiling, rel=1e-5)
    assert 0 < low <= high <= BACKOFF_MAX_SECONDS


def test_backoff_grows_and_then_stays_capped() -> None:
    lows = [backoff_seconds(n, rng=lambda: 0.0) for n in range(1, 12)]
    assert lows == sorted(lows)
    assert lows[-1] == BACKOFF_MAX_SECONDS / 2


def test_backoff_with_real_jitter_stays_in_bounds() -> None:
    samples = [backoff_seconds(2) for _ in range(200)]
    assert all(BACKOFF_BASE_SECONDS <= s <= 2 * BACKOFF_BASE_SECONDS for s in samples)
    assert len(set(samples)) > 1


def test_default_backoff_over_all_attempts_fits_the_retry_budget() -> None:
    assert sum(backoff_seconds(n, rng=lambda: 1.0) for n in range(1, MAX_ATTEMPTS)) <= RETRY_BUDGET_SECONDS


def _with_retry_after(value: str | None) -> str | None:
    return value  # the header's value, as the client reads it off the response


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("5", 5.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("-3", 0.0),
        (None, None),
        ("", None),
        ("soon", None),
        ("inf", None),
        ("nan", None),
        ("1e400", None),
    ],
)
def test_retry_after_delta_seconds(value: str | None, expected: float | None) -> None:
    assert retry_after_seconds(_with_retry_after(value)) == expected


def test_retry_after_http_date_is_relative_to_now() -> None:
    now = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
    later = email.utils.format_datetime(now + timedelta(seconds=42), usegmt=True)
    assert retry_after_seconds(_with_retry_after(later), now=lambda: now.timestamp()) == pytest.approx(42.0)


def test_retry_after_http_date_in_the_past_means_now() -> None:
    now = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
    earlier = email.utils.format_datetime(now - timedelta(minutes=5), usegmt=True)
    assert retry_after_seconds(_with_retry_after(earlier), now=lambda: now.timestamp()) == 0.0


def test_retry_after_http_date_without_a_zone_is_read_as_utc_not_local_time() -> None:
    now = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds(
        _with_retry_after("Mon, 05 Jan 2026 12:00:30 -0000"), now=lambda: now.timestamp()
    ) == pytest.approx(30.0)
