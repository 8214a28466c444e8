"""Reading an HTTP body with a running cap, inflated with zlib's `max_length`: neither a huge body nor a small
compressed one that would inflate to gigabytes (a "zip bomb") is ever held whole."""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import httpx


class BodyTooLarge(Exception):
    """The reply grew past its cap (after decoding): reading stopped there."""


class UnsupportedEncoding(Exception):
    """The reply used a Content-Encoding we never asked for."""


def _decompressor(encoding: str) -> Any:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return None
    if encoding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj(zlib.MAX_WBITS)
    raise UnsupportedEncoding(encoding)


async def read_bounded(response: httpx.Response, limit: int) -> bytes:
    """Read and decode the body, never holding more than `limit` decoded bytes.

    Raises `BodyTooLarge` past `limit`, `UnsupportedEncoding` for an encoding never asked for, and
    `httpx.DecodingError` for a corrupt compressed stream.
    """
    import httpx

    if response.is_stream_consumed:  # built in memory (httpx.MockTransport, respx): already whole and decoded
        if len(response.content) > limit:
            raise BodyTooLarge
        return response.content
    decoder = _decompressor(response.headers.get("content-encoding", ""))
    body = bytearray()
    async for chunk in response.aiter_raw():
        if decoder is None:
            body += chunk
        else:
            try:
                body += decoder.decompress(chunk, limit - len(body) + 1)
            except zlib.error as exc:
                raise httpx.DecodingError(f"invalid {response.headers['content-encoding']} body") from exc
            if decoder.unconsumed_tail:
                raise BodyTooLarge
        if len(body) > limit:
            raise BodyTooLarge
    if decoder is not None:
        body += decoder.flush()
    return bytes(body)
