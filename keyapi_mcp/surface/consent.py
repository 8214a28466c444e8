"""Asking the user before a large spend: the MCP side of `keyapi_mcp.core.consent`.

Two resolvers run before the body of `get_video_products` (and of the App view's `app_load_products`):
`quote_call` computes the call's quote from the cache and the ledger; `ask_consent` decides how to get the
user's yes when the quote is above the free cap. Where the client declared form elicitation it returns
`Elicit(...)`, and the SDK asks through whatever the connection negotiated: the input-required round trip on
2026-07-28 (its state sealed by the server's `RequestStateSecurity`), a mid-call `elicitation/create` on
2025-11-25. The question names the exact bound, so an answer counts only for that quote (the SDK pins an
answer to the question's digest): a changed quote is asked again. Elsewhere the body answers
`[confirmation_required]` with a single-use token the model hands back in `confirm` after asking the user.

`gate` is the one place the body turns the resolvers' outcome into what the call may spend: nothing is sent
before it returns, and it returns a credit allowance only for a call that needs no consent, an accepted
question, or a token redeemed for this caller, these ids, this page and at most this spend.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from mcp.server.elicitation import AcceptedElicitation, DeclinedElicitation, ElicitationResult
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.resolve import Elicit, Resolve
from mcp_types import CallToolResult, TextContent
from mcp_types.version import is_version_at_least
from pydantic import BaseModel, Field

from keyapi_mcp.core.consent import (
    CONSENT_TTL_SECONDS,
    Quote,
    issue_token,
    make_quote,
    redeem_token,
    remaining_today,
)
from keyapi_mcp.core.domain import FetchOutcome, iso
from keyapi_mcp.core.ids import normalize_video_ids
from keyapi_mcp.errors import ConfirmationInvalid, ConfirmationRequired, KeyAPIError, SpendDeclined, StateStoreError
from keyapi_mcp.presentation.build import remaining_for_caller
from keyapi_mcp.presentation.models import Credits
from keyapi_mcp.surface.caller import current_caller
from keyapi_mcp.surface.state import AppState

COST_META_KEY = "ai.keyapi/cost"  # the namespaced `_meta` key of every get_video_products result
INPUT_REQUIRED_VERSION = "2026-07-28"  # from this revision on, elicitation rides the input-required round trip

NOT_NEEDED = "not_needed"  # the quote is within the free cap (or consent is off)
BY_TOKEN = "token"  # the call carries a confirm token: the body redeems it
BY_TOKEN_FALLBACK = "fallback"  # the client cannot be asked: the body answers with a token to confirm


class SpendConsent(BaseModel):
    """The form an elicitation-capable client shows: one yes/no, preset to yes (declining is the other button)."""

    spend: bool = Field(default=True, title="Spend the credits", description="Spend up to the quoted credits.")


def can_elicit(ctx: Context[AppState]) -> bool:
    """Whether this client can be asked now: it declared form elicitation, and the connection can carry it."""
    capabilities = ctx.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    if elicitation is None or (elicitation.form is None and elicitation.url is not None):
        return False
    version = ctx.protocol_version
    if version is not None and is_version_at_least(version, INPUT_REQUIRED_VERSION):
        return True  # the question travels in the result; no back channel needed
    # 2025-11-25 and earlier: a server-to-client request mid-call, which stateless HTTP cannot carry.
    return ctx.request_context.session.can_send_request


async def quote_call(
    ctx: Context[AppState],
    video_ids: list[str],
    page_num: int,
    max_credits: int | None,
    max_age_seconds: int,
    refresh: bool,
) -> Quote | None:
    """The call's quote, or None when consent does not apply (it is off, or no paid request can be made)."""
    state = ctx.request_context.lifespan_context
    service = state.service
    if not service.limits.consent_enabled or service.upstream is None:
        return None
    ids = normalize_video_ids(video_ids)
    if service.limits.requested(max_credits, len(ids)) <= service.limits.free_cap(len(ids)):
        return None  # its cap is within what may be spent without asking: no quote needed, nothing read
    fresh = service.freshness(refresh, max_age_seconds)
    return await make_quote(service.store, service.limits, ids, page_num, max_credits, fresh, current_caller())


async def ask_consent(
    quote: Annotated[Quote | None, Resolve(quote_call)], ctx: Context[AppState], confirm: str
) -> Elicit[SpendConsent] | str:
    """How to get the user's yes for this quote: not needed, the call's token, a token to issue, or a question."""
    if quote is None or not quote.needs_consent:
        return NOT_NEEDED
    if confirm:
        return BY_TOKEN
    if not can_elicit(ctx):
        return BY_TOKEN_FALLBACK
    return Elicit(f"keyapi-mcp asks before spending paid credits: {quote.describe()}. Spend them?", SpendConsent)


QuoteArg = Annotated[Quote | None, Resolve(quote_call)]
ConsentArg = Annotated[ElicitationResult[SpendConsent], Resolve(ask_consent)]


@dataclass(frozen=True)
class Allowance:
    """What the body may spend: `consented` credits with the user's yes, else the free cap (None)."""

    consented: int | None = None


def cost_meta(
    *, spent: int, cached_videos: int, remaining_today: int | None, daily_limit: int | None
) -> dict[str, Any]:
    """The `_meta` entry every result carries, so hosts and programs read the cost without parsing text."""
    return {
        COST_META_KEY: {
            "spent": spent,
            "cached_videos": cached_videos,
            "remaining_today": remaining_today,
            "daily_limit": daily_limit,
        }
    }


def answer_cost(state: AppState, outcome: FetchOutcome, credits: Credits) -> dict[str, Any]:
    """The cost `_meta` of an answered call: what it spent, the videos it found cached, and what the caller
    may still spend today (the smaller of the daily and per-user remainders)."""
    settings = state.settings
    return cost_meta(
        spent=credits.spent,
        cached_videos=credits.cached_videos,
        remaining_today=remaining_for_caller(outcome, settings.daily_credit_limit, settings.user_daily_credit_limit),
        daily_limit=credits.daily_limit,
    )


async def failed(state: AppState, exc: KeyAPIError, caller: str) -> CallToolResult:
    """A failed call's `[code]` answer, with what it cost (the service sets `exc.spent`) in `_meta` too."""
    try:
        left = await remaining_today(state.service.store, state.service.limits, caller)
    except StateStoreError:
        left = None  # the ledger is what failed: what is left is unknown
    limit = state.settings.daily_credit_limit or None
    return CallToolResult(
        content=[TextContent(type="text", text=exc.render())],
        is_error=True,
        meta=cost_meta(spent=exc.spent, cached_videos=0, remaining_today=left, daily_limit=limit),
    )


def _refusal(state: AppState, quote: Quote, text: str, structured: dict[str, Any]) -> CallToolResult:
    limit = state.settings.daily_credit_limit or None
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content=structured,
        is_error=True,
        meta=cost_meta(
            spent=0, cached_videos=len(quote.cached_ids), remaining_today=quote.remaining_today, daily_limit=limit
        ),
    )


def repeat_call(tool: str, arguments: dict[str, Any], token: str) -> str:
    """The exact call the model should make once the user agrees: the arguments it gave (None = left at its
    default, so not repeated) plus `confirm`."""
    given = {name: value for name, value in arguments.items() if value is not None}
    return f"{tool} {json.dumps({**given, 'confirm': token}, ensure_ascii=False, separators=(', ', ': '))}"


async def confirmation_required(
    state: AppState, quote: Quote, *, tool: str, arguments: dict[str, Any], refused: str | None = None
) -> CallToolResult:
    """The answer for a client that cannot be asked: the quote, a fresh token, and the exact call to repeat."""
    token, expires_at = await issue_token(state.service.store, quote)
    state.service.metrics.consent("token_issued")
    message = f"This call may spend {quote.describe()}. Nothing was requested or charged."
    if refused:
        message = f"{refused} {message}"
    hint = (
        f"Ask the user whether to spend them. If they agree, repeat exactly: {repeat_call(tool, arguments, token)} "
        f"(the token works once, for this caller, these ids and this page, until {iso(expires_at)}, "
        f"{CONSENT_TTL_SECONDS // 60} min). To spend no more than {quote.free_cap} credits without asking, pass "
        f"max_credits={quote.free_cap} instead."
    )
    error = ConfirmationInvalid(message, hint=hint) if refused else ConfirmationRequired(message, hint=hint)
    text = error.render()
    return _refusal(
        state,
        quote,
        text,
        {
            "confirmation": {
                "token": token,
                "expires_at": iso(expires_at),
                "credits_at_most": quote.credits_at_most,
                "free_cap": quote.free_cap,
                "page_num": quote.page,
                "cached_ids": list(quote.cached_ids),
                "new_ids": list(quote.new_ids),
                "remaining_today": quote.remaining_today,
                **({"refused": refused} if refused else {}),
            }
        },
    )


def declined(state: AppState, quote: Quote, outcome: ElicitationResult[SpendConsent]) -> CallToolResult:
    how = "declined" if isinstance(outcome, DeclinedElicitation | AcceptedElicitation) else "dismissed"
    error = SpendDeclined(
        f"The user {how} spending {quote.describe()}: nothing was requested or charged.",
        hint="Do not repeat the call unless the user asks for it. Cached videos stay free: max_credits=0 "
        f"answers from the cache only, and max_credits={quote.free_cap} spends without asking.",
    )
    return _refusal(state, quote, error.render(), {"declined": {"credits_at_most": quote.credits_at_most}})


async def gate(
    state: AppState,
    quote: Quote | None,
    consent: ElicitationResult[SpendConsent],
    *,
    confirm: str,
    tool: str,
    arguments: dict[str, Any],
) -> Allowance | CallToolResult:
    """What this call may spend, or the answer to give instead of spending (nothing was sent either way)."""
    if quote is None or not quote.needs_consent:
        return Allowance()
    metrics = state.service.metrics
    if isinstance(consent, AcceptedElicitation):
        data = consent.data
        if isinstance(data, SpendConsent):
            metrics.consent("accepted" if data.spend else "declined")
            return Allowance(quote.credits_at_most) if data.spend else declined(state, quote, consent)
        if data == BY_TOKEN:
            try:
                allowance = Allowance(await redeem_token(state.service.store, confirm, quote))
            except ConfirmationInvalid as exc:
                metrics.consent("token_refused")
                return await confirmation_required(
                    state, quote, tool=tool, arguments=arguments, refused=exc.message.rstrip(".") + "."
                )
            metrics.consent("token_used")
            return allowance
        return await confirmation_required(state, quote, tool=tool, arguments=arguments)
    metrics.consent("declined")
    return declined(state, quote, consent)
