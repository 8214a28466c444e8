"""UpstreamTransport: httpx requests over httpcore on asyncio streams, TLS only when an https URL needs it.

Most tests talk to `LocalServer`, a few lines of asyncio HTTP/1.1 on 127.0.0.1 whose every reply (and
misbehaviour) the test scripts, and which counts the connections it accepts.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import shutil
import socket
import ssl
import struct
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
import respx

from keyapi_mcp import transport as transport_module
from keyapi_mcp.transport import AsyncioStream, UpstreamTransport

pytestmark = pytest.mark.anyio

# Called with each request's head; writes the reply and says whether to keep the connection open.
Responder = Callable[[bytes, asyncio.StreamWriter], Awaitable[bool]]


def reply(status: int = 200, body: bytes = b"hello", headers: dict[str, str] | None = None) -> bytes:
    head = f"HTTP/1.1 {status} Whatever\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    return head.encode() + b"\r\n" + body


def answer(status: int = 200, body: bytes = b"hello", headers: dict[str, str] | None = None) -> Responder:
    async def respond(head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(reply(status, body, headers))
        await writer.drain()
        return True

    return respond


class LocalServer:
    """An HTTP/1.1 server on 127.0.0.1 (TLS with `ssl_context`) answering every request with `respond`."""

    def __init__(self, respond: Responder, ssl_context: ssl.SSLContext | None = None) -> None:
        self.respond = respond
        self.ssl_context = ssl_context
        self.accepted = 0  # connections accepted
        self.heads: list[bytes] = []  # request heads received, in order
        self.closed = asyncio.Event()  # set whenever a connection has been closed
        self._tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> LocalServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        self.port: int = self._server.sockets[0].getsockname()[1]
        self.url = f"{'https' if self.ssl_context else 'http'}://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.accepted += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                self.heads.append(head)
                if not await self.respond(head, writer):
                    break
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            self.closed.set()


def get(url: str, timeout: float = 2.0) -> httpx.Request:
    """A GET as `UpstreamPool` builds it: explicit per-phase timeouts in the request's extensions."""
    timeouts = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
    return httpx.Request("GET", url, headers={"Authorization": "Bearer k"}, extensions={"timeout": timeouts})


async def fetch(transport: httpx.AsyncBaseTransport, request: httpx.Request) -> httpx.Response:
    response = await transport.handle_async_request(request)
    try:
        await response.aread()
    finally:
        await response.aclose()
    return response


@pytest.fixture
async def transport() -> AsyncIterator[UpstreamTransport]:
    async with UpstreamTransport(verify=False, max_connections=4) as t:
        yield t


async def test_a_get_returns_status_headers_and_body_and_kept_alive_connections_are_reused(
    transport: UpstreamTransport,
) -> None:
    async with LocalServer(answer(201, b"hello world", {"X-Test": "yes"})) as server:
        first = await fetch(transport, get(server.url + "/v1/path?video_ids=1%2C2&page_num=1"))
        second = await fetch(transport, get(server.url + "/other"))
    assert first.status_code == 201 and first.reason_phrase == "Whatever"
    assert first.headers["X-Test"] == "yes"
    assert first.content == b"hello world" and second.content == b"hello world"
    assert first.extensions["http_version"] == b"HTTP/1.1"
    assert server.accepted == 1, "the second request did not reuse the kept-alive connection"
    request_line, *header_lines = server.heads[0].decode().split("\r\n")
    assert request_line == "GET /v1/path?video_ids=1%2C2&page_num=1 HTTP/1.1"
    assert f"Host: 127.0.0.1:{server.port}" in header_lines
    assert "Authorization: Bearer k" in header_lines
    assert server.heads[1].startswith(b"GET /other HTTP/1.1\r\n")
    stream = first.extensions["network_stream"]
    assert isinstance(stream, AsyncioStream)
    assert stream.get_extra_info("server_addr") == ("127.0.0.1", server.port)
    assert stream.get_extra_info("client_addr")[0] == "127.0.0.1"
    assert stream.get_extra_info("ssl_object") is None
    assert stream.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


async def test_an_idle_connection_the_server_closed_is_replaced_by_a_new_one(transport: UpstreamTransport) -> None:
    async def answer_then_hang_up(head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(reply(body=b"once"))  # no "Connection: close": the client keeps the connection
        await writer.drain()
        return False

    async with LocalServer(answer_then_hang_up) as server:
        first = await fetch(transport, get(server.url + "/a"))
        stream = first.extensions["network_stream"]
        with anyio.fail_after(2):
            await server.closed.wait()
        assert stream.get_extra_info("is_readable") is True  # what tells httpcore not to reuse it
        second = await fetch(transport, get(server.url + "/b"))
    assert first.content == second.content == b"once"
    assert server.accepted == 2


async def test_an_idle_connection_the_server_wrote_junk_to_is_not_reused(transport: UpstreamTransport) -> None:
    send_junk = asyncio.Event()

    async def answer_then_junk(head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(reply())
        await writer.drain()
        if not send_junk.is_set():  # the first connection only
            await send_junk.wait()
            writer.write(b"junk")  # out of turn: no request is pending
            await writer.drain()
        return True

    async with LocalServer(answer_then_junk) as server:
        first = await fetch(transport, get(server.url))
        stream = first.extensions["network_stream"]
        send_junk.set()
        for _ in range(2000):  # until the event loop has read the junk into the StreamReader (the socket is empty)
            if stream._reader._buffer:
                break
            await asyncio.sleep(0.001)
        assert stream._reader._buffer == b"junk"
        assert stream.get_extra_info("is_readable") is True
        second = await fetch(transport, get(server.url))
    assert second.content == b"hello"
    assert server.accepted == 2


async def test_a_live_idle_connection_is_not_readable(transport: UpstreamTransport) -> None:
    async with LocalServer(answer()) as server:
        response = await fetch(transport, get(server.url))
        await asyncio.sleep(0.01)  # the loop has run: nothing arrived, nothing buffered
        assert response.extensions["network_stream"].get_extra_info("is_readable") is False


async def test_http_requests_create_no_tls_context(
    transport: UpstreamTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_tls(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("an SSL context was created for an http:// request")

    monkeypatch.setattr(transport_module, "_SSL_CONTEXTS", {})
    monkeypatch.setattr(ssl.SSLContext, "__new__", no_tls)  # every context: httpx's, httpcore's default, ours
    async with LocalServer(answer()) as server:
        for _ in range(2):
            assert (await fetch(transport, get(server.url))).status_code == 200
    assert transport._tls_pool is None and transport._plain_pool is not None
    assert transport_module._SSL_CONTEXTS == {}


async def test_the_connection_limit_is_max_connections() -> None:
    async def slow(head: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(0.02)
        writer.write(reply())
        await writer.drain()
        return True

    async with UpstreamTransport(verify=False, max_connections=2) as transport, LocalServer(slow) as server:
        responses = await asyncio.gather(*(fetch(transport, get(server.url)) for _ in range(6)))
    assert [r.status_code for r in responses] == [200] * 6
    assert server.accepted == 2


async def test_a_server_that_does_not_answer_in_time_is_httpx_read_timeout(transport: UpstreamTransport) -> None:
    async def never(head: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(3600)
        return False

    async with LocalServer(never) as server:
        request = get(server.url, timeout=0.05)
        with pytest.raises(httpx.ReadTimeout) as caught:
            await fetch(transport, request)
    assert caught.value.request is request  # attached, unlike httpx's own transport


async def test_a_cancellation_from_outside_is_not_turned_into_a_read_timeout(transport: UpstreamTransport) -> None:
    async def never(head: bytes, writer: asyncio.StreamWriter) -> bool:
        await asyncio.sleep(3600)
        return False

    async with LocalServer(never) as server:
        with pytest.raises(TimeoutError):  # anyio's, from its own deadline: not httpx.ReadTimeout
            with anyio.fail_after(0.05):
                await fetch(transport, get(server.url, timeout=5.0))


async def test_a_refused_connection_is_httpx_connect_error(transport: UpstreamTransport) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(httpx.ConnectError):
        await fetch(transport, get(f"http://127.0.0.1:{port}/"))


async def test_a_connect_that_takes_too_long_is_httpx_connect_timeout(
    transport: UpstreamTransport, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def hang(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(3600)

    monkeypatch.setattr(asyncio, "open_connection", hang)
    with pytest.raises(httpx.ConnectTimeout):
        await fetch(transport, get("http://127.0.0.1:9/", timeout=0.05))


async def test_a_server_that_hangs_up_before_answering_is_httpx_remote_protocol_error(
    transport: UpstreamTransport,
) -> None:
    async def hang_up(head: bytes, writer: asyncio.StreamWriter) -> bool:
        return False

    async with LocalServer(hang_up) as server:
        with pytest.raises(httpx.RemoteProtocolError):
            await fetch(transport, get(server.url))


async def test_a_body_cut_short_is_httpx_remote_protocol_error_when_read(transport: UpstreamTransport) -> None:
    async def cut_short(head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        await writer.drain()
        return False

    async with LocalServer(cut_short) as server:
        request = get(server.url)
        response = await transport.handle_async_request(request)
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError) as caught:
            await response.aread()
        await response.aclose()
    assert caught.value.request is request


async def test_a_connection_reset_mid_body_is_httpx_read_error(transport: UpstreamTransport) -> None:
    headers_read = asyncio.Event()

    async def reset(head: bytes, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        await writer.drain()
        await headers_read.wait()
        linger_zero = struct.pack("ii", 1, 0)  # close() sends RST, not FIN
        writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_zero)
        writer.transport.abort()
        return False

    async with LocalServer(reset) as server:
        response = await transport.handle_async_request(get(server.url))
        headers_read.set()
        with anyio.fail_after(2):
            await server.closed.wait()
        with pytest.raises(httpx.ReadError):
            await response.aread()
        await response.aclose()


async def test_an_unsupported_scheme_is_httpx_unsupported_protocol(transport: UpstreamTransport) -> None:
    with pytest.raises(httpx.UnsupportedProtocol):
        await fetch(transport, get("ftp://127.0.0.1:9/"))


async def test_a_gzip_body_is_decoded_when_read() -> None:
    body = b'{"code": 0, "data": []}' * 50
    encoded = gzip.compress(body)
    async with (
        UpstreamTransport(max_connections=1) as transport,
        LocalServer(answer(body=encoded, headers={"Content-Encoding": "gzip"})) as server,
    ):
        response = await fetch(transport, get(server.url))
    assert response.content == body
    assert response.num_bytes_downloaded == len(encoded)


async def test_aclose_closes_the_kept_alive_connections() -> None:
    transport = UpstreamTransport(verify=False, max_connections=2)
    async with LocalServer(answer()) as server:
        await fetch(transport, get(server.url))
        assert not server.closed.is_set()
        await transport.aclose()
        with anyio.fail_after(2):
            await server.closed.wait()  # the server saw EOF


async def test_respx_intercepts_requests_sent_through_the_transport(transport: UpstreamTransport) -> None:
    with respx.mock(assert_all_called=True) as mock:
        route = mock.get("https://api.example.test/x", params={"page_num": "1"}).respond(
            200, json={"code": 0}, headers={"X-Mocked": "1"}
        )
        response = await fetch(transport, get("https://api.example.test/x?page_num=1"))
    assert route.call_count == 1
    assert route.calls.last.request.headers["Authorization"] == "Bearer k"
    assert response.status_code == 200 and response.json() == {"code": 0}
    assert response.headers["X-Mocked"] == "1"


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (no CA trusts it), made with the openssl command."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
            *("-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


@pytest.fixture
def server_tls(tls_files: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*tls_files)
    return context


async def test_https_builds_one_shared_tls_context_on_first_use_and_reuses_connections(
    server_tls: ssl.SSLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[bool] = []
    original = httpx.create_ssl_context

    def counted(*, verify: bool) -> ssl.SSLContext:
        made.append(verify)
        return original(verify=verify)

    monkeypatch.setattr(transport_module, "_SSL_CONTEXTS", {})
    monkeypatch.setattr(httpx, "create_ssl_context", counted)
    async with (
        UpstreamTransport(verify=False, max_connections=2) as one,
        UpstreamTransport(verify=False, max_connections=2) as other,
        LocalServer(answer(body=b"secret"), ssl_context=server_tls) as server,
    ):
        assert made == []  # nothing yet: the context is made by the first https request
        first = await fetch(one, get(server.url + "/a"))
        second = await fetch(one, get(server.url + "/b"))
        third = await fetch(other, get(server.url + "/c"))
    assert first.content == second.content == third.content == b"secret"
    assert made == [False]  # one context, shared by both transports
    assert one._plain_pool is None and one._tls_pool is not None
    assert server.accepted == 2  # one connection per transport: kept alive across TLS too
    ssl_object = first.extensions["network_stream"].get_extra_info("ssl_object")
    assert ssl_object is not None and ssl_object.version() is not None


async def test_https_with_verify_rejects_an_untrusted_certificate_as_httpx_connect_error(
    server_tls: ssl.SSLContext,
) -> None:
    async with (
        UpstreamTransport(verify=True, max_connections=1) as transport,
        LocalServer(answer(), ssl_context=server_tls) as server,
    ):
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await fetch(transport, get(server.url))
