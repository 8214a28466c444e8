"""The httpx transport for upstream requests: lazy TLS, and httpcore on plain asyncio streams.

Why not `httpx.AsyncHTTPTransport`:

- Its constructor always builds an `ssl.SSLContext` (`httpx.create_ssl_context`), even with `verify=False`
  and even when every request is `http://`: ~0.5 MB of RSS for a context a plain-HTTP upstream (the fake
  upstream, a local proxy) never uses. `UpstreamTransport` builds one only when the first `https://`
  request arrives.
- Its httpcore pool runs on httpcore's anyio network backend, which wraps every socket read and write in
  anyio cancel scopes and stream layers. `AsyncioBackend` reads and writes asyncio's own `StreamReader` /
  `StreamWriter` under `asyncio.timeout`: ~10% less time per loopback GET than `AsyncHTTPTransport` (median
  ~690 µs instead of ~775 µs against the fake upstream in another process, measured interleaved).

Requests, responses and errors are exactly httpx's: httpcore exceptions become the httpx exception of the
same name, so `except httpx.ConnectError / TimeoutException / TransportError` in callers keeps working, and
`respx` (which patches `httpcore.AsyncConnectionPool`) mocks this transport as it mocks httpx's own.

Importing this module imports httpx: import it lazily, after `keyapi_mcp.client._load_httpx()`, so httpx's
command-line client is not loaded with it.
"""

from __future__ import annotations

import asyncio
import select
import ssl
import sys
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import Any, cast

import httpcore
import httpx

__all__ = ["AsyncioBackend", "AsyncioStream", "UpstreamTransport"]

# RFC 8305's recommended delay, and anyio's `connect_tcp` default (the backend this one replaces): a host
# whose first address (say a broken IPv6 route) hangs still gets its next address tried 250 ms later.
HAPPY_EYEBALLS_DELAY = 0.25

_USE_POLL = sys.platform != "win32" and hasattr(select, "poll")


def _socket_is_readable(sock: Any) -> bool:
    """Whether a read on the socket would return at once (data, EOF or an error), without reading.

    `select.poll` where it exists: `select.select` fails for descriptors >= FD_SETSIZE (1024), which a busy
    server reaches, and a failure here reads as "readable", i.e. every kept-alive connection discarded.
    """
    try:
        fd = sock.fileno()
        if fd < 0:
            return True
        if _USE_POLL:
            poller = select.poll()
            poller.register(fd, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([fd], [], [], 0)[0])
    except (OSError, ValueError, AttributeError):
        return True  # a socket we cannot examine is not one to reuse


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One TCP (optionally TLS) connection, as httpcore's network stream, over asyncio's streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:  # noqa: ASYNC109  (httpcore's interface)
        # b"" at EOF, as httpcore expects.
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as exc:
            raise httpcore.ReadTimeout(str(exc) or "timed out reading from the server") from exc
        except OSError as exc:  # resets, and ssl.SSLError (an OSError) on a TLS stream
            raise httpcore.ReadError(str(exc) or type(exc).__name__) from exc

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:  # noqa: ASYNC109  (httpcore's interface)
        if not buffer:
            return
        try:
            self._writer.write(buffer)
            async with asyncio.timeout(timeout):
                await self._writer.drain()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(str(exc) or "timed out writing to the server") from exc
        except OSError as exc:
            raise httpcore.WriteError(str(exc) or type(exc).__name__) from exc

    async def aclose(self) -> None:
        """Close without waiting for the peer, and without raising if it has already gone.

        `StreamWriter.wait_closed()` is not awaited: a plain transport with unsent data waits until the
        peer reads it, which a stalled server never does (httpcore closes exactly such connections after a
        write timeout). Unsent data is dropped instead (`abort`): a connection httpcore closes is done
        with or broken. A TLS transport finishes its close_notify in the background, bounded by asyncio's
        SSL shutdown timeout.
        """
        transport = self._writer.transport
        if transport.is_closing():
            return
        transport.close()
        if transport.get_write_buffer_size() and transport.get_extra_info("ssl_object") is None:
            transport.abort()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore's interface)
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError as exc:
            await self.aclose()
            raise httpcore.ConnectTimeout(str(exc) or "timed out in the TLS handshake") from exc
        except OSError as exc:  # ssl.SSLError (certificate verification included) is an OSError
            await self.aclose()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        # `StreamWriter.start_tls` swaps the writer's and the reader's transport in place: same stream.
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return self._is_readable()
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        return None

    def _is_readable(self) -> bool:
        """Whether the server has sent anything (usually: closed) on this connection since the last response.

        httpcore asks this of an idle kept-alive connection before reusing it; True makes it discard the
        connection and open a new one instead of sending a request the server will never answer.
        asyncio's event loop reads sockets eagerly, so a FIN that arrived before the last loop iteration is
        already in the `StreamReader` (EOF, or a reset as its exception) and the socket polls empty; one
        that arrived since is still in the socket. Both are checked. Unread bytes in the reader's buffer
        (a server talking out of turn) make the connection unusable too: `_buffer` is private, but has been
        the StreamReader's buffer in every Python since asyncio's first release.
        """
        reader = self._reader
        if reader.at_eof() or reader.exception() is not None or getattr(reader, "_buffer", None):
            return True
        if self._writer.is_closing():
            return True
        return _socket_is_readable(self._writer.get_extra_info("socket"))


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend on asyncio's streams (TCP only: we never connect to Unix sockets).

    `connect_unix_socket` is left to the base class, which raises NotImplementedError: httpcore calls it
    only for a pool built with `uds=`, which `UpstreamTransport` never does.
    """

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        # asyncio sets TCP_NODELAY on every TCP socket it connects (selector_events._set_nodelay), and so does
        # uvloop: no setsockopt needed here for small requests to leave at once.
        options: dict[str, Any] = {}
        if isinstance(asyncio.get_running_loop(), asyncio.BaseEventLoop):
            # asyncio's own loops take it; others may not (uvloop, which uvicorn picks when installed, raises
            # TypeError on the keyword).
            options["happy_eyeballs_delay"] = HAPPY_EYEBALLS_DELAY
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(
                    host, port, local_addr=(local_address, 0) if local_address else None, **options
                )
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(str(exc) or f"timed out connecting to {host}:{port}") from exc
        except OSError as exc:  # refused, unreachable, DNS failure (socket.gaierror)
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from exc
        stream = AsyncioStream(reader, writer)
        if socket_options:
            sock = writer.get_extra_info("socket")
            try:
                for option in socket_options:
                    sock.setsockopt(*option)
            except OSError as exc:
                await stream.aclose()
                raise httpcore.ConnectError(str(exc)) from exc
        return stream

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


# httpcore's exceptions, and the httpx exception of the same name each becomes (httpx's own transport maps
# the same pairs). Looked up along the exception's MRO, so the most specific class wins.
_HTTPX_ERRORS: dict[type[Exception], type[httpx.TransportError]] = {
    httpcore.TimeoutException: httpx.TimeoutException,
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.PoolTimeout: httpx.PoolTimeout,
    httpcore.NetworkError: httpx.NetworkError,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
    httpcore.ProxyError: httpx.ProxyError,
    httpcore.UnsupportedProtocol: httpx.UnsupportedProtocol,
    httpcore.ProtocolError: httpx.ProtocolError,
    httpcore.LocalProtocolError: httpx.LocalProtocolError,
    httpcore.RemoteProtocolError: httpx.RemoteProtocolError,
}


def _httpx_error(exc: Exception, request: httpx.Request) -> httpx.TransportError | None:
    """The httpx exception for an httpcore one (None for any other exception, which propagates as is).

    Unlike httpx's transport, the request is attached, so `exc.request` works for callers and logs.
    """
    for cls in type(exc).__mro__:
        target = _HTTPX_ERRORS.get(cls)
        if target is not None:
            return target(str(exc), request=request)
    return None


class _ResponseStream(httpx.AsyncByteStream):
    """An httpcore response body as an httpx one: the same chunks, errors raised as httpx's."""

    def __init__(self, stream: AsyncIterable[bytes], request: httpx.Request) -> None:
        self._stream = stream
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._stream:
                yield chunk
        except Exception as exc:
            mapped = _httpx_error(exc, self._request)
            if mapped is None:
                raise
            raise mapped from exc

    async def aclose(self) -> None:
        # Returns the connection to the pool (or closes it, if the body was not read to the end).
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()


_SSL_CONTEXTS: dict[bool, ssl.SSLContext] = {}


def _ssl_context(verify: bool) -> ssl.SSLContext:
    """One TLS context per `verify` setting for the whole process, made when first needed.

    A context is ~0.5 MB of RSS and, verified, a few ms of loading CA certificates; it is safe to share
    between connections, pools and event loops, and every `UpstreamTransport` (the client runs several
    small pools) would otherwise build an identical one.
    """
    context = _SSL_CONTEXTS.get(verify)
    if context is None:
        context = _SSL_CONTEXTS[verify] = httpx.create_ssl_context(verify=verify)
    return context


class UpstreamTransport(httpx.AsyncBaseTransport):
    """An httpx transport: an httpcore connection pool on `AsyncioBackend`, with TLS set up only if used.

    Design: up to two pools, each created by the first request that needs it: one for `http://` (and
    `ws://`) built with `ssl_context=None`, one for `https://` (and `wss://`) built with the TLS context
    for `verify`. A pool's context cannot be set after construction, and httpcore's own fallback for an
    https request in a pool without one is `default_ssl_context()`, a verified context that would ignore
    `verify=False`; routing by scheme means the plain pool never sees a TLS request, so it never builds or
    uses a context, and the TLS pool always has ours. One upstream uses one scheme, so in practice there
    is one pool and `max_connections` is the connection limit; were both schemes used, each pool would
    have its own `max_connections`.

    Requests and responses map to and from httpcore exactly as in `httpx.AsyncHTTPTransport`, and so do
    exceptions (httpcore's become httpx's). The pool keeps every connection it opens alive
    (`max_keepalive_connections == max_connections`) for `keepalive_expiry` seconds of idleness.
    """

    def __init__(self, *, verify: bool = True, max_connections: int, keepalive_expiry: float = 5.0) -> None:
        self._verify = verify
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._plain_pool: httpcore.AsyncConnectionPool | None = None
        self._tls_pool: httpcore.AsyncConnectionPool | None = None

    def _new_pool(self, ssl_context: ssl.SSLContext | None) -> httpcore.AsyncConnectionPool:
        return httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=self._max_connections,
            max_keepalive_connections=self._max_connections,
            keepalive_expiry=self._keepalive_expiry,
            network_backend=AsyncioBackend(),
        )

    def _pool_for(self, scheme: bytes) -> httpcore.AsyncConnectionPool:
        # No await between the check and the assignment: concurrent first requests make one pool.
        if scheme in (b"https", b"wss"):
            if self._tls_pool is None:
                self._tls_pool = self._new_pool(_ssl_context(self._verify))
            return self._tls_pool
        # http, and anything else: httpcore's pool rejects an unknown scheme (UnsupportedProtocol)
        # before connecting, as httpx's transport does.
        if self._plain_pool is None:
            self._plain_pool = self._new_pool(None)
        return self._plain_pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        try:
            response = await self._pool_for(url.raw_scheme).handle_async_request(core_request)
        except Exception as exc:
            mapped = _httpx_error(exc, request)
            if mapped is None:
                raise
            raise mapped from exc
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            # An async pool's response stream is async (httpx asserts as much; a cast costs nothing).
            stream=_ResponseStream(cast("AsyncIterable[bytes]", response.stream), request),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        for pool in (self._plain_pool, self._tls_pool):
            if pool is not None:
                await pool.aclose()
