"""Consent before a large spend: the quote of one call, and the single-use tokens that carry a user's yes.

A call's worst case is known before anything is sent: ids fresh in the cache cost 0, and the others cost at
most one credit per upstream page, which the call's credit cap bounds (as do today's remaining daily and
per-user budgets). Above `KEYAPI_CONFIRM_ABOVE_CREDITS` that bound is stated to the user, who says yes or
no, before any request: through elicitation where the client offers it (keyapi_mcp.surface.consent), or
through a confirmation token the model hands back with the repeated call.

A token is a random string; the store keeps only its SHA-256 (a dump of the store holds no usable token)
with what it was issued for: the caller, the id set, the starting page and the credit bound. It is honoured
once (the store marks its use atomically, so two replicas racing with one token cannot both spend), only for
the same caller, ids and page, and only for a spend no larger than the one it was issued for.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from keyapi_mcp.core.budget import CallLimits
from keyapi_mcp.core.domain import PAGE_SIZE, ConsentGrant, query_key
from keyapi_mcp.core.ports import Store
from keyapi_mcp.errors import ConfirmationInvalid

CONSENT_TTL_SECONDS = 300  # long enough for the model to ask the user and repeat the call; short enough to go stale
TOKEN_PREFIX = "kc_"
IDS_SHOWN = 5  # ids named in a quote's text; the structured quote lists them all


@dataclass(frozen=True)
class Quote:
    """What one call may spend, computed before it sends anything (`make_quote`)."""

    caller: str
    ids_key: str  # the canonical id set (query_key) the call asks for
    page: int
    cached_ids: tuple[str, ...]  # fresh in the cache: free
    new_ids: tuple[str, ...]  # to fetch: one credit per upstream page, for all of them together
    credits_at_most: int  # the exact bound of this call: its cap, today's budgets, 0 when nothing is new
    free_cap: int  # what a call may spend without the user's consent (the threshold and the per-call cap)
    remaining_today: int | None  # the smaller of today's daily and per-user remainders; None = no limit

    @property
    def needs_consent(self) -> bool:
        return self.credits_at_most > self.free_cap

    def describe(self) -> str:
        """One sentence for the user and the model: the bound, what is free, what is new, today's budget."""
        new = _ids(self.new_ids)
        text = f"up to {self.credits_at_most} KeyAPI credit{'s' if self.credits_at_most != 1 else ''} "
        text += f"(1 per upstream page of {PAGE_SIZE} product rows) to fetch {len(self.new_ids)} new video"
        text += f"{'s' if len(self.new_ids) != 1 else ''} ({new})"
        if self.page > 1:
            text += f" from page {self.page}"
        if self.cached_ids:
            text += f"; {len(self.cached_ids)} cached video{'s are' if len(self.cached_ids) != 1 else ' is'} free"
        if self.remaining_today is not None:
            text += f"; {self.remaining_today} credits left today"
        return text


def _ids(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:IDS_SHOWN])
    return shown if len(ids) <= IDS_SHOWN else f"{shown} and {len(ids) - IDS_SHOWN} more"


async def remaining_today(store: Store, limits: CallLimits, caller: str) -> int | None:
    """The smaller of today's daily and per-user remainders for `caller`; None when neither limit is set."""
    left: list[int] = []
    if limits.daily:
        left.append(limits.daily - (await store.usage_today()).spent)
    if limits.per_user:
        left.append(limits.per_user - (await store.usage_for(caller)).spent)
    return max(0, min(left)) if left else None


async def make_quote(
    store: Store,
    limits: CallLimits,
    video_ids: Sequence[str],
    page: int,
    max_credits: int | None,
    max_age: float,
    caller: str,
) -> Quote:
    """The quote of one call, from the cache and the ledger.

    Ids fresh in the cache (no older than `max_age`) cost 0. The others go to the upstream together, one credit
    per page, and the number of their rows is unknown until fetched, so the bound is the call's cap (its
    `max_credits`, up to the consent ceiling), lowered by today's remaining daily and per-user budgets. A
    continuation walks its whole query unless every id is cached by now.
    """
    cached = await store.get_videos(video_ids, max_age) if max_age > 0 else {}
    new = tuple(v for v in video_ids if v not in cached)
    remaining = await remaining_today(store, limits, caller)
    bound = 0
    if new:
        bound = limits.requested(max_credits, len(video_ids))
        if remaining is not None:
            bound = min(bound, remaining)
    return Quote(
        caller=caller,
        ids_key=query_key(video_ids),
        page=page,
        cached_ids=tuple(v for v in video_ids if v in cached),
        new_ids=new,
        credits_at_most=bound,
        free_cap=limits.free_cap(len(video_ids)),
        remaining_today=remaining,
    )


def token_digest(token: str) -> str:
    """What the store keys a token by: its SHA-256, never the token itself."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


async def issue_token(store: Store, quote: Quote) -> tuple[str, float]:
    """A new single-use token for exactly this quote; returns it with its expiry (epoch seconds)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(18)
    expires_at = store.now() + CONSENT_TTL_SECONDS
    grant = ConsentGrant(
        caller=quote.caller,
        ids_key=quote.ids_key,
        page=quote.page,
        credits=quote.credits_at_most,
        expires_at=expires_at,
    )
    await store.put_consent(token_digest(token), grant)
    return token, expires_at


async def redeem_token(store: Store, token: str, quote: Quote) -> int:
    """Use `token` for the call `quote` describes; return the credits it may spend, or raise `ConfirmationInvalid`.

    Checked before use, in this order: it exists and has not expired, it was not used, it is this caller's,
    for these ids from this page, and for at least this spend. Only then is its use recorded, atomically:
    of two calls presenting it at once (on any replicas sharing the store) exactly one proceeds.
    """
    digest = token_digest(token)
    grant = await store.get_consent(digest)
    if grant is None:
        raise ConfirmationInvalid(f"The confirm token is unknown or expired (tokens last {CONSENT_TTL_SECONDS} s).")
    if grant.used:
        raise ConfirmationInvalid("The confirm token was already used: each token is honoured once.")
    if grant.caller != quote.caller:
        raise ConfirmationInvalid("The confirm token was issued to another caller.")
    if grant.ids_key != quote.ids_key or grant.page != quote.page:
        raise ConfirmationInvalid("The confirm token was issued for other video ids or another page_num.")
    if quote.credits_at_most > grant.credits:
        raise ConfirmationInvalid(
            f"The confirm token allows up to {grant.credits} credits; this call may spend up to "
            f"{quote.credits_at_most}."
        )
    if not await store.use_consent(digest):
        raise ConfirmationInvalid("The confirm token was already used: each token is honoured once.")
    return quote.credits_at_most
