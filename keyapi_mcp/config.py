"""One settings object, read from the environment (then `.env` in the working directory).

Invalid values stop the server at start: `load_settings` turns pydantic's report into one line per
variable that names the variable, because a misconfigured server that starts anyway would spend
credits under limits the user never chose.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from keyapi_mcp.diagnose import setting_source
from keyapi_mcp.errors import ConfigError

ENV_PREFIX = "KEYAPI_"
DEFAULT_BASE_URL = "https://api.keyapi.ai"
DEFAULT_OAUTH_SCOPES = ("keyapi:read",)
DEFAULT_OAUTH_JWKS_TTL_SECONDS = 3600
MIN_OUTPUT_TOKENS = 2_000
MIN_STATE_KEY_CHARS = 32  # the SDK's request-state codec wants a secret of at least 32 bytes

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def is_loopback_host(host: str) -> bool:
    """True for `localhost` and loopback IP literals (127.0.0.0/8, ::1)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """Server configuration. Every field maps to `KEYAPI_<FIELD>`; secrets are `SecretStr` (hidden in repr)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        validate_default=True,
    )

    api_key: SecretStr | None = Field(default=None, description="Bearer key for the upstream.")
    base_url: str = Field(default=DEFAULT_BASE_URL, description="Upstream origin.")
    max_credits_per_call: int = Field(default=5, ge=0, le=100_000)
    max_rps: float = Field(default=5.0, gt=0, le=10_000)
    timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    daily_credit_limit: int = Field(default=100, ge=0)
    # Each caller's own daily limit (keyapi_mcp.caller), checked together with the daily one; 0 = none.
    user_daily_credit_limit: int = Field(default=0, ge=0)
    cache_ttl_seconds: int = Field(default=21_600, ge=0)
    # Consent before a large spend (keyapi_mcp.core.consent): a call that may spend more than this asks the user
    # first (elicitation, else a confirmation token); 0 = never ask. Unset, it is each call's own per-call cap
    # (KEYAPI_MAX_CREDITS_PER_CALL, or the cap sized from its ids): a call within that cap spends as it always did
    # (no deployment, bundle setting or benchmark changes behaviour), and one that asks for more with max_credits
    # is quoted and asked instead of stopping at the cap.
    confirm_above_credits: int | None = Field(default=None, ge=0, le=100_000)
    max_credits_with_consent: int = Field(default=25, ge=0, le=100_000)
    # Estimated tokens of a get_video_products text answer (see keyapi_mcp.sizing); 0 = no budget.
    max_output_tokens: int = Field(default=8_000, ge=0, le=1_000_000)
    # Product entries in each list of a get_video_products structured result (keyapi_mcp.sizing); 0 = no cap.
    max_structured_products: int = Field(default=1_000, ge=0, le=1_000_000)
    # `resource_link` content items after the text (docs/clients.md "Results"): off by default, because agent
    # frameworks turn them into file attachments their model providers refuse or try to download.
    resource_links: bool = False
    state_dir: Path | None = Field(default=None)
    state_url: str | None = Field(default=None)
    log_level: LogLevel = "WARNING"

    # HTTP transport (see README "Running as a service").
    mcp_auth_token: SecretStr | None = None
    mcp_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    mcp_allowed_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    mcp_max_concurrent_calls: int = Field(default=32, ge=1, le=10_000)
    mcp_max_body_bytes: int = Field(default=262_144, ge=1024)
    # OAuth 2.1 resource server on the HTTP transport (see docs/team.md and keyapi_mcp.transport.oauth).
    mcp_oauth_issuer: str | None = None
    mcp_resource_url: str | None = None
    mcp_oauth_scopes: Annotated[list[str], NoDecode] = Field(default_factory=lambda: list(DEFAULT_OAUTH_SCOPES))
    mcp_oauth_jwks_url: str | None = None
    # Age after which the IdP's signing keys are refreshed (in the background: the cached ones keep verifying).
    mcp_oauth_jwks_ttl_seconds: int = Field(default=DEFAULT_OAUTH_JWKS_TTL_SECONDS, ge=1, le=86_400)
    # Prometheus metrics at GET /metrics (HTTP transport), behind this token or KEYAPI_MCP_AUTH_TOKEN.
    mcp_metrics: bool = False
    mcp_metrics_token: SecretStr | None = None
    # Slow or idle HTTP clients (see keyapi_mcp.transport.guards) and the graceful stop on SIGTERM/SIGINT.
    mcp_read_timeout_seconds: float = Field(default=15.0, gt=0, le=600)
    mcp_max_connections: int = Field(default=256, ge=1, le=100_000)
    mcp_shutdown_grace_seconds: int = Field(default=30, ge=0, le=3600)
    # Seals the state of the 2026-07-28 input-required round trip (a user's answer to a spend question) so any
    # replica can resume it; unset, each process seals with a key of its own (enough for one process).
    mcp_request_state_key: SecretStr | None = None

    @field_validator("api_key", "mcp_auth_token", "mcp_metrics_token", "mcp_request_state_key", mode="before")
    @classmethod
    def _blank_secret_is_unset(cls, value: object) -> object:
        # An empty `KEYAPI_API_KEY=` in a config file means "not set", not "the empty key".
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("mcp_request_state_key")
    @classmethod
    def _long_enough_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < MIN_STATE_KEY_CHARS:
            raise ValueError(f"must be at least {MIN_STATE_KEY_CHARS} characters (e.g. openssl rand -hex 32)")
        return value

    @field_validator("mcp_metrics")
    @classmethod
    def _metrics_installed(cls, value: bool) -> bool:
        import importlib.util

        if value and importlib.util.find_spec("prometheus_client") is None:
            raise ValueError("needs the prometheus-client package: pip install 'keyapi-mcp[metrics]'")
        return value

    @field_validator("max_output_tokens")
    @classmethod
    def _budget_floor(cls, value: int) -> int:
        if 0 < value < MIN_OUTPUT_TOKENS:
            raise ValueError(f"must be 0 (no budget) or at least {MIN_OUTPUT_TOKENS} (the answer for 50 videos)")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("state_url", mode="before")
    @classmethod
    def _check_state_url(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str):
            raise ValueError("must be a string")
        scheme = urlsplit(value).scheme
        if scheme not in ("sqlite", "redis", "rediss"):
            raise ValueError("must start with sqlite:///, redis:// or rediss://")
        return value

    @field_validator("mcp_allowed_hosts", "mcp_allowed_origins", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("mcp_oauth_issuer", "mcp_oauth_jwks_url", mode="before")
    @classmethod
    def _check_oauth_url(cls, value: object) -> object:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if not isinstance(value, str):
            raise ValueError("must be a string")
        # An issuer is compared with the token's `iss` exactly (RFC 8414), so only surrounding blanks go.
        return _checked_url(value.strip(), example="https://login.example.com")

    @field_validator("mcp_resource_url", mode="before")
    @classmethod
    def _check_resource_url(cls, value: object, info: ValidationInfo) -> object:
        issuer = info.data.get("mcp_oauth_issuer")
        if value is None or (isinstance(value, str) and not value.strip()):
            if issuer:
                raise ValueError(
                    "is required with KEYAPI_MCP_OAUTH_ISSUER: set it to this server's public /mcp URL "
                    "(e.g. https://mcp.example.com/mcp), the audience its access tokens are issued for"
                )
            return None
        if not isinstance(value, str):
            raise ValueError("must be a string")
        if not issuer:
            raise ValueError("needs KEYAPI_MCP_OAUTH_ISSUER (the authorization server that issues its tokens)")
        return _checked_url(value.strip(), example="https://mcp.example.com/mcp")

    @field_validator("mcp_oauth_scopes", mode="before")
    @classmethod
    def _scope_list(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.replace(",", " ").split()
            if not value:  # a blank variable means "not set", as for the secrets
                return list(DEFAULT_OAUTH_SCOPES)
        if isinstance(value, list):
            for scope in value:
                # RFC 6749 scope-token characters; they are also quoted in WWW-Authenticate answers.
                if not isinstance(scope, str) or not scope or any(c in '"\\' or not "!" <= c <= "~" for c in scope):
                    raise ValueError("must be scope names separated by commas or spaces (e.g. keyapi:read)")
        return value

    @field_validator("mcp_oauth_jwks_url")
    @classmethod
    def _jwks_needs_issuer(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and not info.data.get("mcp_oauth_issuer"):
            raise ValueError("needs KEYAPI_MCP_OAUTH_ISSUER (tokens are checked against that issuer)")
        return value

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, value: str) -> str:
        return _checked_url(value.strip().rstrip("/"), example="https://api.keyapi.ai", origin_only=True)

    def secret_values(self) -> tuple[str, ...]:
        """The secrets this process holds, for the log redaction (`keyapi_mcp.logsafety`)."""
        secrets = (self.api_key, self.mcp_auth_token, self.mcp_request_state_key)
        return tuple(s.get_secret_value() for s in secrets if s is not None)

    @property
    def has_api_key(self) -> bool:
        return self.api_key is not None and bool(self.api_key.get_secret_value())

    @property
    def oauth_enabled(self) -> bool:
        """True when the HTTP transport is an OAuth 2.1 resource server (issuer and resource URL set)."""
        return self.mcp_oauth_issuer is not None and self.mcp_resource_url is not None


def _checked_url(value: str, *, example: str, origin_only: bool = False) -> str:
    """An absolute https URL, or http on a loopback host (a local test IdP or upstream); no credentials or
    fragment. `origin_only` also refuses a query: the upstream base URL gets the endpoint path appended."""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"must be an absolute http(s) URL such as {example}")
    try:
        parts.port  # noqa: B018 -- urlsplit checks the port lazily; a bad one must fail at start, not per request
    except ValueError:
        raise ValueError("has an invalid port (expected a number up to 65535)") from None
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise ValueError("must not contain spaces or control characters")
    if parts.fragment or parts.username or parts.password or (origin_only and parts.query):
        raise ValueError(
            "must be a bare origin (no credentials, query or fragment)"
            if origin_only
            else "must not contain credentials or a #fragment"
        )
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ValueError("plain http:// is only accepted for loopback hosts (127.0.0.1, localhost); use https://")
    return value


def _env_name(loc: tuple[int | str, ...]) -> str:
    field = str(loc[0]) if loc else "?"
    return f"{ENV_PREFIX}{field.upper()}"


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment and `.env`; raise `ConfigError` naming each bad variable.

    The offending value is not echoed: it may be a secret pasted into the wrong variable.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for err in exc.errors(include_input=False, include_url=False):
            msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
            loc = tuple(err.get("loc", ()))
            name = _env_name(loc)
            source = "the command line" if loc and loc[0] in overrides else setting_source(name)
            lines.append(f"{name}: {msg}" + (f" (from {source})" if source else ""))
        raise ConfigError("; ".join(lines)) from None
