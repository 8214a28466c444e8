"""One team replica for tests/test_team_replicas.py: `keyapi-mcp --transport http` with per-user tokens.

The CLI has no way to hand the server a `TokenVerifier`, so this script does what the CLI does (settings
from the environment, `build_server`, `run_http`) and adds `TokenMapVerifier` over the tokens in
TEAM_TOKENS (`token=identity,token=identity`). Usage: python tests/team_replica.py <port>
"""

from __future__ import annotations

import logging
import os
import sys

from fakes import TokenMapVerifier
from mcp.server.auth.settings import AuthSettings

from keyapi_mcp.config import load_settings
from keyapi_mcp.server import build_server
from keyapi_mcp.transport.http import run_http


def main() -> None:
    port = int(sys.argv[1])
    settings = load_settings()
    logging.basicConfig(level=settings.log_level, stream=sys.stderr)
    tokens = dict(pair.split("=", 1) for pair in os.environ["TEAM_TOKENS"].split(","))
    server = build_server(
        settings,
        token_verifier=TokenMapVerifier(tokens),
        # Never contacted: the SDK needs an issuer for its auth settings; the tokens are checked locally.
        auth=AuthSettings(issuer_url="http://127.0.0.1:9/issuer", resource_server_url=None),  # type: ignore[arg-type]
    )
    run_http(server, settings, host="127.0.0.1", port=port)


if __name__ == "__main__":
    main()
