"""Every error kind the server raises: those a model can see (one class per public code) and start-up errors.

Each error renders as `[code] what happened. What to do next.` — the bracketed code is the stable
contract (tests and programs match on it); the prose is for the model. Messages never contain the
API key: they are built from our own words plus upstream `message` text, which is sanitised.
"""

from __future__ import annotations

from typing import ClassVar


class KeyAPIError(Exception):
    """Base of every error that reaches the model as an `isError` tool result."""

    code: ClassVar[str] = "upstream_error"
    default_hint: ClassVar[str] = ""
    spent: int = 0  # credits the failed call spent (or may have), when the service knows: the result's _meta

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
    ) -> None:
        self.message = message
        self.hint = self.default_hint if hint is None else hint
        self.status = status
        self.request_id = request_id
        super().__init__(self.render())

    def __str__(self) -> str:
        # Rendered on demand: the client refines `hint` after construction (e.g. the Retry-After delay).
        return self.render()

    def render(self) -> str:
        text = f"[{self.code}] {self.message.rstrip()}"
        if self.hint:
            text += f" {self.hint.strip()}"
        return text


class InvalidInput(KeyAPIError):
    code = "invalid_input"


class MissingApiKey(KeyAPIError):
    code = "missing_api_key"
    default_hint = (
        'Set KEYAPI_API_KEY in the MCP server\'s environment (e.g. the "env" block of the client '
        "config, or a .env file where the server runs) and restart the server. Get a key from "
        "https://keyapi.ai/app/dashboard. Try the bundled sample with `keyapi-mcp --demo`."
    )


class Unauthorized(KeyAPIError):
    code = "unauthorized"
    default_hint = (
        "The KeyAPI key was rejected or is not allowed to use this endpoint. Check KEYAPI_API_KEY "
        "in the server's environment; retrying will not help."
    )


class OutOfCredits(KeyAPIError):
    code = "out_of_credits"
    default_hint = (
        "The KeyAPI account has no credits left. Top up at https://keyapi.ai/app/dashboard; "
        "cached results remain available through this server."
    )


class BudgetExceeded(KeyAPIError):
    code = "budget_exceeded"
    # Which local limit refused the call (the `limit` label of keyapi_budget_refusals_total); None when the
    # refusal is not a limit at all (an unusable ledger, `StateStoreError`).
    limit: ClassVar[str | None] = None


class CallCapReached(BudgetExceeded):
    limit = "per_call"


class DailyLimitReached(BudgetExceeded):
    limit = "daily"


class UserLimitReached(BudgetExceeded):
    """This caller's own daily credit limit (KEYAPI_USER_DAILY_CREDIT_LIMIT) is spent; others may still call."""

    limit = "user"


class ConfirmationRequired(KeyAPIError):
    """A call above KEYAPI_CONFIRM_ABOVE_CREDITS from a client that cannot be asked: the quote and a token."""

    code = "confirmation_required"


class ConfirmationInvalid(KeyAPIError):
    """A `confirm` token that is unknown, expired, used, another caller's, or for another call or a smaller spend."""

    code = "confirmation_invalid"


class SpendDeclined(KeyAPIError):
    """The user said no (or dismissed the question) to a quoted spend: nothing was requested."""

    code = "declined"


class RateLimited(KeyAPIError):
    code = "rate_limited"


class UpstreamError(KeyAPIError):
    code = "upstream_error"


class UpstreamTimeout(KeyAPIError):
    code = "timeout"


class StateStoreError(BudgetExceeded):
    """The credit ledger or cache cannot be read or written.

    Before a request it fails the call closed, as a budget refusal naming the store (no upstream request may
    be made without a reservation). After a paid request the service catches it: the rows are still returned,
    with a warning that they could not be recorded or cached.
    """


class ServerBusy(RateLimited):
    """Every tool-call slot stayed taken for the whole bounded wait (KEYAPI_MCP_MAX_CONCURRENT_CALLS)."""


class UnknownTool(KeyAPIError):
    code = "unknown_tool"
    default_hint = "Call tools/list to see the tools this server offers (get_video_products, get_credit_usage)."


class AuthServerUnavailable(Exception):
    """The authorization server's metadata or keys could not be fetched: no token can be checked now (HTTP 503)."""


# -- start-up errors: reported on stderr by the CLI, never to a model ---------------------------------


class ConfigError(ValueError):
    """A setting is invalid; the message is one line per offending variable (exit status 2)."""


class HttpConfigError(ConfigError):
    """The HTTP transport cannot start safely with this configuration (exit status 2)."""


class HttpBindError(HttpConfigError):
    """The address cannot be listened on (port in use, address not local, no permission)."""


class StoreOpenError(RuntimeError):
    """The state database cannot be opened or migrated (corrupt, empty, unwritable, full). Fatal at start."""
