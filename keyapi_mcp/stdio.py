"""MCP over stdio with the pipes read and written on the event loop: what `keyapi-mcp` serves by default.

Why: the SDK's stdio transport (`mcp.server.stdio.stdio_server()`) reads stdin and writes stdout through
`anyio.wrap_file`, so every line read, every write and every flush is a hop to a worker thread and back:
three per tool call. Doing that I/O natively on the asyncio loop took a one-tool server from 2.32 ms to
1.69 ms p50 per call on a 2-core machine. Only the byte transport changes: lines still go through
`stdio_server(stdin=..., stdout=...)`, so JSON-RPC parsing, serialisation and the single writer task (one
message never interleaves with another) stay the SDK's.

- Used only where that is safe: POSIX, and fd 0 and fd 1 both pipes/FIFOs or stream sockets (Node-based
  clients spawn servers on socketpairs). Otherwise (a terminal, a regular file, /dev/null, Windows, a
  failing `fstat`) the SDK's own `server.run("stdio")` serves, unchanged. Which path was taken is logged at
  DEBUG by the `keyapi_mcp.stdio` logger.
- `KEYAPI_MCP_STDIO=sdk` (a setting, see `keyapi_mcp.config`) forces the SDK's transport (to compare latency,
  or to rule this module out when chasing a problem); the default `native` means "native where safe".
- stdout hygiene, as in the SDK: the wire is served from private close-on-exec duplicates while fd 0
  points at /dev/null and fd 1 at stderr, so a stray `print()`, a C library or a child process can neither
  corrupt the protocol stream nor steal its input. Both are restored on exit.
- Lines of any length (an MCP message can be megabytes): lines are split here, with no limit, not by
  `StreamReader.readline()`, whose limit would reject a long line. Reading pauses while more than
  `READ_HIGH_WATER` bytes of complete lines wait to be consumed.
- Back-pressure: a message is handed to the kernel completely before the next one is taken (as the SDK's
  blocking flush does), so a client that reads slowly holds at most one message in memory.
- End: EOF on stdin ends the server as the SDK's does (lifespan shut down, exit status 0). A client that
  closes our stdout is treated as gone: no traceback, the remaining output is dropped and the server ends
  as on EOF.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any, BinaryIO, Literal, cast

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server

if sys.platform != "win32":  # the native path is POSIX-only; Windows always takes the SDK's
    import fcntl

log = logging.getLogger(__name__)

ENV_SWITCH = "KEYAPI_MCP_STDIO"
# Bytes of unconsumed input above which reading pauses (a single longer line is still read whole).
READ_HIGH_WATER = 1 << 20
# How long the end of a session waits for the client to take output that is still queued.
CLOSE_TIMEOUT_SECONDS = 5.0


def run_stdio(server: MCPServer[Any], *, mode: Literal["native", "sdk"] = "native") -> None:
    """Serve `server` over this process's stdin/stdout until EOF: the drop-in for `server.run("stdio")`.

    Synchronous like the SDK's entry, so the CLI swaps one call. Falls back to exactly that entry whenever
    the native path is not known to be safe, or the standard descriptors cannot be claimed.
    """
    kinds: list[str] = []  # filled by native_refusal: what fds 0 and 1 are, for the log line
    reason = native_refusal(mode, kinds)
    claim: _StdClaim | None = None
    if reason is None:
        try:
            claim = _StdClaim.acquire()
        except OSError as exc:
            reason = f"could not claim fds 0/1: {exc}"
    if claim is None:
        log.debug("stdio transport: the SDK's (%s)", reason)
        server.run("stdio")
        return
    log.debug("stdio transport: native asyncio (stdin: %s, stdout: %s)", *kinds)
    try:
        anyio.run(serve_pipes, server, claim.wire_in, claim.wire_out, backend="asyncio")
    finally:
        claim.release()


def native_refusal(mode: Literal["native", "sdk"] = "native", kinds: list[str] | None = None) -> str | None:
    """Why the native transport must not serve this process's stdio, or None when it may.

    When it may, `kinds` (if given) receives what fds 0 and 1 are ("pipe" or "socket").

    A terminal or a regular file cannot be watched by an event loop (a tty also has line-discipline
    subtleties the SDK's blocking reads handle), and Windows has no such pipe support in asyncio's
    selector loop; the SDK's thread-based transport serves all of those correctly.
    """
    if mode == "sdk":
        return f"{ENV_SWITCH}=sdk"
    if sys.platform == "win32":
        return "Windows"
    found = [_wire_kind(0), _wire_kind(1)]
    for name, kind in zip(("stdin", "stdout"), found, strict=True):
        if kind not in ("pipe", "socket"):
            return f"{name} is {kind}"
    if kinds is not None:
        kinds.extend(found)
    return None


def _wire_kind(fd: int) -> str:
    """'pipe' or 'socket' when the event loop can serve `fd`; otherwise a description for the log line."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        return f"not usable (fstat: {exc.strerror})"
    if stat.S_ISFIFO(mode):
        return "pipe"
    if stat.S_ISSOCK(mode):
        return "socket" if _is_stream_socket(fd) else "a non-stream socket"
    if os.isatty(fd):
        return "a terminal"
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISCHR(mode):
        return "a character device"
    return "not a pipe or socket"


def _is_stream_socket(fd: int) -> bool:
    """Whether `fd` is a SOCK_STREAM socket the core can wrap (it builds the same `socket.socket(fileno=)`)."""
    try:
        probe = socket.socket(fileno=_dup_private(fd))
    except OSError:
        return False
    with probe:
        return probe.type == socket.SOCK_STREAM


def _dup_private(fd: int) -> int:
    """A close-on-exec duplicate above the standard range: children never inherit it, dup2 never hits it."""
    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)


class _StdClaim:
    """fds 0/1 diverted for the session, the wire kept on private duplicates; `release()` puts it back.

    Same contract as the SDK's `_claim_fd`, which does not apply when `stdio_server()` is given explicit
    streams: while serving, reads of fd 0 see EOF and writes to fd 1 land on stderr.
    """

    def __init__(self) -> None:
        self.wire_in = -1
        self.wire_out = -1

    @classmethod
    def acquire(cls) -> _StdClaim:
        """Duplicate the wire, then divert fd 0 and fd 1; on any failure restore what was done and raise."""
        claim = cls()
        try:
            claim.wire_in = _dup_private(0)
            claim.wire_out = _dup_private(1)
            _divert(0, lambda: os.open(os.devnull, os.O_RDONLY))
            _divert(1, _open_stdout_diversion)
        except OSError:
            claim.release()
            raise
        return claim

    def release(self) -> None:
        """Put the wire back on fds 0/1 and close the private duplicates.

        `sys.stdout` writes to fd 1, so while diverted it writes to stderr too. It is block-buffered on a
        pipe, though: flush it while fd 1 still points at stderr, or a stray `print()` of the session would
        reach the wire at interpreter exit.
        """
        for stream in (sys.stdout, sys.__stdout__):
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.flush()
        for fd, private in ((1, self.wire_out), (0, self.wire_in)):
            if private < 0:
                continue
            try:
                os.dup2(private, fd)
            except OSError as exc:
                log.warning("could not restore fd %d after serving stdio: %s", fd, exc)
            with contextlib.suppress(OSError):
                os.close(private)
        self.wire_in = self.wire_out = -1


def _divert(fd: int, open_target: Callable[[], int]) -> None:
    target = open_target()
    try:
        os.dup2(target, fd)
    finally:
        os.close(target)


def _open_stdout_diversion() -> int:
    """stderr, where logs go and a person can see stray output; /dev/null if there is no stderr."""
    try:
        return os.dup(2)
    except OSError:
        return os.open(os.devnull, os.O_WRONLY)


async def serve_pipes(server: MCPServer[Any], wire_in: int, wire_out: int) -> None:
    """Serve MCP over two borrowed descriptors until EOF on `wire_in` or the reader of `wire_out` is gone.

    The async core, separate from the fd 0/1 claim so that tests can drive it over `os.pipe()` pairs. The
    descriptors stay the caller's: the transports get private duplicates. O_NONBLOCK, which asyncio sets,
    belongs to the open file description that those duplicates share with the caller's descriptors (and
    with whoever else holds the pipe), so the original blocking mode is restored on return.
    """
    blocking = [(fd, os.get_blocking(fd)) for fd in (wire_in, wire_out)]
    # The SDK's own `run_stdio_async` drives the low-level server the same way.
    lowlevel = server._lowlevel_server
    try:
        async with _open_wire(wire_in, wire_out) as (reader, writer):
            # stdio_server only iterates `stdin` and awaits `stdout.write`/`.flush`: the wire objects do that.
            stdin, stdout = cast("anyio.AsyncFile[str]", reader), cast("anyio.AsyncFile[str]", writer)
            async with stdio_server(stdin=stdin, stdout=stdout) as (read_stream, write_stream):
                await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())
    finally:
        for fd, was_blocking in blocking:
            with contextlib.suppress(OSError):
                os.set_blocking(fd, was_blocking)


@contextlib.asynccontextmanager
async def _open_wire(wire_in: int, wire_out: int) -> AsyncIterator[tuple[_WireReader, _WireWriter]]:
    """Connect the event loop to both descriptors; on exit flush what is queued (bounded) and close both."""
    loop = asyncio.get_running_loop()
    reader = _WireReader()
    read_file = os.fdopen(_dup_private(wire_in), "rb", buffering=0)
    try:
        await loop.connect_read_pipe(lambda: reader, read_file)
    except BaseException:
        read_file.close()
        raise
    try:
        writer = _WireWriter(on_lost=reader.stop)
        out_fd = _dup_private(wire_out)
        out: socket.socket | BinaryIO
        try:
            is_socket = stat.S_ISSOCK(os.fstat(out_fd).st_mode)
            out = socket.socket(fileno=out_fd) if is_socket else os.fdopen(out_fd, "wb", buffering=0)
        except BaseException:
            os.close(out_fd)
            raise
        try:
            if isinstance(out, socket.socket):
                # Not connect_write_pipe: its transport takes any readability of the descriptor for the
                # reader's hang-up, so a socket shared with stdin (or half-closed by the client) would be
                # closed by the first byte the client sends. A socket transport with reading paused is not.
                await loop.connect_accepted_socket(lambda: writer, out)
            else:
                await loop.connect_write_pipe(lambda: writer, out)
        except BaseException:
            out.close()  # idempotent if the transport already closed it
            raise
        try:
            yield reader, writer
        finally:
            with anyio.CancelScope(shield=True):
                await writer.aclose()
    finally:
        reader.close()


class _WireReader(asyncio.Protocol):
    """The read side: an asyncio protocol that is also the async iterator of lines `stdio_server` consumes.

    Splits on b"\\n" itself (a UTF-8 multi-byte sequence never contains that byte, so splitting before
    decoding is safe) and decodes with errors="replace" as the SDK does. A last line without a newline is
    still delivered, as the SDK's text reader does.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._scanned = 0  # leading bytes of _buffer known to hold no newline: each byte is searched once
        self._eof = False
        self._stopped = False
        self._paused = False
        self._transport: asyncio.ReadTransport | None = None
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.ReadTransport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) > READ_HIGH_WATER and not self._paused and self._transport is not None:
            # Resumed by __anext__ as soon as it needs more bytes: a single long line is never stuck.
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        self._eof = True
        self._wake()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None and not self._eof:
            log.debug("stdin: read failed (%s); ending the session as on EOF", exc)
        self._eof = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def __aiter__(self) -> _WireReader:
        return self

    async def __anext__(self) -> str:
        while not self._stopped:
            end = self._buffer.find(b"\n", self._scanned)
            if end >= 0:
                line = self._buffer[: end + 1].decode("utf-8", "replace")
                del self._buffer[: end + 1]
                self._scanned = 0
                return line
            self._scanned = len(self._buffer)
            if self._eof:
                if not self._buffer:
                    break
                line = self._buffer.decode("utf-8", "replace")
                self._buffer.clear()
                self._scanned = 0
                return line
            if self._paused and self._transport is not None:
                self._paused = False
                self._transport.resume_reading()
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        raise StopAsyncIteration

    def stop(self) -> None:
        """End the iteration now and drop unread input: its answers could not be delivered any more."""
        self._stopped = True
        self.close()
        self._wake()

    def close(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.close()


class _WireWriter(asyncio.Protocol):
    """The write side: an asyncio protocol that is also the `write`/`flush` object `stdio_server` writes to.

    `write` hands the bytes to the transport (which writes them to the kernel at once when the pipe has
    room); `flush` then waits until the transport has nothing left. With a zero high-water mark that is
    the SDK's blocking-flush semantics without a thread: one message at most is held for a slow client.
    """

    def __init__(self, on_lost: Callable[[], None]) -> None:
        self._on_lost = on_lost
        self._transport: asyncio.WriteTransport | None = None
        self._paused = False
        self._lost = False
        self._closing = False
        self._waiter: asyncio.Future[None] | None = None
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.WriteTransport, transport)
        if transport.get_extra_info("socket") is not None:
            # A socket, possibly the very one stdin reads: input is the reader's, never read it here.
            cast(asyncio.ReadTransport, transport).pause_reading()
        self._transport.set_write_buffer_limits(high=0)

    def data_received(self, data: bytes) -> None:
        """Never called while reading is paused; ignored if it were."""

    def eof_received(self) -> bool:
        return True  # the client's half-close of its sending side leaves ours open

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._wake()
        if not self._closed.done():
            self._closed.set_result(None)
        if not self._closing:
            # The client closed its end: nothing can be delivered any more, so end as on EOF. Logged at
            # DEBUG only, because a client that goes away is normal, not an error.
            log.debug("stdout: the client stopped reading (%s); ending the session", exc or "hang-up")
            self._on_lost()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def write(self, text: str) -> None:
        if not self._lost and self._transport is not None:
            self._transport.write(text.encode("utf-8"))

    async def flush(self) -> None:
        while self._paused and not self._lost:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    async def aclose(self) -> None:
        """Close after queued output is taken; a client that does not read for a while loses it instead."""
        self._closing = True
        if self._transport is None or self._closed.done():
            return
        self._transport.close()
        with anyio.move_on_after(CLOSE_TIMEOUT_SECONDS):
            await self._closed
        if not self._closed.done():
            log.debug("stdout: the client did not read the last output in %ss; dropped", CLOSE_TIMEOUT_SECONDS)
            self._transport.abort()
