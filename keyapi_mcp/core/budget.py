"""The credit limits of one tool call, and the `CreditGate` that keeps them (the per-call cap here, the daily
and per-user limits atomically in the store, so they hold across processes and replicas)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from keyapi_mcp.config import Settings
from keyapi_mcp.core.domain import LOCAL_CALLER, PAGE_SIZE, Attempt, Reservation
from keyapi_mcp.core.ports import Store
from keyapi_mcp.errors import BudgetExceeded, CallCapReached, StateStoreError
from keyapi_mcp.metrics import NO_METRICS, Metrics

log = logging.getLogger(__name__)


# With KEYAPI_MAX_CREDITS_PER_CALL unset, the cap grows with the ids asked so that the 50 videos a call accepts
# fit one call: 1 credit + 3 per 10 videos (3 product rows per video, above what a typical video carries).
ROWS_PER_VIDEO = 3
NO_LOWER_CAP = 100_000  # max_credits' default and schema maximum: "not set"


def explicit_cap(max_credits: int | None) -> int | None:
    """`max_credits` as the caller meant it: None where it was left unset. Its default is NO_LOWER_CAP rather
    than null (frameworks that declare every argument required send the default back unchanged), and that
    default must not read as a request to spend up to the consent ceiling."""
    return None if max_credits is None or max_credits >= NO_LOWER_CAP else max_credits


def sized_cap(ids_asked: int, floor: int) -> int:
    """The per-call cap for `ids_asked` videos when it is sized from the ids: never below `floor`."""
    return max(floor, 1 + -(-ids_asked * ROWS_PER_VIDEO // PAGE_SIZE))


def cap_sized_from_ids(settings: Settings) -> bool:
    """The per-call cap is sized from the ids asked unless KEYAPI_MAX_CREDITS_PER_CALL is set."""
    return "max_credits_per_call" not in settings.model_fields_set


@dataclass(frozen=True)
class CallLimits:
    """The operator's limits, as one value: per call, per UTC day, per user per day (0 = none), and consent.

    With `sized`, `per_call` is the floor of a cap that grows with the ids asked (`sized_cap`): `base_cap`.
    `confirm_above` (KEYAPI_CONFIRM_ABOVE_CREDITS; None = the call's own base cap, 0 = off) is what a call may
    spend without the user's consent; with it, a call may spend up to `with_consent`
    (KEYAPI_MAX_CREDITS_WITH_CONSENT, never below the base cap). The daily and per-user limits hold whatever
    the user agrees to.
    """

    per_call: int
    daily: int
    per_user: int = 0
    sized: bool = False
    confirm_above: int | None = None
    with_consent: int = 0

    @property
    def consent_enabled(self) -> bool:
        return self.confirm_above != 0

    def base_cap(self, ids_asked: int) -> int:
        """The per-call cap without consent or `max_credits`: KEYAPI_MAX_CREDITS_PER_CALL, or sized from the ids."""
        return sized_cap(ids_asked, self.per_call) if self.sized else self.per_call

    def free_cap(self, ids_asked: int) -> int:
        """The most a call may spend without asking."""
        base = self.base_cap(ids_asked)
        return base if self.confirm_above is None or not self.consent_enabled else min(base, self.confirm_above)

    def ceiling(self, ids_asked: int) -> int:
        """The most a call may spend at all: with consent, the consent ceiling; else its base cap."""
        base = self.base_cap(ids_asked)
        return max(base, self.with_consent) if self.consent_enabled else base

    def requested(self, max_credits: int | None, ids_asked: int) -> int:
        """The cap a call asks for: its `max_credits` (default: its base cap), within the ceiling."""
        max_credits = explicit_cap(max_credits)
        wanted = self.base_cap(ids_asked) if max_credits is None else max_credits
        return min(wanted, self.ceiling(ids_asked))

    def cap_for(self, max_credits: int | None, ids_asked: int = 0, consented: int | None = None) -> tuple[int, str]:
        """This call's cap and where it comes from. Without consent it never exceeds the free cap."""
        max_credits = explicit_cap(max_credits)
        if consented is not None:
            return min(consented, self.requested(max_credits, ids_asked)), (
                f"the user's consent to spend up to {consented} credits"
            )
        base, free = self.base_cap(ids_asked), self.free_cap(ids_asked)
        if max_credits is not None and max_credits < free:
            return max_credits, f"max_credits={max_credits} for this call"
        if free < base:
            return free, f"KEYAPI_CONFIRM_ABOVE_CREDITS={self.confirm_above}; more needs the user's consent"
        if self.sized:
            return base, f"{base}, the default for {ids_asked} video id(s); KEYAPI_MAX_CREDITS_PER_CALL is not set"
        return base, f"KEYAPI_MAX_CREDITS_PER_CALL={self.per_call}"

    def cap_hint(self, ids_asked: int) -> str:
        if self.consent_enabled and self.ceiling(ids_asked) > self.free_cap(ids_asked):
            return (
                "Continue with the next_page_num the answer gives, or pass a higher max_credits (up to "
                f"{self.ceiling(ids_asked)}, KEYAPI_MAX_CREDITS_WITH_CONSENT): the server then asks the user first."
            )
        return (
            "Pass a higher max_credits (up to KEYAPI_MAX_CREDITS_PER_CALL) or raise "
            "KEYAPI_MAX_CREDITS_PER_CALL in the server's environment."
        )


class CallBudget:
    """The `CreditGate` of one tool call: per-call cap here, daily and per-user limits atomically in the store.

    A store failure *before* a request refuses it (nothing is sent without a reservation). A failure
    *after* it — the ledger cannot record the outcome — must not lose the page that was paid for: the
    reservation stays counted (as possibly spent) and the failure is reported in `unrecorded`.
    """

    def __init__(
        self,
        store: Store,
        limits: CallLimits,
        *,
        max_credits: int | None = None,
        consented: int | None = None,
        caller: str = LOCAL_CALLER,
        metrics: Metrics = NO_METRICS,
        ids_asked: int = 0,
    ) -> None:
        self.store = store
        self.limits = limits
        self.metrics = metrics
        self.cap, self.cap_source = limits.cap_for(max_credits, ids_asked, consented)
        self.ids_asked = ids_asked
        self.caller = caller
        self.reserved = 0  # reservations not released: what this call spent (or may have)
        self.unrecorded = 0  # settlements the store could not write

    @property
    def exhausted(self) -> bool:
        return self.reserved >= self.cap

    async def reserve(self, ids_count: int, page: int) -> object:
        try:
            if self.reserved >= self.cap:
                raise CallCapReached(
                    f"The per-call credit cap is reached: {self.reserved} of {self.cap} credits ({self.cap_source}).",
                    hint=self.limits.cap_hint(self.ids_asked),
                )
            reservation = await self.store.reserve(
                ids_count=ids_count,
                page=page,
                daily_limit=self.limits.daily,
                caller=self.caller,
                user_limit=self.limits.per_user,
            )
        except StateStoreError as exc:
            raise StateStoreError(f"{exc.message} No upstream request was made for it.", hint=exc.hint) from None
        except BudgetExceeded as exc:
            self.metrics.budget_refusal(exc)
            raise
        self.reserved += 1
        return reservation

    async def settle(self, reservation: object, attempt: Attempt) -> None:
        assert isinstance(reservation, Reservation)
        self.metrics.credit_settled(attempt.charged)  # what the upstream did, whether or not the ledger records it
        try:
            await self.store.settle(reservation, attempt)
        except StateStoreError as exc:
            # The reservation row (if it was written) still counts against the limits: over-counting is safe.
            log.warning(
                "could not record an upstream attempt (%s, charged=%s): %s", attempt.outcome, attempt.charged, exc
            )
            self.unrecorded += 1
            return
        if attempt.charged == "no":
            self.reserved -= 1
