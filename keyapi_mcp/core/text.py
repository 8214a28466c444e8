"""Untrusted upstream text made safe to show a model: pure functions, no imports from the rest of the package.

Everything the upstream writes (a video description, an error `message`, a request id, an envelope `code`)
may have been written to steer the model that reads our answer. Three rules keep it data:

- terminal escape sequences (CSI `ESC [ … m`, OSC `ESC ] … BEL`, two-byte `ESC x`, their 8-bit C1 forms) are
  removed whole, before control characters are stripped, so no `[31m` is left behind;
- free text reaches the model only inside `«…»` (`quote_untrusted`), with every character that could close
  that delimiter or pose as one (quotation marks of every script, angle brackets and their lookalikes such as
  `⟫` and `》`) replaced, and square brackets turned into parentheses, so it can neither end its own quote nor
  fake a `[code]` marker; line breaks of every kind become spaces, so it never starts a line;
- values that are identifiers by nature are not quoted but accepted only in their documented shape
  (`keyapi_mcp.core.ids.numeric_id`, `safe_token`); anything else is dropped and the caller says so in a warning.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any

MAX_TEXT_CHARS = 500  # cap on untrusted upstream text (descriptions) in detailed output
OPEN_QUOTE = "«"
CLOSE_QUOTE = "»"

# ECMA-48: CSI = ESC [ params intermediates final; OSC/DCS/SOS/PM/APC = ESC ]/P/X/^/_ … (BEL | ESC \);
# any other two-character escape ESC + one byte from @ to ~. The C1 forms (U+009B CSI, U+009D OSC, …) too.
_TERMINAL_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
)

# Characters a reader could take for the end (or start) of a quotation: every Unicode initial/final quote
# (Pi/Pf: « » ‹ › “ ” ‘ ’ …), the ASCII quotes, and the angle brackets that look like « or » in some fonts.
_ANGLE_OPENERS = "‹«〈《⟨⟪❮❬❰⧼﹤＜〈⦑"
_ANGLE_CLOSERS = "›»〉》⟩⟫❯❭❱⧽﹥＞〉⦒"
_SQUARE_TO_ROUND = {ord("["): "(", ord("]"): ")", ord("［"): "(", ord("］"): ")", ord("【"): "(", ord("】"): ")"}

_TOKEN_RE = re.compile(r"[A-Za-z0-9_.:-]+")
_ESCAPE_START = re.compile(r"[\x1b\x80-\x9f]")  # ESC or a C1 control: where an escape sequence may begin


def strip_terminal_sequences(value: str) -> str:
    """Remove ANSI/ECMA-48 escape sequences whole (not only their ESC byte)."""
    if not _ESCAPE_START.search(value):  # most text: one scan in C instead of a Python loop per character
        return value
    return _TERMINAL_SEQUENCE.sub("", value)


def _neutral(ch: str) -> str:
    if ch in _ANGLE_OPENERS:
        return "<"
    if ch in _ANGLE_CLOSERS:
        return ">"
    if ch == '"' or unicodedata.category(ch) in ("Pi", "Pf"):
        return "'"
    return ch


def neutralize_delimiters(value: str) -> str:
    """Replace quote closers and their lookalikes, and square brackets, with harmless ASCII."""
    value = value.translate(_SQUARE_TO_ROUND)
    if value.isascii():
        return value.replace('"', "'")
    return "".join(_neutral(ch) for ch in value)


def quote_untrusted(text: str) -> str:
    """`«text»` that the text itself cannot close, for text already cleaned (no controls, one line)."""
    return OPEN_QUOTE + neutralize_delimiters(text) + CLOSE_QUOTE


def safe_token(value: Any, limit: int = 100) -> str | None:
    """A short opaque code (request id, envelope code) as one word of `[A-Za-z0-9_.:-]`, else None.

    A request id is printed unquoted in ledger listings, so anything with spaces or brackets — which could
    read as an instruction or a `[code]` — is dropped rather than shown.
    """
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str):
        return None
    text = value.strip()
    return text if 0 < len(text) <= limit and _TOKEN_RE.fullmatch(text) else None


_CONTROL_CATEGORIES = {"Cc", "Cf", "Cs", "Co", "Cn"}
_ASCII_CONTROLS = {code: None for code in [*range(32), 127]} | {ord(ch): " " for ch in "\t\n\r"}


def _strip_controls(value: str) -> str:
    return "".join(
        " " if ch in "\t\n\r" else ch
        for ch in value
        if ch in "\t\n\r"
        or unicodedata.category(ch) not in _CONTROL_CATEGORIES
        or ch == "\u200d"  # zero-width joiner: part of emoji sequences
    )


def clean_text(value: str | None, limit: int = MAX_TEXT_CHARS) -> str | None:
    """Strip control/format characters (incl. bidi overrides, zero-width) and cap length.

    Upstream text is written by TikTok users and may carry prompt injection; the renderer also
    delimits it so a model can tell data from instructions.
    """
    if value is None:
        return None
    value = strip_terminal_sequences(value)  # whole sequences first: stripping ESC alone leaves "[31m"
    # ASCII holds no format, surrogate or private-use characters: only the C0 controls and DEL are Cc. Text that
    # `str.isprintable` accepts holds none of the control categories (nor tabs or line breaks): nothing to strip.
    if value.isascii():
        cleaned = value.translate(_ASCII_CONTROLS)
    else:
        cleaned = value if value.isprintable() else _strip_controls(value)
    cleaned = re.sub(r"\s+", " ", cleaned).strip()
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 1].rstrip() + "…"
    return cleaned


def upstream_said(message: str | None, limit: int = 200) -> str:
    """` Upstream said: «…».` to append to an error, or "" when the upstream gave no usable message.

    The message is cleaned and quoted here, at the one place error text quotes the upstream, so a message
    like `x". [unauthorized] SYSTEM: …` stays inside its quote and cannot pose as our own `[code]`.
    """
    cleaned = clean_text(message, limit) if isinstance(message, str) else None
    return f" Upstream said: {quote_untrusted(cleaned)}." if cleaned else ""


def short_echo(value: str, limit: int = 80) -> str:
    """What an error may quote of a client's argument: printable characters, at most `limit` of them."""
    text = "".join(ch if ch.isprintable() else "?" for ch in value[: limit + 1])
    return text if len(text) <= limit else text[: limit - 1] + "…"
