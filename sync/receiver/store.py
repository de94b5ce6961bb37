"""asyncpg queries of the reference receiver: idempotent batch insert, config, commands."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping

import asyncpg

from sync.receiver.schema import Partitions
from sync.receiver.validate import TELEMETRY_COLUMNS, Columns, Item, int_column, number_column, telemetry_columns

_TELEMETRY_INSERT = """
INSERT INTO telemetry_samples (gateway_id, generation, seq, zone_uid, node_uid, metric_type, channel, value, ts,
                               received_at, ts_source, clock_synced, raw)
SELECT $1, $2, * FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::float8[],
                             $9::float8[], $10::float8[], $11::text[], $12::bool[], $13::text[])
"""
_ITEMS_INSERT = """
INSERT INTO stream_items (gateway_id, generation, stream, seq, created_at, data)
SELECT $1, $2, $3, * FROM unnest($4::bigint[], $5::float8[], $6::jsonb[])
ON CONFLICT DO NOTHING
"""
# Rows of a batch that are already stored under the same (gateway, generation, seq) with other content:
# a sequence number used twice for different data, which the sender must hear about (409), never a skip.
_TELEMETRY_DIFFERING = """
SELECT b.seq, t.seq IS NULL AS missing FROM unnest($3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[],
                         $8::float8[], $9::float8[], $10::text[])
     AS b(seq, zone_uid, node_uid, metric_type, channel, value, ts, raw)
LEFT JOIN telemetry_samples t ON t.gateway_id = $1 AND t.generation = $2 AND t.seq = b.seq
WHERE t.seq IS NULL OR (t.zone_uid, t.node_uid, t.metric_type, t.channel, t.value, t.ts, t.raw)
      IS DISTINCT FROM (b.zone_uid, b.node_uid, b.metric_type, b.channel, b.value, b.ts, b.raw)
ORDER BY b.seq
"""
_ITEMS_DIFFERING = """
SELECT b.seq FROM unnest($4::bigint[], $5::jsonb[]) AS b(seq, data)
JOIN stream_items t ON t.gateway_id = $1 AND t.generation = $2 AND t.stream = $3 AND t.seq = b.seq
WHERE t.data IS DISTINCT FROM b.data
ORDER BY b.seq LIMIT 20
"""

STORED, DUPLICATE, CONFLICT = "stored", "duplicate", "conflict"


# The JSON answer to a batch (stored/duplicate: counts and seq range; conflict: the error and the seqs).
Response = dict[str, object]


class _Conflict(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response["error"])
        self.response = response


def _inserted(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


def body_hash(raw: bytes) -> str:
    """Content hash of a batch body as received (uncompressed JSON)."""
    return hashlib.sha256(raw).hexdigest()


async def store_batch(
    pool: asyncpg.Pool, gateway_id: str, generation: str, stream: str, key: str, items: list[Item],
    columns: Columns | None = None, digest: str = "", partitions: Partitions | None = None,
) -> tuple[str, Response]:
    """Insert a batch once (creating missing monthly partitions first); returns (outcome, response).

    The outcome is stored, duplicate or conflict.

    A repeated key with the same body is a duplicate; with another body, or rows already stored under
    the same sequence numbers with other content, it is a conflict and nothing is written.
    """
    if stream == "telemetry" and partitions is not None:
        months = partitions.missing(number_column((columns or telemetry_columns(items))["ts"]))
        if months:
            async with pool.acquire() as conn:
                await partitions.create(conn, months)
    try:
        return await _store(pool, gateway_id, generation, stream, key, items, columns, digest)
    except _Conflict as conflict:
        return CONFLICT, conflict.response


async def _store(
    pool: asyncpg.Pool, gateway_id: str, generation: str, stream: str, key: str, items: list[Item],
    columns: Columns | None, digest: str,
) -> tuple[str, Response]:
    first, last = items[0]["seq"], items[-1]["seq"]
    async with pool.acquire() as conn, conn.transaction():
        previous = await conn.fetchrow(
            "SELECT response, body_hash FROM idempotency_keys WHERE gateway_id = $1 AND key = $2", gateway_id, key
        )
        if previous is not None:
            if digest and previous["body_hash"] and previous["body_hash"] != digest:
                raise _Conflict({"error": "Idempotency-Key reused with a different body", "key": key,
                                 "first_seq": first, "last_seq": last})
            return DUPLICATE, {**json.loads(previous["response"]), "duplicate": True}
        if stream == "telemetry":
            inserted = await _store_telemetry(conn, gateway_id, generation, columns or telemetry_columns(items))
        else:
            seqs, datas = [it["seq"] for it in items], [json.dumps(it["data"]) for it in items]
            status = await conn.execute(
                _ITEMS_INSERT, gateway_id, generation, stream, seqs, [it.get("created_at") for it in items], datas
            )
            inserted = _inserted(status)
            if inserted < len(items):  # a retry cut differently, or a sequence reused: compare the content
                differing = await conn.fetch(_ITEMS_DIFFERING, gateway_id, generation, stream, seqs, datas)
                if differing:
                    raise _Conflict({"error": "sequence numbers already stored with other content",
                                     "seqs": [r["seq"] for r in differing], "first_seq": first, "last_seq": last})
        response: Response = {"stored": len(items), "inserted": inserted, "first_seq": first, "last_seq": last,
                    "duplicate": False}
        done = await conn.fetchval(
            "INSERT INTO idempotency_keys (gateway_id, key, stream, first_seq, last_seq, count, inserted, response,"
            " body_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING RETURNING 1",
            gateway_id, key, stream, first, last, len(items), inserted, json.dumps(response), digest,
        )
        if done is None:  # a concurrent request with the same key won; our inserts hit its rows
            return DUPLICATE, {**response, "duplicate": True}
        return STORED, response


def _runs(seqs: list[int], covered: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Maximal runs of (increasing) new seqs that no covered range cuts through: the ranges to record."""
    runs: list[tuple[int, int]] = []
    for seq in seqs:
        if runs and not any(runs[-1][1] < lo <= seq for lo, _ in covered):
            runs[-1] = (runs[-1][0], seq)
        else:
            runs.append((seq, seq))
    return runs


async def _store_telemetry(conn: asyncpg.Connection, gateway_id: str, generation: str,
                           cols: Columns) -> int:
    """Insert the rows of a telemetry batch that are not stored yet; returns how many were inserted.

    The partitioned table cannot hold a unique (gateway, generation, seq) key, so the stored runs of
    seqs are kept in ``telemetry_seq_ranges`` and batches of one (gateway, generation) are serialised by
    an advisory lock (across receiver processes too). A batch that touches no stored range - the normal
    case - is inserted as is; an overlapping retry is compared row by row against what is stored.
    """
    seqs = int_column(cols["seq"])
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", f"{gateway_id}/{generation}")
    covered = [(r["first_seq"], r["last_seq"]) for r in await conn.fetch(
        "SELECT first_seq, last_seq FROM telemetry_seq_ranges WHERE gateway_id = $1 AND generation = $2"
        " AND first_seq <= $4 AND last_seq >= $3 ORDER BY first_seq", gateway_id, generation, seqs[0], seqs[-1])]
    args = [cols[k] for k in TELEMETRY_COLUMNS]
    new_seqs = seqs
    fresh = list(range(len(seqs)))
    if covered:
        old = [i for i, s in enumerate(seqs) if any(lo <= s <= hi for lo, hi in covered)]
        if old:
            picked = [[col[i] for i in old] for col in args]
            rows = await conn.fetch(_TELEMETRY_DIFFERING, gateway_id, generation, *picked[:7], picked[-1])
            differing = [r["seq"] for r in rows if not r["missing"]]
            if differing:
                raise _Conflict({"error": "sequence numbers already stored with other content",
                                 "seqs": differing[:20], "first_seq": seqs[0], "last_seq": seqs[-1]})
            missing = {r["seq"] for r in rows}  # inside a stored range but absent: new data after all
            old_set = set(old)
            fresh = [i for i in fresh if i not in old_set or seqs[i] in missing]
        if not fresh:
            return 0
        args = [[col[i] for i in fresh] for col in args]
        new_seqs = [seqs[i] for i in fresh]
    await conn.execute(_TELEMETRY_INSERT, gateway_id, generation, *args)
    runs = _runs([s for s in new_seqs if not any(lo <= s <= hi for lo, hi in covered)], covered)
    if runs:
        await conn.executemany(
            "INSERT INTO telemetry_seq_ranges (gateway_id, generation, first_seq, last_seq) VALUES ($1, $2, $3, $4)",
            [(gateway_id, generation, lo, hi) for lo, hi in runs])
    return len(new_seqs)


async def stream_marks(
    pool: asyncpg.Pool, gateway_id: str, generation: str, streams: tuple[str, ...]
) -> dict[str, int]:
    """The last stored sequence per stream of one (gateway, generation); 0 for a stream with nothing stored."""
    marks: dict[str, int] = {}
    async with pool.acquire() as conn:
        for stream in streams:
            if stream == "telemetry":
                value = await conn.fetchval(
                    "SELECT max(last_seq) FROM telemetry_seq_ranges WHERE gateway_id = $1 AND generation = $2",
                    gateway_id, generation)
            else:
                value = await conn.fetchval(
                    "SELECT max(seq) FROM stream_items WHERE gateway_id = $1 AND generation = $2 AND stream = $3",
                    gateway_id, generation, stream)
            marks[stream] = int(value or 0)
    return marks


def config_etag(version: int, config: object) -> str:
    """Strong ETag from the version and a hash of the canonical JSON."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    return f'"{version}-{digest}"'


async def put_config(pool: asyncpg.Pool, gateway_id: str, config: object) -> tuple[int, str]:
    """Store a new config version (admin); objects get their ``version`` field set to it."""
    async with pool.acquire() as conn, conn.transaction():
        current = await conn.fetchval(
            "SELECT version FROM gateway_configs WHERE gateway_id = $1 FOR UPDATE", gateway_id
        )
        version = (current or 0) + 1
        if isinstance(config, dict):
            config = {**config, "version": version}
        etag = config_etag(version, config)
        await conn.execute(
            "INSERT INTO gateway_configs (gateway_id, version, etag, config) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (gateway_id) DO UPDATE SET version = $2, etag = $3, config = $4, updated_at = now()",
            gateway_id, version, etag, json.dumps(config),
        )
    return version, etag


async def get_config(pool: asyncpg.Pool, gateway_id: str) -> tuple[str, str] | None:
    """(etag, config JSON text) or None."""
    row = await pool.fetchrow("SELECT etag, config FROM gateway_configs WHERE gateway_id = $1", gateway_id)
    return None if row is None else (row["etag"], row["config"])


async def enqueue_command(pool: asyncpg.Pool, gateway_id: str, body: Mapping[str, object]) -> None:
    """Admin: queue a command for a gateway."""
    await pool.execute(
        "INSERT INTO gateway_commands (cmd_id, gateway_id, body) VALUES ($1, $2, $3)",
        body["cmd_id"], gateway_id, json.dumps(body),
    )


async def pending_commands(pool: asyncpg.Pool, gateway_id: str, limit: int) -> list[object]:
    """Unclaimed commands (their JSON bodies as queued), oldest first."""
    rows = await pool.fetch(
        "SELECT body FROM gateway_commands WHERE gateway_id = $1 AND state = 'pending'"
        " ORDER BY created_at, cmd_id LIMIT $2",
        gateway_id, limit,
    )
    return [json.loads(r["body"]) for r in rows]


async def claim_command(pool: asyncpg.Pool, gateway_id: str, cmd_id: str) -> str:
    """'claimed', 'already_claimed', 'cancelled' or 'unknown'."""
    async with pool.acquire() as conn, conn.transaction():
        state = await conn.fetchval(
            "SELECT state FROM gateway_commands WHERE gateway_id = $1 AND cmd_id = $2 FOR UPDATE",
            gateway_id, cmd_id,
        )
        if state is None:
            return "unknown"
        if state == "pending":
            await conn.execute(
                "UPDATE gateway_commands SET state = 'claimed', claimed_at = now() WHERE cmd_id = $1", cmd_id
            )
            return "claimed"
        return "already_claimed" if state == "claimed" else "cancelled"


async def list_commands(pool: asyncpg.Pool, gateway_id: str) -> list[dict[str, object]]:
    """Admin: every command of a gateway with its state."""
    rows = await pool.fetch(
        "SELECT cmd_id, state, body FROM gateway_commands WHERE gateway_id = $1 ORDER BY created_at, cmd_id",
        gateway_id,
    )
    return [{"cmd_id": r["cmd_id"], "state": r["state"], "body": json.loads(r["body"])} for r in rows]


async def stream_summary(pool: asyncpg.Pool, gateway_id: str, stream: str, *, count: bool = True) -> dict[str, object]:
    """Admin: seq range (index lookups) and, unless ``count`` is false, the row count of one stream."""
    table, where, args = (("telemetry_samples", "gateway_id = $1", (gateway_id,)) if stream == "telemetry"
                          else ("stream_items", "gateway_id = $1 AND stream = $2", (gateway_id, stream)))
    if count:
        sql = f"SELECT count(*) AS n, min(seq) AS lo, max(seq) AS hi FROM {table} WHERE {where}"
    else:  # cheap enough to poll while a million rows arrive: one idempotency key per stored batch
        sql = ("SELECT NULL::bigint AS n, min(first_seq) AS lo, max(last_seq) AS hi FROM idempotency_keys"
               " WHERE gateway_id = $1 AND stream = $2")
        args = (gateway_id, stream)
    row = await pool.fetchrow(sql, *args)
    return {"count": row["n"], "min_seq": row["lo"], "max_seq": row["hi"]}
