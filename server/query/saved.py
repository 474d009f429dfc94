"""Per-user query history and saved queries of the console, in the metadata database
(migration 6). The owner is what ``server.auth.key_owner`` says: ``key:<id>`` or ``admin``.

History keeps the newest HISTORY_PER_USER runs of each user (older ones are dropped as new ones
come); a user keeps at most SAVED_PER_USER saved queries. Shared saved queries are listed to
every user, and only their owner may delete them.
"""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime
from typing import Any

from server.metadata import MetadataDB

log = logging.getLogger("quarry.query.history")

HISTORY_PER_USER = 200
SAVED_PER_USER = 500
MAX_HISTORY_TEXT = 100_000  # longer query texts are kept cut to this length


class SavedQueryError(ValueError):
    def __init__(self, message: str, status: int, code: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.field = status, code, field


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_history(db: MetadataDB, owner: str, query: str, timespan: str | None, rows: int | None,
                   elapsed_ms: float, error: str | None) -> None:
    """Best effort: a query's answer never depends on its history entry (on a full disk the
    metadata database cannot be written, and hunting must still work)."""
    try:
        with db.tx() as conn:
            conn.execute(
                "INSERT INTO query_history (owner, query, timespan, ran_at, rows, elapsed_ms, error)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (owner, query[:MAX_HISTORY_TEXT], timespan, _now(), rows, round(elapsed_ms, 3),
                 (error or None) and error[:2000]),
            )
            conn.execute(
                "DELETE FROM query_history WHERE owner = ? AND id NOT IN"
                " (SELECT id FROM query_history WHERE owner = ? ORDER BY id DESC LIMIT ?)",
                (owner, owner, HISTORY_PER_USER),
            )
    except sqlite3.Error as e:
        log.warning("query history not recorded: %s", e)


def list_history(db: MetadataDB, owner: str, top: int) -> list[dict[str, Any]]:
    rows = db.query(
        "SELECT id, query, timespan, ran_at, rows, elapsed_ms, error FROM query_history"
        " WHERE owner = ? ORDER BY id DESC LIMIT ?",
        (owner, top),
    )
    return [{"id": r["id"], "query": r["query"], "timespan": r["timespan"], "ranAt": r["ran_at"],
             "rows": r["rows"], "elapsedMs": r["elapsed_ms"], "error": r["error"]} for r in rows]


def _saved(r: sqlite3.Row, owner: str) -> dict[str, Any]:
    return {"id": r["id"], "name": r["name"], "query": r["query"], "description": r["description"],
            "shared": bool(r["shared"]), "mine": r["owner"] == owner, "createdAt": r["created_at"],
            "updatedAt": r["updated_at"]}


def list_saved(db: MetadataDB, owner: str) -> list[dict[str, Any]]:
    rows = db.query(
        "SELECT * FROM saved_queries WHERE owner = ? OR shared = 1 ORDER BY name COLLATE NOCASE, id",
        (owner,),
    )
    return [_saved(r, owner) for r in rows]


def save_query(db: MetadataDB, owner: str, name: str, query: str, description: str, shared: bool) -> dict[str, Any]:
    """Create, or replace the user's own saved query of the same name."""
    now = _now()
    with db.tx() as conn:
        count = conn.execute("SELECT count(*) FROM saved_queries WHERE owner = ?", (owner,)).fetchone()[0]
        exists = conn.execute("SELECT id FROM saved_queries WHERE owner = ? AND name = ?", (owner, name)).fetchone()
        if exists is None and count >= SAVED_PER_USER:
            raise SavedQueryError(f"a user may keep at most {SAVED_PER_USER} saved queries; delete some first",
                                  400, "limit_exceeded", "name")
        conn.execute(
            "INSERT INTO saved_queries (owner, name, query, description, shared, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (owner, name) DO UPDATE SET query = excluded.query,"
            " description = excluded.description, shared = excluded.shared, updated_at = excluded.updated_at",
            (owner, name, query, description, int(shared), now, now),
        )
    row = db.query("SELECT * FROM saved_queries WHERE owner = ? AND name = ?", (owner, name))[0]
    return _saved(row, owner)


def delete_saved(db: MetadataDB, owner: str, saved_id: int) -> None:
    rows = db.query("SELECT owner FROM saved_queries WHERE id = ?", (saved_id,))
    if not rows:
        raise SavedQueryError(f"no saved query with id {saved_id}", 404, "not_found")
    if rows[0]["owner"] != owner:
        raise SavedQueryError("only its owner may delete a saved query", 403, "forbidden")
    with db.tx() as conn:
        conn.execute("DELETE FROM saved_queries WHERE id = ?", (saved_id,))
