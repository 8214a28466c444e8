"""The SQLite store's schema: named migrations, applied in order and recorded in the `migrations` table, so a
state file written by any earlier release opens as the current one."""

from __future__ import annotations

import sqlite3

from keyapi_mcp.state.sqlite_consents import CONSENTS_MIGRATION

MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_ledger",
        """
        CREATE TABLE ledger (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            at REAL NOT NULL,
            day TEXT NOT NULL,
            ids_count INTEGER NOT NULL,
            page INTEGER,
            http_status INTEGER,
            outcome TEXT NOT NULL,
            charged TEXT NOT NULL,
            request_id TEXT,
            pid INTEGER
        );
        CREATE INDEX ledger_day_charged ON ledger(day, charged);
        """,
    ),
    (
        "0002_cache",
        """
        CREATE TABLE videos (
            video_id TEXT PRIMARY KEY,
            rows TEXT NOT NULL,
            fetched_at REAL NOT NULL
        );
        CREATE INDEX videos_fetched_at ON videos(fetched_at);
        CREATE TABLE pages (
            query TEXT NOT NULL,
            page INTEGER NOT NULL,
            rows TEXT NOT NULL,
            fetched_at REAL NOT NULL,
            PRIMARY KEY (query, page)
        );
        CREATE INDEX pages_fetched_at ON pages(fetched_at);
        CREATE TABLE savings (
            day TEXT PRIMARY KEY,
            credits INTEGER NOT NULL
        );
        """,
    ),
    (
        # Who each credit was reserved for (keyapi_mcp.caller): the per-user daily limit counts by it.
        "0003_ledger_caller",
        """
        ALTER TABLE ledger ADD COLUMN caller TEXT NOT NULL DEFAULT 'local';
        CREATE INDEX ledger_day_caller ON ledger(day, caller, charged);
        """,
    ),
    CONSENTS_MIGRATION,
]


def apply_migrations(conn: sqlite3.Connection, now: float) -> list[str]:
    """Apply pending migrations in order, each in its own transaction; return the names applied."""
    conn.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at REAL NOT NULL)")
    applied: list[str] = []
    for name, sql in MIGRATIONS:
        conn.execute("BEGIN IMMEDIATE")
        try:
            done = conn.execute("SELECT 1 FROM migrations WHERE name = ?", (name,)).fetchone()
            if done:
                conn.execute("COMMIT")
                continue
            for statement in sql.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO migrations(name, applied_at) VALUES (?, ?)", (name, now))
            conn.execute("COMMIT")
            applied.append(name)
        except BaseException:
            if conn.in_transaction:  # a failed BEGIN (disk full…) leaves none: keep the original error
                conn.execute("ROLLBACK")
            raise
    return applied
