"""A scriptable key server on 127.0.0.1 for the OAuth fault tests: metadata and JWKS served as a test says.

`HostileIdP` answers on a free port as an issuer would (RFC 8414 metadata naming its `/jwks`), and each path
can be scripted to misbehave the way an identity provider on a bad day does: answer 500, hang, trickle its
body a few bytes a second, send 200 MB, a gzip bomb, or a document of the wrong shape. It counts the requests
each path received, so a test can tell how often the server under test asked.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from helpers import free_port

CHUNK = 64 * 1024
METADATA_PATH = "/.well-known/oauth-authorization-server"
JWKS_PATH = "/jwks"


@dataclass
class Reply:
    """How one path answers: `body` (bytes, or `size` bytes of filler after it), optionally trickled or hung."""

    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = (("content-type", "application/json"),)
    size: int | None = None  # stream this many bytes in all: `body`, then spaces (valid JSON whitespace)
    bytes_per_second: float | None = None  # trickle the body this slowly
    hang: bool = False  # send nothing at all until the server stops
    delay: float = 0.0  # seconds before the answer starts

    @classmethod
    def json(cls, document: Any, **changes: Any) -> Reply:
        return cls(body=json.dumps(document).encode(), **changes)

    @classmethod
    def raw(cls, body: bytes | str, **changes: Any) -> Reply:
        return cls(body=body.encode() if isinstance(body, str) else body, **changes)

    def length(self) -> int:
        return self.size if self.size is not None else len(self.body)

    def chunks(self) -> Iterator[bytes]:
        if self.bytes_per_second is not None:
            step = max(1, int(self.bytes_per_second))
            for i in range(0, len(self.body), step):
                yield self.body[i : i + step]
            return
        yield self.body
        left = self.length() - len(self.body)
        filler = b" " * CHUNK
        while left > 0:
            yield filler[: min(left, CHUNK)]
            left -= CHUNK


def gzip_bomb(inflated: int) -> bytes:
    """A gzip body that inflates to `inflated` bytes: a JSON object opening, then spaces (about 1000:1)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [packer.compress(b'{"keys": [')]
    filler = b" " * (1 << 20)
    for _ in range(inflated >> 20):
        parts.append(packer.compress(filler))
    parts.append(packer.flush())
    return b"".join(parts)


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hung up mid-answer is what these tests provoke


class HostileIdP:
    """Serves `/.well-known/oauth-authorization-server` and `/jwks` for `issuer`, each as `script` says."""

    def __init__(self, jwks: dict[str, Any] | None = None) -> None:
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.hits: Counter[str] = Counter()
        self.script: dict[str, Reply] = {
            METADATA_PATH: Reply.json({"issuer": self.issuer, "jwks_uri": f"{self.issuer}{JWKS_PATH}"}),
            JWKS_PATH: Reply.json(jwks if jwks is not None else {"keys": []}),
        }
        self._stopping = threading.Event()
        self._httpd = _QuietServer(("127.0.0.1", self.port), self._handler())
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}{JWKS_PATH}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        idp = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # the name http.server calls
                path = self.path.split("?", 1)[0]
                idp.hits[path] += 1
                reply = idp.script.get(path, Reply(status=404, body=b"{}"))
                if reply.hang or idp._stopping.wait(reply.delay):
                    idp._stopping.wait()
                    return
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers:
                        self.send_header(name, value)
                    self.send_header("content-length", str(reply.length()))
                    self.end_headers()
                    for chunk in reply.chunks():
                        if idp._stopping.is_set():
                            return
                        self.wfile.write(chunk)
                        self.wfile.flush()
                        if reply.bytes_per_second is not None:
                            time.sleep(len(chunk) / reply.bytes_per_second)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the server under test stopped reading: what a bounded reader does

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> HostileIdP:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(10)
