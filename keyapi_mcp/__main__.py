"""The `keyapi-mcp` command (also `python -m keyapi_mcp`).

No arguments: MCP over stdio. stdout then carries protocol messages only, so everything else —
logs, start-up errors — goes to stderr. A configuration error is one line naming the variable,
and the process exits with status 2 before any request could be made under the wrong limits.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys

from keyapi_mcp import __version__

EXIT_CONFIG = 2
log = logging.getLogger(__name__)
EPILOG = """\
environment (or .env):
  KEYAPI_API_KEY               bearer key for KeyAPI (without it, paid calls answer [missing_api_key])
  KEYAPI_MAX_CREDITS_PER_CALL  upstream requests one tool call may make (default 5)
  KEYAPI_DAILY_CREDIT_LIMIT    credits per UTC day across all processes, 0 = none (default 100)
  KEYAPI_CACHE_TTL_SECONDS     reuse fetched videos this long, 0 = no cache (default 21600)
  KEYAPI_STATE_DIR / _URL      where the ledger and cache live (SQLite dir, or redis://...)
  KEYAPI_MAX_RPS, KEYAPI_TIMEOUT_SECONDS, KEYAPI_BASE_URL, KEYAPI_LOG_LEVEL, KEYAPI_MCP_* (HTTP): see README

Try it without an API key: keyapi-mcp --demo"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keyapi-mcp",
        description=(
            "MCP server for KeyAPI's TikTok Video Products (Analytics) endpoint. Speaks MCP over stdio "
            "by default. Configuration comes from KEYAPI_* environment variables (or a .env file)."
        ),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"keyapi-mcp {__version__}")
    parser.add_argument(
        "--demo",
        action="store_true",
        help="serve a bundled sample data set: no API key, no network, no real credits",
    )
    parser.add_argument(
        "--log-level",
        choices=["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        type=str.upper,
        help="stderr log level (default: KEYAPI_LOG_LEVEL or WARNING)",
    )
    parser.add_argument(
        "--transport",
        choices=["stdio", "http"],
        default="stdio",
        help="stdio (default) or http (MCP Streamable HTTP at /mcp)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    return parser


def configure_logging(level: str, secrets: tuple[str, ...] = ()) -> None:
    from keyapi_mcp import logsafety

    handler = logging.StreamHandler(sys.stderr)
    logsafety.install(handler, level=level, secrets=secrets, fmt="%(asctime)s %(levelname)s %(name)s: %(message)s")
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # httpx logs every request URL at INFO; keep it to warnings unless debugging.
    logging.getLogger("httpx").setLevel(
        max(logging.getLevelName(level), logging.WARNING) if level != "DEBUG" else logging.DEBUG
    )


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    from keyapi_mcp.config import load_settings
    from keyapi_mcp.errors import ConfigError, StoreOpenError

    try:
        overrides: dict[str, object] = {}
        if args.log_level:
            overrides["log_level"] = args.log_level
        settings = load_settings(**overrides)
    except ConfigError as exc:
        print(f"keyapi-mcp: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log_level, settings.secret_values())

    from keyapi_mcp.server import build_server, open_store

    try:
        store = open_store(settings, demo=args.demo)
    except StoreOpenError as exc:
        print(f"keyapi-mcp: {exc}", file=sys.stderr)
        return 1

    if args.demo:
        log.info("demo mode: bundled sample data, no network, no API key")
    elif not settings.has_api_key:
        log.warning("KEYAPI_API_KEY is not set: get_video_products will answer [missing_api_key]")

    server = build_server(settings, demo=args.demo, store=store)
    if args.transport == "http":
        from keyapi_mcp.transport.http import run_http

        try:
            run_http(server, settings, host=args.host, port=args.port)
        except ConfigError as exc:
            print(f"keyapi-mcp: configuration error: {exc}", file=sys.stderr)
            return EXIT_CONFIG
        return 0
    if sys.stdin.isatty():
        # A person ran this in a terminal: say what is happening (stderr; stdout is the protocol).
        mode = "demo data" if args.demo else "KeyAPI"
        print(
            f"keyapi-mcp {__version__}: serving MCP over stdio ({mode}). Connect it from an MCP client "
            "(see README); press Ctrl-C to quit.",
            file=sys.stderr,
        )
    from keyapi_mcp.transport.stdio import drain_stdin_at_eof

    drain_stdin_at_eof(lambda: server.calls_in_flight)  # calls received before stdin closes are answered
    with contextlib.suppress(KeyboardInterrupt):
        server.run("stdio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
