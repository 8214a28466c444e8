"""The confirmation grants of large spends in SQLite (keyapi_mcp.core.consent): one table keyed by the token's
SHA-256, and `SQLiteStore`'s three methods of the Store port over it.

A grant is marked used by one conditional UPDATE on the write connection, under SQLite's write lock, so of the
calls presenting one token at once (in any process on this machine) exactly one changes the row. Expired grants
are deleted as new ones come, so the table stays small without a prune.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from keyapi_mcp.core.domain import ConsentGrant

CONSENTS_MIGRATION = (
    "0004_consents",
    """
    CREATE TABLE consents (digest TEXT PRIMARY KEY, caller TEXT NOT NULL, ids_key TEXT NOT NULL,
        page INTEGER NOT NULL, credits INTEGER NOT NULL, expires_at REAL NOT NULL, used_at REAL);
    CREATE INDEX consents_expires_at ON consents(expires_at);
    """,
)


class ConsentTable:
    """Mixed into `SQLiteStore`, whose `_run` (write connection), `_read` (read connection) and clock it uses."""

    _run: Any
    _read: Any
    _clock: Any

    async def put_consent(self, digest: str, grant: ConsentGrant) -> None:
        row = (digest, grant.caller, grant.ids_key, grant.page, grant.credits, grant.expires_at)
        now = self._clock()

        def txn(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM consents WHERE expires_at <= ?", (now,))
            conn.execute("INSERT OR REPLACE INTO consents VALUES (?, ?, ?, ?, ?, ?, NULL)", row)

        await self._run(txn, txn=True)

    async def get_consent(self, digest: str) -> ConsentGrant | None:
        sql = "SELECT caller, ids_key, page, credits, expires_at, used_at FROM consents WHERE digest=? AND expires_at>?"
        now = self._clock()
        row = await self._read(lambda conn: conn.execute(sql, (digest, now)).fetchone())
        return None if row is None else ConsentGrant(*row[:5], used=row[5] is not None)

    async def use_consent(self, digest: str) -> bool:
        sql = "UPDATE consents SET used_at = ? WHERE digest = ? AND used_at IS NULL AND expires_at > ?"
        now = self._clock()
        return bool(await self._run(lambda conn: conn.execute(sql, (now, digest, now)).rowcount) == 1)
