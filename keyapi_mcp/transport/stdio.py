"""Answer the tool calls already received when stdin closes (`cat requests | keyapi-mcp`).

The SDK's stdio transport ends the session at end of input and cancels whatever is still running, so a
paid call sent just before stdin closed would be charged and never answered. The SDK has no hook to let
calls in flight finish first, and its stdio transport stays untouched here: this relays the real stdin into
a pipe that becomes fd 0 before the SDK claims it, and at end of input holds the pipe open until no tool
call has run for a quiet moment (bounded); a last line without its newline is ended, so it is answered too.
Only pipes and files are relayed, on POSIX; a terminal, or
Windows, gets the SDK's own behaviour.
"""

from __future__ import annotations

import os
import stat
import sys
import threading
import time
from collections.abc import Callable

QUIET_SECONDS = 0.3  # no tool call for this long after end of input: every call received has been answered
MAX_DRAIN_SECONDS = 600.0  # never hold the process longer than this after end of input
CHUNK = 65_536


def _relayable(fd: int) -> bool:
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode)


def drain_stdin_at_eof(calls_in_flight: Callable[[], int]) -> bool:
    """Relay fd 0 so that end of input reaches the server only once `calls_in_flight()` stays 0.

    Returns whether the relay was installed. Call it before the SDK's stdio transport starts.
    """
    if sys.platform == "win32" or not _relayable(0):
        return False
    source = os.dup(0)
    read_end, write_end = os.pipe()
    os.dup2(read_end, 0)
    os.close(read_end)

    def relay() -> None:
        last = b"\n"
        try:
            while chunk := os.read(source, CHUNK):
                last = chunk[-1:]
                _write_all(write_end, chunk)
            if last != b"\n":
                # The SDK reads whole lines, so a last message without its newline would only reach it at end
                # of input, which also ends the session and cancels that very request: end the line here.
                _write_all(write_end, b"\n")
            _wait_until_idle(calls_in_flight)
        except OSError:
            pass  # the server is gone (pipe closed): nothing left to hold open
        finally:
            os.close(write_end)
            os.close(source)

    threading.Thread(target=relay, name="keyapi-mcp-stdin", daemon=True).start()
    return True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _wait_until_idle(calls_in_flight: Callable[[], int]) -> None:
    deadline = time.monotonic() + MAX_DRAIN_SECONDS
    idle_since: float | None = None
    while (now := time.monotonic()) < deadline:
        if calls_in_flight() > 0:
            idle_since = None
        elif idle_since is None:
            idle_since = now
        elif now - idle_since >= QUIET_SECONDS:
            return
        time.sleep(0.05)
