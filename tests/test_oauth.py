"""The OAuth 2.1 resource server (keyapi_mcp.transport.oauth) against a real authorization server.

The IdP is the certified Node `oidc-provider` (tests/oidc_proc.py) on 127.0.0.1; keyapi-mcp runs in a real
uvicorn on another port, built as the CLI builds it. Tokens come from the provider (client credentials, or
authorization code + PKCE as a connector gets them); tokens with claims the provider would not be asked
for (expired, another issuer…) are signed here with the provider's own key. Every refused request is
checked to have reached neither the upstream nor the ledger.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import jwt
import pytest
import respx
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from helpers import TEST_AUTH_TOKEN, THREE_ROWS, TOOL, free_port, make_settings, parsed
from jwt.utils import base64url_encode
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from oidc_proc import OIDCProvider, SigningKey, install_oidc_provider

from keyapi_mcp.config import Settings, load_settings
from keyapi_mcp.errors import AuthServerUnavailable, ConfigError
from keyapi_mcp.server import build_server
from keyapi_mcp.state.sqlite_store import SQLiteStore
from keyapi_mcp.surface.caller import STATIC_CALLER, current_caller
from keyapi_mcp.transport.http import build_http_app, check_http_config, uvicorn_server
from keyapi_mcp.transport.jwks import FAILURE_COOLDOWN_SECONDS, JWKSCache, metadata_urls
from keyapi_mcp.transport.oauth import JWTVerifier
from keyapi_mcp.upstream.demo import FakeUpstream, demo_dataset, mock_transport

OTHER_RESOURCE = "https://other.example/mcp"
SCOPE = "keyapi:read"
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
CALL = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "tools/call",
    "params": {"name": TOOL, "arguments": {"video_ids": [THREE_ROWS]}},
}
STARTUP_TIMEOUT = 30.0


@pytest.fixture(scope="session")
def oidc_node() -> Path:
    return install_oidc_provider()


@pytest.fixture(scope="module")
def mcp_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def resource(mcp_port: int) -> str:
    return f"http://127.0.0.1:{mcp_port}/mcp"


def start_idp(node: Path, workdir: Path, resource: str) -> OIDCProvider:
    # `other:read` is a scope the IdP grants for this server too, but not the one keyapi-mcp requires.
    return OIDCProvider(node, workdir, resources={resource: f"{SCOPE} other:read", OTHER_RESOURCE: SCOPE})


@pytest.fixture(scope="module")
def idp(oidc_node: Path, tmp_path_factory: pytest.TempPathFactory, resource: str) -> Iterator[OIDCProvider]:
    with start_idp(oidc_node, tmp_path_factory.mktemp("idp"), resource) as provider:
        yield provider


def oauth_settings(issuer: str, resource: str, **overrides: Any) -> Settings:
    return make_settings(mcp_oauth_issuer=issuer, mcp_resource_url=resource, log_level="DEBUG", **overrides)


class Served:
    def __init__(self, base: str, upstream: FakeUpstream, store: SQLiteStore) -> None:
        self.base = base
        self.upstream = upstream
        self.store = store

    async def spent(self) -> int:
        return (await self.store.usage_today()).spent


async def whoami() -> str:
    """A probe tool: the caller identity the per-user budget will see."""
    return current_caller()


@contextmanager
def serving(settings: Settings, port: int) -> Iterator[Served]:
    """keyapi-mcp over HTTP on 127.0.0.1:`port` with a fake upstream whose requests the test can count."""
    upstream = FakeUpstream(demo_dataset(), api_key=settings.api_key.get_secret_value() if settings.api_key else None)
    store = SQLiteStore(":memory:")
    server = build_server(settings, transport=mock_transport(upstream), store=store)
    server.add_tool(whoami, name="whoami")
    app = build_http_app(server, settings, host="127.0.0.1", port=port)
    uv = uvicorn_server(app, host="127.0.0.1", port=port, settings=settings)
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield Served(f"http://127.0.0.1:{port}", upstream, store)
    finally:
        uv.should_exit = True
        thread.join(STARTUP_TIMEOUT)


async def call_tools(base: str, token: str) -> tuple[Any, str]:
    """Through the SDK's MCP client with the bearer token: one paid call and the caller identity."""
    async with (
        httpx2.AsyncClient(headers={"authorization": f"Bearer {token}"}, timeout=30) as http,
        Client(streamable_http_client(f"{base}/mcp", http_client=http, terminate_on_close=False)) as client,
    ):
        result = await client.call_tool(TOOL, {"video_ids": [THREE_ROWS]})
        caller = await client.call_tool("whoami", {})
    return result, caller.content[0].text  # type: ignore[union-attr]


def post_call(base: str, token: str | None) -> httpx.Response:
    headers = dict(MCP_HEADERS)
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return httpx.post(f"{base}/mcp", json=CALL, headers=headers, timeout=30)


def claims(idp: OIDCProvider, resource: str, **changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {"iss": idp.issuer, "aud": resource, "sub": "mallory", "client_id": "reporting-bot", "scope": SCOPE}
    base.update(iat=now, exp=now + 300)
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


# ---------------------------------------------------------------------------------------------
# Discovery by clients: the Protected Resource Metadata and the 401 that points at it


def test_the_protected_resource_metadata_names_the_issuer_and_the_401_points_at_it(
    idp: OIDCProvider, resource: str, mcp_port: int
):
    with serving(oauth_settings(idp.issuer, resource), mcp_port) as served:
        metadata = httpx.get(f"{served.base}/.well-known/oauth-protected-resource/mcp", timeout=10)
        refused = post_call(served.base, None)
        health = httpx.get(f"{served.base}/healthz", timeout=10)

    assert metadata.status_code == 200
    document = metadata.json()
    assert document["resource"] == resource
    assert document["authorization_servers"] == [idp.issuer]
    assert document["scopes_supported"] == [SCOPE]
    assert refused.status_code == 401
    challenge = refused.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{served.base}/.well-known/oauth-protected-resource/mcp"' in challenge
    assert health.status_code == 200, "the health check needs no token"
    assert served.upstream.requests == []


# ---------------------------------------------------------------------------------------------
# Accepted tokens


@pytest.mark.anyio
async def test_a_client_credentials_token_from_the_idp_calls_the_paid_tool_as_its_client(
    idp: OIDCProvider, resource: str, mcp_port: int
):
    token = idp.client_credentials_token(resource, SCOPE)
    with serving(oauth_settings(idp.issuer, resource), mcp_port) as served:
        result, caller = await call_tools(served.base, token)
        spent = await served.spent()

    assert [v.video_id for v in parsed(result).videos] == [THREE_ROWS]
    assert caller == "reporting-bot", "a client-credentials token's caller is its client"
    assert len(served.upstream.requests) == 1 and spent == 1


@pytest.mark.anyio
async def test_a_user_token_from_the_authorization_code_flow_with_pkce_calls_the_tool_as_that_user(
    idp: OIDCProvider, resource: str, mcp_port: int
):
    issued = await anyio.to_thread.run_sync(
        lambda: idp.authorization_code_token(resource, f"openid {SCOPE}", login="alice")
    )
    with serving(oauth_settings(idp.issuer, resource), mcp_port) as served:
        result, caller = await call_tools(served.base, issued["access_token"])

    assert not result.is_error
    assert caller == "alice"


@pytest.mark.anyio
async def test_the_static_token_keeps_working_next_to_oauth_as_the_caller_static(
    idp: OIDCProvider, resource: str, mcp_port: int
):
    settings = oauth_settings(idp.issuer, resource, mcp_auth_token=TEST_AUTH_TOKEN)
    with serving(settings, mcp_port) as served:
        result, caller = await call_tools(served.base, TEST_AUTH_TOKEN)
        near_miss = post_call(served.base, TEST_AUTH_TOKEN[:-1] + "x")

    assert not result.is_error
    assert caller == STATIC_CALLER
    assert near_miss.status_code == 401


# ---------------------------------------------------------------------------------------------
# Refused tokens: the right status and challenge, and nothing reaches the upstream or the ledger


def forged(idp: OIDCProvider, resource: str, case: str) -> str:
    key = idp.keys[0]
    now = int(time.time())
    if case == "expired":
        return key.sign(claims(idp, resource, iat=now - 7200, exp=now - 3600))
    if case == "not yet valid":
        return key.sign(claims(idp, resource, nbf=now + 3600))
    if case == "wrong audience":
        return key.sign(claims(idp, resource, aud="https://keyapi-mcp.attacker.example/mcp"))
    if case == "wrong issuer":
        return key.sign(claims(idp, resource, iss="https://evil.example"))
    if case == "no expiry":
        return key.sign(claims(idp, resource, exp=None))
    if case == "bad signature":  # another key claiming the issuer's key id
        return SigningKey(kid=key.kid).sign(claims(idp, resource))
    if case == "alg none":
        return jwt.encode(claims(idp, resource), None, algorithm="none", headers={"kid": key.kid})
    if case == "alg HS256":  # the classic confusion: the issuer's public key used as an HMAC secret
        public_pem = key.private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        segments = [{"alg": "HS256", "kid": key.kid, "typ": "JWT"}, claims(idp, resource)]
        signing_input = b".".join(base64url_encode(json.dumps(part).encode()) for part in segments)
        signature = hmac.new(public_pem, signing_input, hashlib.sha256).digest()
        return (signing_input + b"." + base64url_encode(signature)).decode()
    if case == "not a JWT":
        return "opaque-token-the-idp-never-issued"
    raise AssertionError(case)


# Each forged token and the reason the verifier must give for refusing it (logged, without the token).
FORGED_CASES = {
    "expired": "ExpiredSignatureError",
    "not yet valid": "ImmatureSignatureError",
    "wrong audience": "InvalidAudienceError",
    "wrong issuer": "InvalidIssuerError",
    "no expiry": "MissingRequiredClaimError",
    "bad signature": "InvalidSignatureError",
    "alg none": "algorithm 'none' is not an accepted asymmetric one",
    "alg HS256": "algorithm 'HS256' is not an accepted asymmetric one",
    "not a JWT": "not a JWT",
}


def test_invalid_tokens_get_401_with_the_challenge_and_spend_nothing(
    idp: OIDCProvider, resource: str, mcp_port: int, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="keyapi_mcp.transport.oauth")
    tokens = {case: forged(idp, resource, case) for case in FORGED_CASES}
    tokens["token for another resource"] = idp.client_credentials_token(OTHER_RESOURCE, SCOPE)
    with serving(oauth_settings(idp.issuer, resource), mcp_port) as served:
        answers = {case: post_call(served.base, token) for case, token in tokens.items()}
        spent = anyio.run(served.spent)

    for case, answer in answers.items():
        assert answer.status_code == 401, (case, answer.status_code, answer.text)
        challenge = answer.headers["www-authenticate"]
        assert 'error="invalid_token"' in challenge and "resource_metadata=" in challenge, case
    assert served.upstream.requests == [] and spent == 0
    reasons = [
        r.getMessage().removeprefix("refused a bearer token: ")
        for r in caplog.records
        if r.getMessage().startswith("refused a bearer token: ")
    ]
    assert reasons == [*FORGED_CASES.values(), "InvalidAudienceError"], "each token refused for its own reason"
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert not [case for case, token in tokens.items() if token in logged], "a refused token reached a log line"


def test_a_token_without_the_required_scope_gets_403_insufficient_scope(
    idp: OIDCProvider, resource: str, mcp_port: int
):
    token = idp.client_credentials_token(resource, "other:read", client_id="other-scope-bot")
    with serving(oauth_settings(idp.issuer, resource), mcp_port) as served:
        answer = post_call(served.base, token)

    assert answer.status_code == 403
    assert 'error="insufficient_scope"' in answer.headers["www-authenticate"]
    assert SCOPE in answer.json()["error_description"]
    assert served.upstream.requests == []


# ---------------------------------------------------------------------------------------------
# The IdP's keys over time: rotation, and the IdP unreachable


@pytest.mark.anyio
async def test_after_the_idp_rotates_its_signing_key_new_and_old_tokens_both_work(
    oidc_node: Path, tmp_path: Path, resource: str, mcp_port: int
):
    with (
        start_idp(oidc_node, tmp_path / "idp", resource) as idp,
        serving(oauth_settings(idp.issuer, resource), mcp_port) as served,
    ):
        before = idp.client_credentials_token(resource, SCOPE)
        first, _ = await call_tools(served.base, before)
        await anyio.to_thread.run_sync(idp.rotate)
        after = idp.client_credentials_token(resource, SCOPE)
        second, _ = await call_tools(served.base, after)
        again, _ = await call_tools(served.base, before)

    assert jwt.get_unverified_header(before)["kid"] != jwt.get_unverified_header(after)["kid"]
    assert not first.is_error and not second.is_error and not again.is_error


def test_with_the_idp_unreachable_a_request_gets_503_not_401_and_spends_nothing_then_recovers(
    oidc_node: Path, tmp_path: Path, resource: str, mcp_port: int
):
    idp = start_idp(oidc_node, tmp_path / "idp", resource)
    with idp:
        token = idp.client_credentials_token(resource, SCOPE)
    settings = oauth_settings(idp.issuer, resource, mcp_auth_token=TEST_AUTH_TOKEN)
    with serving(settings, mcp_port) as served:
        down = post_call(served.base, token)
        static = post_call(served.base, TEST_AUTH_TOKEN)
        spent_while_down = len(served.upstream.requests)
        with idp:
            time.sleep(int(down.headers["retry-after"]))  # the IdP is not asked again before then
            up = post_call(served.base, token)

    assert down.status_code == 503
    assert down.json()["error"] == "temporarily_unavailable"
    assert 1 <= int(down.headers["retry-after"]) <= FAILURE_COOLDOWN_SECONDS
    assert spent_while_down == 1, "only the static token's call reached the upstream"
    assert static.status_code == 200, "scripts and health checks on the static token do not depend on the IdP"
    assert up.status_code == 200


class CountingTransport(httpx.AsyncHTTPTransport):
    """A real transport that remembers which URLs the verifier fetched."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(str(request.url))
        return await super().handle_async_request(request)


@pytest.mark.anyio
async def test_keys_are_discovered_rfc8414_first_cached_and_unknown_key_ids_refetch_at_most_once_per_cooldown(
    idp: OIDCProvider, resource: str
):
    now = [1000.0]
    transport = CountingTransport()
    keys = JWKSCache(idp.issuer, transport=transport, clock=lambda: now[0], unknown_kid_cooldown=30)
    verifier = JWTVerifier(keys, resource_url=resource)
    good = idp.client_credentials_token(resource, SCOPE)

    assert (await verifier.verify(good)) is not None
    assert (await verifier.verify(good)) is not None
    discovery = list(transport.urls)
    stranger = SigningKey(kid="made-up")
    assert await verifier.verify(stranger.sign(claims(idp, resource))) is None
    after_first_unknown = len(transport.urls)
    assert await verifier.verify(SigningKey(kid="made-up-2").sign(claims(idp, resource))) is None
    within_cooldown = len(transport.urls)
    now[0] += 31
    assert await verifier.verify(SigningKey(kid="made-up-3").sign(claims(idp, resource))) is None

    assert discovery == [
        f"{idp.issuer}/.well-known/oauth-authorization-server",  # RFC 8414, which oidc-provider serves
        f"{idp.issuer}/jwks",
    ], "discovery, then the keys, once for both verifications"
    assert after_first_unknown == len(discovery) + 1, "an unknown key id fetches the keys again"
    assert within_cooldown == after_first_unknown, "but not again within the cooldown"
    assert len(transport.urls) == within_cooldown + 1


# ---------------------------------------------------------------------------------------------
# Settings


def test_oauth_settings_need_https_off_loopback_and_both_the_issuer_and_the_resource_url(
    monkeypatch: pytest.MonkeyPatch,
):
    bad = {
        "KEYAPI_MCP_OAUTH_ISSUER=http://idp.example.com": "KEYAPI_MCP_OAUTH_ISSUER: plain http://",
        "KEYAPI_MCP_OAUTH_ISSUER=https://idp.example.com": "KEYAPI_MCP_RESOURCE_URL: is required",
        "KEYAPI_MCP_RESOURCE_URL=https://mcp.example.com/mcp": "KEYAPI_MCP_RESOURCE_URL: needs KEYAPI_MCP_OAUTH_ISSUER",
        "KEYAPI_MCP_OAUTH_JWKS_URL=https://idp.example.com/jwks": "KEYAPI_MCP_OAUTH_JWKS_URL: needs",
        'KEYAPI_MCP_OAUTH_SCOPES=a"b': "KEYAPI_MCP_OAUTH_SCOPES:",
    }
    for assignment, expected in bad.items():
        name, _, value = assignment.partition("=")
        with monkeypatch.context() as env:
            env.setenv(name, value)
            with pytest.raises(ConfigError) as error:
                load_settings(_env_file=None)
        assert str(error.value).startswith(expected), (assignment, str(error.value))

    monkeypatch.setenv("KEYAPI_MCP_OAUTH_ISSUER", "https://idp.example.com/realms/team")
    monkeypatch.setenv("KEYAPI_MCP_RESOURCE_URL", "https://mcp.example.com/mcp")
    monkeypatch.setenv("KEYAPI_MCP_OAUTH_SCOPES", "keyapi:read, team:member")
    settings = load_settings(_env_file=None)
    assert settings.oauth_enabled and settings.mcp_oauth_scopes == ["keyapi:read", "team:member"]
    check_http_config(settings, "0.0.0.0", 8000)  # OAuth alone may guard a public bind


@pytest.mark.anyio
async def test_discovery_falls_back_to_openid_configuration_and_refuses_metadata_of_another_issuer():
    issuer = "https://idp.example.com/realms/team"
    assert metadata_urls(issuer) == [
        "https://idp.example.com/.well-known/oauth-authorization-server/realms/team",
        "https://idp.example.com/.well-known/openid-configuration/realms/team",
        "https://idp.example.com/realms/team/.well-known/openid-configuration",
    ]
    key = SigningKey(kid="k1")
    with respx.mock(assert_all_called=False) as idp:
        idp.get(metadata_urls(issuer)[0]).respond(404)
        idp.get(metadata_urls(issuer)[1]).respond(404)
        idp.get(metadata_urls(issuer)[2]).respond(json={"issuer": issuer, "jwks_uri": f"{issuer}/certs"})
        idp.get(f"{issuer}/certs").respond(json={"keys": [{k: v for k, v in key.jwk.items() if k != "d"}]})
        keys = JWKSCache(issuer)
        assert await keys.key_for("k1", "ES256") is not None
        assert await keys.key_for("k1", "RS256") is None, "a key is used only with its own algorithm"

    with respx.mock() as idp:
        idp.get(metadata_urls(issuer)[0]).respond(json={"issuer": "https://evil.example", "jwks_uri": f"{issuer}/c"})
        with pytest.raises(AuthServerUnavailable, match="not KEYAPI_MCP_OAUTH_ISSUER"):
            await JWKSCache(issuer).key_for("k1", "ES256")


@pytest.mark.anyio
async def test_a_jwt_whose_subject_is_static_never_shares_the_static_tokens_budget(
    idp: OIDCProvider, resource: str, mcp_port: int
):
    settings = oauth_settings(
        idp.issuer, resource, mcp_auth_token=TEST_AUTH_TOKEN, user_daily_credit_limit=1, cache_ttl_seconds=0
    )
    impostor = idp.keys[0].sign(claims(idp, resource, sub=STATIC_CALLER, client_id=STATIC_CALLER))
    with serving(settings, mcp_port) as served:
        static_result, static_caller = await call_tools(served.base, TEST_AUTH_TOKEN)
        # With the cache off the same video costs again: one shared per-user limit of 1 would refuse it.
        jwt_result, jwt_caller = await call_tools(served.base, impostor)
        spent = await served.spent()

    assert not static_result.is_error and not jwt_result.is_error
    assert static_caller == STATIC_CALLER
    assert jwt_caller != STATIC_CALLER and jwt_caller.startswith("~static~")
    assert spent == 2
