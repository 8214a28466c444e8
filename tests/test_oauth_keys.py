"""The OAuth verifier against identity providers on a bad day: key fetching, hostile documents, odd tokens.

keyapi-mcp runs in a real uvicorn on 127.0.0.1 (`serving` from tests/test_oauth.py). Its keys come either
from the real authorization server (the Node oidc-provider, tests/oidc_proc.py) or from `HostileIdP`
(tests/hostile_idp.py), a key server on 127.0.0.1 scripted to answer 500, hang, trickle, send 200 MB or a
gzip bomb, or documents of the wrong shape. Each test counts what the verifier asked of the key server and
what the signed-in requests got back.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import httpx
import jwt
import pytest
from helpers import TEST_AUTH_TOKEN, free_port, make_settings
from hostile_idp import JWKS_PATH, METADATA_PATH, HostileIdP, Reply, gzip_bomb
from oidc_proc import OIDCProvider, SigningKey, install_oidc_provider
from test_oauth import SCOPE, claims, oauth_settings, post_call, serving, start_idp

from keyapi_mcp.config import load_settings
from keyapi_mcp.errors import AuthServerUnavailable, ConfigError
from keyapi_mcp.transport.jwks import FAILURE_COOLDOWN_SECONDS, FETCH_DEADLINE_SECONDS, JWKSCache


def public_jwk(key: SigningKey) -> dict[str, Any]:
    return {k: v for k, v in key.jwk.items() if k != "d"}


KEY = SigningKey(kid="hostile-1")
PUBLIC_JWKS = {"keys": [public_jwk(KEY)]}
CONCURRENT = 10
# Generous against a loaded CI machine, still far below the waits these tests guard against.
PROMPT_SECONDS = 1.5
DEADLINE_MARGIN_SECONDS = 3.0


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def mcp_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def resource(mcp_port: int) -> str:
    return f"http://127.0.0.1:{mcp_port}/mcp"


@pytest.fixture(scope="module")
def idp(tmp_path_factory: pytest.TempPathFactory, resource: str) -> Iterator[OIDCProvider]:
    with start_idp(install_oidc_provider(), tmp_path_factory.mktemp("idp"), resource) as provider:
        yield provider


@pytest.fixture
def hostile() -> Iterator[HostileIdP]:
    with HostileIdP(PUBLIC_JWKS) as server:
        yield server


def token_of(server: HostileIdP, resource: str, key: SigningKey = KEY, **header: Any) -> str:
    """A token `server`'s key signed, as the IdP would issue it; `header` entries replace the usual ones."""
    headers = {"kid": key.kid, "typ": "at+jwt", **header}
    headers = {k: v for k, v in headers.items() if v is not None}
    return jwt.encode(claims(server, resource), key.private, algorithm="ES256", headers=headers)  # type: ignore[arg-type]


def concurrently(base: str, tokens: list[str]) -> list[httpx.Response]:
    with ThreadPoolExecutor(len(tokens)) as pool:
        return list(pool.map(lambda token: post_call(base, token), tokens))


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]


def assert_unavailable(answer: httpx.Response, case: str) -> None:
    assert answer.status_code == 503, (case, answer.status_code, answer.text[:200])
    assert answer.json()["error"] == "temporarily_unavailable", case
    assert 1 <= int(answer.headers["retry-after"]) <= FAILURE_COOLDOWN_SECONDS, (case, answer.headers["retry-after"])


# ---------------------------------------------------------------------------------------------
# Backing off: a failed fetch cools down, stale keys keep serving, a hung IdP delays no signed-in request


def test_with_the_key_server_failing_junk_tokens_fetch_the_keys_once_per_cooldown(
    hostile: HostileIdP, resource: str, mcp_port: int
):
    hostile.script[JWKS_PATH] = Reply(status=500, body=b"{}")
    junk = [token_of(hostile, resource, SigningKey(kid=f"made-up-{i}")) for i in range(30)]
    with serving(oauth_settings(hostile.issuer, resource), mcp_port) as served:
        started = time.monotonic()
        answers = [post_call(served.base, token) for token in junk]
        elapsed = time.monotonic() - started

    for answer in answers:
        assert_unavailable(answer, "junk token, keys failing")
    fetches = hostile.hits[JWKS_PATH]
    print(f"30 junk tokens in {elapsed:.2f} s with the keys failing: {fetches} key fetch(es)")
    assert fetches <= 1 + elapsed // FAILURE_COOLDOWN_SECONDS, f"{fetches} key fetches for 30 junk tokens"
    assert hostile.hits[METADATA_PATH] == 1
    assert served.upstream.requests == []


@pytest.mark.anyio
async def test_a_failed_fetch_cools_down_and_stale_keys_are_refreshed_in_the_background(hostile: HostileIdP):
    clock = Clock()
    keys = JWKSCache(hostile.issuer, clock=clock, max_age=60, failure_cooldown=10, deadline=1.0)
    hostile.script[JWKS_PATH] = Reply(status=500, body=b"{}")
    for _ in range(5):
        with pytest.raises(AuthServerUnavailable):
            await keys.key_for(KEY.kid, "ES256")
    assert hostile.hits[JWKS_PATH] == 1, "no refetch within the cooldown"
    assert keys.retry_after() == 10

    clock.now += 10.5
    hostile.script[JWKS_PATH] = Reply.json(PUBLIC_JWKS)
    assert await keys.key_for(KEY.kid, "ES256") is not None, "fetched again once the cooldown is over"
    assert hostile.hits[JWKS_PATH] == 2

    clock.now += 61  # the keys are stale, and the IdP hangs
    hostile.script[JWKS_PATH] = Reply(hang=True)
    started = time.monotonic()
    for _ in range(5):
        assert await keys.key_for(KEY.kid, "ES256") is not None, "stale keys still verify"
    waited = time.monotonic() - started
    assert keys.background_refresh is not None
    await keys.background_refresh  # ends at the fetch deadline, as a failure
    after_hang = hostile.hits[JWKS_PATH]
    assert await keys.key_for(KEY.kid, "ES256") is not None
    within_cooldown = hostile.hits[JWKS_PATH]

    clock.now += 10.5
    hostile.script[JWKS_PATH] = Reply.json(PUBLIC_JWKS)
    assert await keys.key_for(KEY.kid, "ES256") is not None
    await keys.background_refresh
    clock.now += 30  # fresh again: no fetch
    assert await keys.key_for(KEY.kid, "ES256") is not None

    assert waited < 0.5, f"token checks waited {waited:.2f} s for a hung IdP with keys cached"
    assert after_hang == 3, "one background refresh for five checks of stale keys"
    assert within_cooldown == 3, "no refresh attempt within the cooldown after it failed"
    assert hostile.hits[JWKS_PATH] == 4, "the next refresh after the cooldown, then none while fresh"


@pytest.mark.anyio
async def test_requests_that_arrive_during_a_fetch_share_its_outcome_first_load_and_rotation_alike(
    hostile: HostileIdP,
):
    rotated = SigningKey(kid="hostile-2")
    keys = JWKSCache(hostile.issuer, unknown_kid_cooldown=30)

    async def ten(kid: str) -> list[object]:
        outcomes: list[object] = []

        async def one() -> None:
            try:
                outcomes.append(await keys.key_for(kid, "ES256"))
            except AuthServerUnavailable as exc:
                outcomes.append(exc)

        async with anyio.create_task_group() as group:
            for _ in range(CONCURRENT):
                group.start_soon(one)
        return outcomes

    hostile.script[JWKS_PATH].delay = 0.3  # every request arrives while the first one's fetch is under way
    first = await ten(KEY.kid)
    first_fetches = hostile.hits[JWKS_PATH]
    # The IdP rotates: tokens naming its new key arrive together, while the cache holds only the old one.
    hostile.script[JWKS_PATH] = Reply.json({"keys": [*PUBLIC_JWKS["keys"], public_jwk(rotated)]}, delay=0.3)
    rotation = await ten(rotated.kid)
    rotation_fetches = hostile.hits[JWKS_PATH] - first_fetches

    assert first_fetches == 1 and rotation_fetches == 1
    assert all(key is not None and not isinstance(key, Exception) for key in first), first
    assert all(key is not None and not isinstance(key, Exception) for key in rotation), rotation


@pytest.mark.anyio
async def test_when_a_rotation_fetch_fails_every_request_that_waited_on_it_is_unavailable(hostile: HostileIdP):
    keys = JWKSCache(hostile.issuer)
    assert await keys.key_for(KEY.kid, "ES256") is not None
    hostile.script[JWKS_PATH] = Reply.raw(b'{"keys": 5}', delay=0.3)
    outcomes: list[object] = []

    async def one() -> None:
        try:
            outcomes.append(await keys.key_for("hostile-2", "ES256"))
        except AuthServerUnavailable as exc:
            outcomes.append(exc)

    async with anyio.create_task_group() as group:
        for _ in range(CONCURRENT):
            group.start_soon(one)

    assert [type(o).__name__ for o in outcomes] == ["AuthServerUnavailable"] * CONCURRENT, outcomes
    assert hostile.hits[JWKS_PATH] == 2


def test_stale_keys_keep_serving_signed_in_requests_while_the_idp_hangs(
    idp: OIDCProvider, resource: str, mcp_port: int
):
    token = idp.client_credentials_token(resource, SCOPE)
    published = httpx.get(f"{idp.issuer}/jwks", timeout=10).json()
    with HostileIdP(published) as keyserver:
        settings = oauth_settings(
            idp.issuer, resource, mcp_oauth_jwks_url=keyserver.jwks_url, mcp_oauth_jwks_ttl_seconds=1
        )
        with serving(settings, mcp_port) as served:
            first = post_call(served.base, token)
            keyserver.script[JWKS_PATH] = Reply(hang=True)
            time.sleep(1.2)  # older than KEYAPI_MCP_OAUTH_JWKS_TTL_SECONDS
            timings = []
            for _ in range(5):
                started = time.monotonic()
                answer = post_call(served.base, token)
                timings.append(time.monotonic() - started)
                assert answer.status_code == 200, (answer.status_code, answer.text[:200])
            fetches = keyserver.hits[JWKS_PATH]

    print(f"stale keys, IdP hung: requests took {', '.join(f'{t:.3f}' for t in timings)} s; {fetches} key fetches")
    assert first.status_code == 200
    assert max(timings) < FETCH_DEADLINE_SECONDS / 2, f"signed-in requests waited for the hung IdP: {timings}"
    assert fetches == 2, f"{fetches} key fetches: the first, then one background refresh while the IdP hangs"


def test_the_keys_refresh_age_is_a_setting_checked_at_start(monkeypatch: pytest.MonkeyPatch):
    for value in ("0", "-5", "ten", "86401"):
        monkeypatch.setenv("KEYAPI_MCP_OAUTH_JWKS_TTL_SECONDS", value)
        with pytest.raises(ConfigError) as error:
            load_settings(_env_file=None)
        assert str(error.value).startswith("KEYAPI_MCP_OAUTH_JWKS_TTL_SECONDS:"), (value, str(error.value))
    monkeypatch.setenv("KEYAPI_MCP_OAUTH_JWKS_TTL_SECONDS", "600")
    assert load_settings(_env_file=None).mcp_oauth_jwks_ttl_seconds == 600
    monkeypatch.delenv("KEYAPI_MCP_OAUTH_JWKS_TTL_SECONDS")
    assert load_settings(_env_file=None).mcp_oauth_jwks_ttl_seconds == 3600


# ---------------------------------------------------------------------------------------------
# Bounded reading: 200 MB and a gzip bomb, measured in a process of their own

MEASURE = """
import asyncio, json, sys
from keyapi_mcp.transport.jwks import JWKSCache
from keyapi_mcp.errors import AuthServerUnavailable

def peak_mb():  # VmHWM: this process image's peak RSS (ru_maxrss would include the forked parent's)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024

async def fetch(issuer, jwks_url):
    try:
        await JWKSCache(issuer, jwks_url=jwks_url).key_for("k", "ES256")
    except AuthServerUnavailable as exc:
        return str(exc)
    return "no error"

issuer = sys.argv[1]
asyncio.run(fetch(issuer, issuer + "/warm-up"))  # imports and first connection out of the measure
before = peak_mb()
error = asyncio.run(fetch(issuer, issuer + "/jwks"))
print(json.dumps({"growth_mb": peak_mb() - before, "before_mb": before, "error": error}))
"""
# A limit on the child's address space, so that an unbounded reader fails there instead of taking the machine.
ADDRESS_SPACE_LIMIT = 2 << 30


@pytest.mark.parametrize("case", ["200 MB body", "gzip bomb"])
def test_huge_and_gzip_bomb_key_documents_are_read_with_bounded_memory(hostile: HostileIdP, case: str):
    if case == "200 MB body":
        hostile.script[JWKS_PATH] = Reply(body=b'{"keys": [', size=200_000_000)
    else:
        bomb = gzip_bomb(1 << 30)
        hostile.script[JWKS_PATH] = Reply(
            body=bomb, headers=(("content-type", "application/json"), ("content-encoding", "gzip"))
        )
    limit = f"import resource; resource.setrlimit(resource.RLIMIT_AS, ({ADDRESS_SPACE_LIMIT}, {ADDRESS_SPACE_LIMIT}))\n"
    done = subprocess.run(
        [sys.executable, "-c", limit + MEASURE, hostile.issuer],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    measured = json.loads(done.stdout)
    print(f"{case}: peak RSS growth {measured['growth_mb']:.1f} MB (from {measured['before_mb']:.1f} MB)")
    assert "more than 1000000 bytes" in measured["error"], measured
    assert measured["growth_mb"] < 16, measured
    assert hostile.hits[JWKS_PATH] == 1


# ---------------------------------------------------------------------------------------------
# Unusable documents: 503 for the request that fetched and for every request that waited on it

DEEP = b"[" * 100_000 + b"]" * 100_000
UNUSABLE_JWKS = {
    "keys is a number": b'{"keys": 5}',
    "keys is an object": b'{"keys": {"k": 1}}',
    "keys is null": b'{"keys": null}',
    "no keys member": b'{"issuer": "x"}',
    "an array": b"[]",
    "a string": b'"keys"',
    "deeply nested": DEEP,
    "deeply nested keys": b'{"keys": ' + DEEP + b"}",
    "members of the wrong type": b'{"keys": [5, "x", null, [], true]}',
    "key fields of the wrong type": b'{"keys": [{"kty": "EC", "crv": "P-256", "x": 5, "y": [], "kid": "hostile-1"}]}',
    "kty and use of the wrong type": b'{"keys": [{"kty": ["EC"], "use": {"a": 1}}]}',
    "an encryption key only": json.dumps({"keys": [{**PUBLIC_JWKS["keys"][0], "use": "enc"}]}).encode(),
    "not UTF-8": b'{"keys": "\xff\xfe"}',
    "NaN and Infinity": b'{"keys": [{"kty": NaN, "crv": Infinity}]}',
    "empty body": b"",
    "truncated": b'{"keys": [{"kty": "EC"',
    "more keys than any IdP publishes": json.dumps(
        {"keys": [dict(PUBLIC_JWKS["keys"][0], kid=f"k{i}") for i in range(2000)]}
    ).encode(),
}


def metadata(issuer: str, **fields: Any) -> bytes:
    return json.dumps({"issuer": issuer, **fields}).encode()


UNUSABLE_METADATA = {
    "metadata: issuer and jwks_uri of the wrong type": lambda issuer: b'{"issuer": [1], "jwks_uri": 5}',
    "metadata: jwks_uri a list": lambda issuer: metadata(issuer, jwks_uri=[issuer]),
    "metadata: an array": lambda issuer: b"[]",
    "metadata: deeply nested": lambda issuer: DEEP,
    "metadata: not JSON": lambda issuer: b"<html>sign in</html>",
    "metadata: jwks_uri not a URL": lambda issuer: metadata(issuer, jwks_uri="http://[::1"),
    "metadata: jwks_uri port out of range": lambda issuer: metadata(issuer, jwks_uri="http://127.0.0.1:99999/jwks"),
    "metadata: jwks_uri with a NUL": lambda issuer: metadata(issuer, jwks_uri=f"{issuer}/\u0000"),
    "metadata: jwks_uri without a host": lambda issuer: metadata(issuer, jwks_uri="https://"),
}


@pytest.mark.parametrize("case", [*UNUSABLE_JWKS, *UNUSABLE_METADATA])
def test_an_unusable_key_document_is_503_for_the_fetching_request_and_every_waiter(
    hostile: HostileIdP, resource: str, mcp_port: int, case: str, caplog: pytest.LogCaptureFixture
):
    if case in UNUSABLE_JWKS:
        hostile.script[JWKS_PATH] = Reply.raw(UNUSABLE_JWKS[case])
    else:
        hostile.script[METADATA_PATH] = Reply.raw(UNUSABLE_METADATA[case](hostile.issuer))
    hostile.script[METADATA_PATH].delay = 0.5  # every request arrives while the first one's fetch is under way
    token = token_of(hostile, resource)  # a good token: only the key document is wrong
    with serving(oauth_settings(hostile.issuer, resource), mcp_port) as served:
        answers = concurrently(served.base, [token] * CONCURRENT)

    for answer in answers:
        assert_unavailable(answer, case)
    assert errors_logged(caplog) == [], "an unusable document logged an error or a traceback"
    assert hostile.hits[METADATA_PATH] == 1
    assert served.upstream.requests == []


# ---------------------------------------------------------------------------------------------
# One deadline for discovery and keys together


@pytest.mark.parametrize("case", ["keys at 2 bytes/s", "metadata and keys each just under the deadline"])
def test_one_deadline_ends_discovery_and_key_fetch_together(
    hostile: HostileIdP, resource: str, mcp_port: int, case: str
):
    if case == "keys at 2 bytes/s":
        hostile.script[JWKS_PATH].bytes_per_second = 2
    else:  # each document alone arrives within the deadline, both together do not
        for path in (METADATA_PATH, JWKS_PATH):
            reply = hostile.script[path]
            reply.bytes_per_second = len(reply.body) / (FETCH_DEADLINE_SECONDS * 0.7)
    token = token_of(hostile, resource)
    with serving(oauth_settings(hostile.issuer, resource), mcp_port) as served:
        started = time.monotonic()
        with ThreadPoolExecutor(CONCURRENT) as pool:
            timed = list(pool.map(lambda _: (post_call(served.base, token), time.monotonic() - started), range(5)))

    for answer, _ in timed:
        assert_unavailable(answer, case)
    slowest = max(seconds for _, seconds in timed)
    print(f"{case}: every request answered 503 within {slowest:.2f} s")
    assert FETCH_DEADLINE_SECONDS - 0.5 < slowest < FETCH_DEADLINE_SECONDS + DEADLINE_MARGIN_SECONDS, slowest


# ---------------------------------------------------------------------------------------------
# Malformed token headers: 401, refused quietly


def b64(part: bytes) -> str:
    return base64.urlsafe_b64encode(part).rstrip(b"=").decode()


def with_header(header: bytes | dict[str, Any], payload: bytes = b'{"sub": "mallory"}') -> str:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return f"{b64(raw)}.{b64(payload)}.{b64(b'not a signature')}"


MALFORMED_HEADERS = {
    "alg a list": {"alg": ["ES256"], "kid": KEY.kid},
    "alg an object": {"alg": {"ES256": True}, "kid": KEY.kid},
    "alg a number": {"alg": 256, "kid": KEY.kid},
    "alg null": {"alg": None, "kid": KEY.kid},
    "alg NaN": b'{"alg": NaN, "kid": "hostile-1"}',
    "no alg": {"kid": KEY.kid},
    "alg none, capitalised": {"alg": "None", "kid": KEY.kid},
    "alg with a NUL": {"alg": "ES256\u0000", "kid": KEY.kid},
    "alg 5000 characters": {"alg": "E" * 5000, "kid": KEY.kid},
    "kid a number": {"alg": "ES256", "kid": 1},
    "kid a list": {"alg": "ES256", "kid": [KEY.kid]},
    "kid an object": {"alg": "ES256", "kid": {"id": KEY.kid}},
    "typ a list": {"alg": "ES256", "kid": KEY.kid, "typ": ["at+jwt"]},
    "crit not a list": {"alg": "ES256", "kid": KEY.kid, "crit": 5},
    "crit an unknown extension": {"alg": "ES256", "kid": KEY.kid, "crit": ["exp"], "exp": 1},
    "b64 false": {"alg": "ES256", "kid": KEY.kid, "b64": False, "crit": ["b64"]},
    "header an array": b'["ES256"]',
    "header not JSON": b"{alg: ES256}",
    "header not UTF-8": b'{"alg": "\xff"}',
    "header deeply nested": b'{"alg": ' + b"[" * 3000 + b"]" * 3000 + b"}",
}
MALFORMED_TOKENS = {
    "header not base64": "!!!.eyJ9.sig",
    "two segments": "eyJhbGciOiJFUzI1NiJ9.eyJ9",
    "four segments": "a.b.c.d",
    "dots only": "..",
    "spaces": "a b c",
}


def test_malformed_token_headers_are_refused_with_401_and_no_error_logged(
    hostile: HostileIdP, resource: str, mcp_port: int, caplog: pytest.LogCaptureFixture
):
    tokens = {case: with_header(header) for case, header in MALFORMED_HEADERS.items()}
    tokens.update(MALFORMED_TOKENS)
    with serving(oauth_settings(hostile.issuer, resource), mcp_port) as served:
        answers = {case: post_call(served.base, token) for case, token in tokens.items()}
        good = post_call(served.base, token_of(hostile, resource))

    for case, answer in answers.items():
        assert answer.status_code == 401, (case, answer.status_code, answer.text[:200])
        assert 'error="invalid_token"' in answer.headers["www-authenticate"], case
    assert errors_logged(caplog) == []
    assert good.status_code == 200, "and the server still serves good tokens"
    assert len(served.upstream.requests) == 1


# ---------------------------------------------------------------------------------------------
# The access token's type (RFC 9068 `at+jwt`, RFC 8725 §3.11 explicit typing)

ACCEPTED_TYPES = {"at+jwt": "at+jwt", "application/at+jwt": "application/at+jwt", "JWT": "JWT", "no typ": None}
REFUSED_TYPES = ["dpop+jwt", "logout+jwt", "secevent+jwt", "id_token+jwt", "JOSE"]


def test_access_tokens_typed_at_jwt_or_jwt_are_accepted_and_other_jwt_types_refused(
    hostile: HostileIdP, resource: str, mcp_port: int, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.INFO, logger="keyapi_mcp.transport.oauth")
    with serving(oauth_settings(hostile.issuer, resource), mcp_port) as served:
        accepted = {
            case: post_call(served.base, token_of(hostile, resource, typ=t)) for case, t in ACCEPTED_TYPES.items()
        }
        refused = {t: post_call(served.base, token_of(hostile, resource, typ=t)) for t in REFUSED_TYPES}

    assert {case: a.status_code for case, a in accepted.items()} == dict.fromkeys(ACCEPTED_TYPES, 200)
    assert {t: a.status_code for t, a in refused.items()} == dict.fromkeys(REFUSED_TYPES, 401)
    reasons = [r.getMessage() for r in caplog.records if "is not an access token" in r.getMessage()]
    assert len(reasons) == len(REFUSED_TYPES)
    assert len(served.upstream.requests) == 1, "the first accepted call paid, the others were answered from cache"


# ---------------------------------------------------------------------------------------------
# Refused on the headers, before the body is read

SLOW_BODY_READ_TIMEOUT = 6.0


def head_only(port: int, authorization: str | None) -> tuple[bytes, float]:
    """POST /mcp with a complete head and 10 of 200 body bytes, then silence: the answer and how long it took."""
    head = (
        "POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        "Accept: application/json, text/event-stream\r\nContent-Length: 200\r\n"
    )
    if authorization is not None:
        head += f"Authorization: {authorization}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=SLOW_BODY_READ_TIMEOUT + 5) as sock:
        started = time.monotonic()
        sock.sendall(head.encode() + b'\r\n{"jsonrpc"')
        answer = sock.recv(65536)
        return answer, time.monotonic() - started


def test_a_request_with_a_missing_or_bad_token_is_refused_before_its_slow_body(
    hostile: HostileIdP, resource: str, mcp_port: int
):
    settings = oauth_settings(
        hostile.issuer, resource, mcp_auth_token=TEST_AUTH_TOKEN, mcp_read_timeout_seconds=SLOW_BODY_READ_TIMEOUT
    )
    cases = {
        "no token": None,
        "not a bearer token": "Basic dXNlcjpwYXNz",
        "junk token": "Bearer junk-token-of-no-issuer",
        "a JWT of an unknown key": f"Bearer {token_of(hostile, resource, SigningKey(kid='unknown'))}",
        "a malformed JWT header": f"Bearer {with_header({'alg': ['ES256']})}",
        "the static token, one character off": f"Bearer {TEST_AUTH_TOKEN[:-1]}x",
    }
    with serving(settings, mcp_port):
        refused = {case: head_only(mcp_port, authorization) for case, authorization in cases.items()}
        accepted_slow = head_only(mcp_port, f"Bearer {token_of(hostile, resource)}")

    print("refused before the body:", ", ".join(f"{case} {t * 1000:.0f} ms" for case, (_, t) in refused.items()))
    for case, (answer, seconds) in refused.items():
        assert answer.startswith(b"HTTP/1.1 401"), (case, answer[:100])
        assert seconds < PROMPT_SECONDS, (case, seconds)
    # A good token's slow body is still held to the read deadline.
    assert accepted_slow[0].startswith(b"HTTP/1.1 408"), accepted_slow[0][:100]
    assert SLOW_BODY_READ_TIMEOUT - 0.5 < accepted_slow[1] < SLOW_BODY_READ_TIMEOUT + DEADLINE_MARGIN_SECONDS


def test_with_the_key_server_down_a_token_gets_its_503_before_its_slow_body(
    hostile: HostileIdP, resource: str, mcp_port: int
):
    hostile.script[JWKS_PATH] = Reply(status=500, body=b"{}")
    settings = oauth_settings(hostile.issuer, resource, mcp_read_timeout_seconds=SLOW_BODY_READ_TIMEOUT)
    with serving(settings, mcp_port):
        answer, seconds = head_only(mcp_port, f"Bearer {token_of(hostile, resource)}")

    print(f"key server answering 500: 503 after {seconds * 1000:.0f} ms, the body never sent")
    assert answer.startswith(b"HTTP/1.1 503"), answer[:100]
    assert seconds < PROMPT_SECONDS, seconds


def test_the_static_token_path_also_refuses_before_the_body(mcp_port: int):
    settings = make_settings(mcp_auth_token=TEST_AUTH_TOKEN, mcp_read_timeout_seconds=SLOW_BODY_READ_TIMEOUT)
    with serving(settings, mcp_port):
        missing = head_only(mcp_port, None)
        wrong = head_only(mcp_port, f"Bearer {TEST_AUTH_TOKEN[:-1]}x")
        right = head_only(mcp_port, f"Bearer {TEST_AUTH_TOKEN}")

    for answer, seconds in (missing, wrong):
        assert answer.startswith(b"HTTP/1.1 401") and seconds < PROMPT_SECONDS, (answer[:100], seconds)
    assert right[0].startswith(b"HTTP/1.1 408"), right[0][:100]


def test_a_client_that_leaves_mid_body_or_is_too_slow_is_let_go_without_an_error_logged(
    mcp_port: int, caplog: pytest.LogCaptureFixture
):
    settings = make_settings(mcp_auth_token=TEST_AUTH_TOKEN, mcp_read_timeout_seconds=2)
    with serving(settings, mcp_port) as served:
        with socket.create_connection(("127.0.0.1", mcp_port), timeout=5) as sock:
            sock.sendall(
                b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Accept: application/json, text/event-stream\r\nContent-Length: 200\r\n"
                + f"Authorization: Bearer {TEST_AUTH_TOKEN}\r\n\r\n".encode()
                + b'{"jsonrpc"'
            )
            time.sleep(0.3)  # the app is reading the body when the client leaves
        slow, _ = head_only(mcp_port, f"Bearer {TEST_AUTH_TOKEN}")
        after = post_call(served.base, TEST_AUTH_TOKEN)

    assert slow.startswith(b"HTTP/1.1 408"), slow[:100]
    assert after.status_code == 200, "and the server still answers"
    assert errors_logged(caplog) == []
