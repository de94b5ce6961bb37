"""asyncpg queries of the reference receiver: idempotent batch insert, config, commands."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import asyncpg

from sync.receiver.validate import TELEMETRY_COLUMNS, telemetry_columns

_TELEMETRY_INSERT = """
INSERT INTO telemetry_samples (gateway_id, seq, zone_uid, node_uid, metric_type, channel, value, ts,
                               received_at, ts_source, clock_synced, raw)
SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[], $7::float8[],
                         $8::float8[], $9::float8[], $10::text[], $11::bool[], $12::text[])
ON CONFLICT DO NOTHING
"""
_ITEMS_INSERT = """
INSERT INTO stream_items (gateway_id, stream, seq, created_at, data)
SELECT $1, $2, * FROM unnest($3::bigint[], $4::float8[], $5::jsonb[])
ON CONFLICT DO NOTHING
"""


def _inserted(status: str) -> int:
    return int(status.rsplit(" ", 1)[-1])


async def store_batch(
    pool: asyncpg.Pool, gateway_id: str, stream: str, key: str, items: list[dict[str, Any]],
    columns: dict[str, list[Any]] | None = None,
) -> tuple[bool, dict[str, Any]]:
    """Insert a batch once; returns (duplicate, response). Rows already present are skipped by key."""
    first, last = items[0]["seq"], items[-1]["seq"]
    async with pool.acquire() as conn, conn.transaction():
        previous = await conn.fetchval(
            "SELECT response FROM idempotency_keys WHERE gateway_id = $1 AND key = $2", gateway_id, key
        )
        if previous is not None:
            return True, {**json.loads(previous), "duplicate": True}
        if stream == "telemetry":
            cols = columns or telemetry_columns(items)
            status = await conn.execute(_TELEMETRY_INSERT, gateway_id, *(cols[k] for k in TELEMETRY_COLUMNS))
        else:
            status = await conn.execute(
                _ITEMS_INSERT, gateway_id, stream, [it["seq"] for it in items],
                [it.get("created_at") for it in items], [json.dumps(it["data"]) for it in items],
            )
        inserted = _inserted(status)
        response = {"stored": len(items), "inserted": inserted, "first_seq": first, "last_seq": last,
                    "duplicate": False}
        done = await conn.fetchval(
            "INSERT INTO idempotency_keys (gateway_id, key, stream, first_seq, last_seq, count, inserted, response)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING RETURNING 1",
            gateway_id, key, stream, first, last, len(items), inserted, json.dumps(response),
        )
        if done is None:  # a concurrent request with the same key won; our inserts hit its rows
            return True, {**response, "duplicate": True}
        return False, response


def config_etag(version: int, config: Any) -> str:
    """Strong ETag from the version and a hash of the canonical JSON."""
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    return f'"{version}-{digest}"'


async def put_config(pool: asyncpg.Pool, gateway_id: str, config: Any) -> tuple[int, str]:
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


async def enqueue_command(pool: asyncpg.Pool, gateway_id: str, body: dict[str, Any]) -> None:
    """Admin: queue a command for a gateway."""
    await pool.execute(
        "INSERT INTO gateway_commands (cmd_id, gateway_id, body) VALUES ($1, $2, $3)",
        body["cmd_id"], gateway_id, json.dumps(body),
    )


async def pending_commands(pool: asyncpg.Pool, gateway_id: str, limit: int) -> list[dict[str, Any]]:
    """Unclaimed commands, oldest first."""
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


async def list_commands(pool: asyncpg.Pool, gateway_id: str) -> list[dict[str, Any]]:
    """Admin: every command of a gateway with its state."""
    rows = await pool.fetch(
        "SELECT cmd_id, state, body FROM gateway_commands WHERE gateway_id = $1 ORDER BY created_at, cmd_id",
        gateway_id,
    )
    return [{"cmd_id": r["cmd_id"], "state": r["state"], "body": json.loads(r["body"])} for r in rows]


async def stream_summary(pool: asyncpg.Pool, gateway_id: str, stream: str, *, count: bool = True) -> dict[str, Any]:
    """Admin: seq range (index lookups) and, unless ``count`` is false, the row count of one stream."""
    table, where, args = (("telemetry_samples", "gateway_id = $1", (gateway_id,)) if stream == "telemetry"
                          else ("stream_items", "gateway_id = $1 AND stream = $2", (gateway_id, stream)))
    if count:
        sql = f"SELECT count(*) AS n, min(seq) AS lo, max(seq) AS hi FROM {table} WHERE {where}"
    else:  # index-only: cheap enough to poll while a million rows arrive
        sql = (f"SELECT NULL::bigint AS n, (SELECT min(seq) FROM {table} WHERE {where}) AS lo,"
               f" (SELECT max(seq) FROM {table} WHERE {where}) AS hi")
    row = await pool.fetchrow(sql, *args)
    return {"count": row["n"], "min_seq": row["lo"], "max_seq": row["hi"]}
