"""Reads of ``kv_state`` by key prefix (single keys: ``Database.get_state`` / ``put_state``)."""

from __future__ import annotations

import json

from gateway.store.db import Database


async def with_prefix(db: Database, prefix: str) -> dict[str, object]:
    """Every document whose key starts with ``prefix`` (``%`` and ``_`` in it match like SQL LIKE)."""
    rows = await db.fetchall("SELECT key, value FROM kv_state WHERE key LIKE ?", (prefix + "%",))
    out: dict[str, object] = {}
    for r in rows:
        out[str(r["key"])] = json.loads(r["value"])
    return out
