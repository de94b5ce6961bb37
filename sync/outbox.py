"""Per-stream cursors in SQLite, batch building (gzip JSON) and the dead-letter table."""

from __future__ import annotations

import asyncio
import gzip
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass

import aiosqlite

from sync.client import idempotency_key
from sync.ports import Database
from sync.streams import EncodedRow, Item, StreamSpec

# ASCII output so that len(text) is the byte count the max_bytes cap is about.
_DUMPS = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


@dataclass(frozen=True)
class Batch:
    """One encoded batch, ready to POST; ``body`` is gzip JSON."""

    stream: str
    first_seq: int
    last_seq: int
    count: int
    key: str
    generation: str
    body: bytes
    raw_bytes: int
    oldest_at: float | None


@dataclass(frozen=True)
class Cursor:
    """Persisted progress of one stream."""

    stream: str
    last_seq: int
    last_success_at: float | None
    batches_sent: int
    rows_sent: int
    duplicate_batches: int
    quarantined_rows: int


async def load_cursor(db: Database, stream: str) -> Cursor:
    """The stream's cursor (a fresh one at 0 if the stream never sent anything)."""
    row = await db.fetchone(
        "SELECT last_seq, last_success_at, batches_sent, rows_sent, duplicate_batches, quarantined_rows"
        " FROM sync_cursors WHERE stream = ?",
        (stream,),
    )
    if row is None:
        return Cursor(stream, 0, None, 0, 0, 0, 0)
    return Cursor(stream, int(row[0]), row[1], int(row[2]), int(row[3]), int(row[4]), int(row[5]))


async def cursor_positions(db: Database) -> dict[str, int]:
    """``{stream: last_seq}`` for every stream that has a cursor."""
    return {str(r[0]): int(r[1]) for r in await db.fetchall("SELECT stream, last_seq FROM sync_cursors")}


async def read_batch(
    db: Database,
    spec: StreamSpec,
    gateway_id: str,
    after_seq: int,
    *,
    generation: str,
    max_rows: int,
    max_bytes: int,
    gzip_level: int = 5,
) -> Batch | None:
    """Read up to ``max_rows`` rows after the cursor, cut at ``max_bytes`` of JSON, encode; None if caught up."""
    # Read inside a transaction: on the shared connection a bare SELECT could see another task's
    # uncommitted rows, which might still roll back and have their ids reused.
    encoded: list[EncodedRow] | None = None
    rows: list[tuple[int, Item]] = []
    async with db.transaction():
        if spec.fetch_json is not None:
            encoded = await spec.fetch_json(db, after_seq, max_rows)
        else:
            rows = await spec.fetch(db, after_seq, max_rows)
    if not encoded and not rows:
        return None
    # Encoding and gzip run off the loop so a 2000-row batch never stalls MQTT or the safety loop.
    if encoded is None:
        return await asyncio.to_thread(_encode_dicts, spec.name, gateway_id, generation, rows, max_bytes, gzip_level)
    return await asyncio.to_thread(_encode, spec.name, gateway_id, generation, encoded, max_bytes, gzip_level)


def _with_time(rows: list[tuple[int, Item]]) -> list[EncodedRow]:
    out: list[EncodedRow] = []
    for seq, item in rows:
        at = item.get("received_at", item.get("created_at"))
        out.append((seq, _dump_item(seq, item), float(at) if isinstance(at, int | float) else None))
    return out


def _encode_dicts(
    stream: str, gateway_id: str, generation: str, rows: list[tuple[int, Item]], max_bytes: int, level: int
) -> Batch:
    return _encode(stream, gateway_id, generation, _with_time(rows), max_bytes, level)


def _encode(
    stream: str, gateway_id: str, generation: str, rows: list[EncodedRow], max_bytes: int, level: int
) -> Batch:
    """Take items until the byte cap (always at least one), wrap them in the envelope, gzip."""
    parts: list[str] = []
    size = 0
    for _, text, _ in rows:
        if parts and size + len(text) + 1 > max_bytes:
            break
        parts.append(text)
        size += len(text) + 1
    kept = rows[: len(parts)]
    first, last = kept[0][0], kept[-1][0]
    head = _DUMPS(
        {"gateway_id": gateway_id, "generation": generation, "stream": stream, "first_seq": first,
         "last_seq": last, "count": len(kept)}
    )
    raw = (head[:-1] + ',"items":[' + ",".join(parts) + "]}").encode()
    return Batch(
        stream=stream,
        first_seq=first,
        last_seq=last,
        count=len(kept),
        key=idempotency_key(gateway_id, generation, stream, first, last),
        generation=generation,
        body=gzip.compress(raw, compresslevel=level, mtime=0),
        raw_bytes=len(raw),
        oldest_at=kept[0][2],
    )


def _dump_item(seq: int, item: Item) -> str:
    try:
        return _DUMPS(item)
    except (ValueError, TypeError) as exc:
        # e.g. NaN inside an outbox body: send a stub the receiver rejects, so only this row is quarantined.
        return _DUMPS({"seq": seq, "unencodable": f"{type(exc).__name__}: {exc}", "repr": repr(item)[:1000]})


async def record_success(db: Database, batch: Batch, now: float, *, duplicate: bool) -> None:
    """Advance the cursor past ``batch`` and bump counters, in one transaction."""
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO sync_cursors (stream, last_seq, last_success_at, batches_sent, rows_sent,"
            " duplicate_batches, quarantined_rows, updated_at) VALUES (?, ?, ?, 1, ?, ?, 0, ?)"
            " ON CONFLICT(stream) DO UPDATE SET last_seq = MAX(last_seq, excluded.last_seq),"
            " last_success_at = excluded.last_success_at, batches_sent = batches_sent + 1,"
            " rows_sent = rows_sent + excluded.rows_sent,"
            " duplicate_batches = duplicate_batches + excluded.duplicate_batches,"
            " updated_at = excluded.updated_at",
            (batch.stream, batch.last_seq, now, batch.count, int(duplicate), now),
        )


async def quarantine(db: Database, batch: Batch, *, attempts: int, status: int, response: str, now: float) -> None:
    """Store the rejected batch with the response and move the cursor past it, in one transaction."""
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO sync_dead_letters (stream, first_seq, last_seq, count, idempotency_key, attempts,"
            " status_code, response, payload, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (batch.stream, batch.first_seq, batch.last_seq, batch.count, batch.key, attempts, status,
             response, batch.body, now),
        )
        await conn.execute(
            "INSERT INTO sync_cursors (stream, last_seq, quarantined_rows, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(stream) DO UPDATE SET last_seq = MAX(last_seq, excluded.last_seq),"
            " quarantined_rows = quarantined_rows + excluded.quarantined_rows, updated_at = excluded.updated_at",
            (batch.stream, batch.last_seq, batch.count, now),
        )


async def list_dead_letters(db: Database, stream: str | None = None, limit: int = 100) -> list[dict[str, object]]:
    """Newest quarantined batches first (without the payload), JSON-ready for the local API."""
    where, params = ("WHERE stream = ?", [stream]) if stream else ("", [])
    rows = await db.fetchall(
        "SELECT id, stream, first_seq, last_seq, count, idempotency_key, attempts, status_code, response,"
        f" created_at FROM sync_dead_letters {where} ORDER BY id DESC LIMIT ?",
        (*params, limit),
    )
    keys = ("id", "stream", "first_seq", "last_seq", "count", "idempotency_key", "attempts", "status_code",
            "response", "created_at")
    return [dict(zip(keys, tuple(r), strict=True)) for r in rows]


async def dead_letter_payload(db: Database, dead_letter_id: int) -> dict[str, object] | None:
    """The decoded batch of one dead letter (for inspection or a manual re-drive)."""
    row = await db.fetchone("SELECT payload FROM sync_dead_letters WHERE id = ?", (dead_letter_id,))
    if row is None:
        return None
    doc: dict[str, object] = json.loads(gzip.decompress(row[0]))
    return doc


# The only INSERT into sync_outbox (tests/unit/core/test_sql_lives_in_store.py checks it).
ENQUEUE_SQL = "INSERT INTO sync_outbox (stream, body, created_at) VALUES (?, ?, ?)"


async def enqueue(conn: aiosqlite.Connection, stream: str, body: Mapping[str, object], created_at: float) -> int:
    """The one writer of ``sync_outbox``: append ``body`` (as JSON) to ``stream``; returns the row's seq.

    Call it inside the transaction that makes the change it reports, so the row goes upstream exactly
    when the change is committed and in commit order.
    """
    cur = await conn.execute(ENQUEUE_SQL, (stream, json.dumps(body, default=str), created_at))
    return int(cur.lastrowid or 0)


def enqueue_in_thread(conn: sqlite3.Connection, stream: str, body: Mapping[str, object], created_at: float) -> int:
    """``enqueue`` for code already on the database thread (``Database.in_thread_transaction``): same row."""
    cur = conn.execute(ENQUEUE_SQL, (stream, json.dumps(body, default=str), created_at))
    return int(cur.lastrowid or 0)
