"""PostgreSQL schema of the reference receiver (idempotent DDL)."""

from __future__ import annotations

from typing import Any

DDL = """
CREATE TABLE IF NOT EXISTS telemetry_samples (
    gateway_id text NOT NULL,
    generation text NOT NULL DEFAULT '',
    seq bigint NOT NULL,
    zone_uid text,
    node_uid text,
    metric_type text NOT NULL,
    channel text,
    value double precision NOT NULL,
    ts double precision NOT NULL,
    received_at double precision,
    ts_source text,
    clock_synced boolean,
    raw text,
    stored_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, generation, seq)
);
CREATE TABLE IF NOT EXISTS stream_items (
    gateway_id text NOT NULL,
    generation text NOT NULL DEFAULT '',
    stream text NOT NULL,
    seq bigint NOT NULL,
    created_at double precision,
    data jsonb NOT NULL,
    stored_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, generation, stream, seq)
);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    gateway_id text NOT NULL,
    key text NOT NULL,
    stream text NOT NULL,
    first_seq bigint NOT NULL,
    last_seq bigint NOT NULL,
    count integer NOT NULL,
    inserted integer NOT NULL,
    response jsonb NOT NULL,
    body_hash text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, key)
);
CREATE TABLE IF NOT EXISTS gateway_configs (
    gateway_id text PRIMARY KEY,
    version bigint NOT NULL,
    etag text NOT NULL,
    config jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS gateway_commands (
    cmd_id text PRIMARY KEY,
    gateway_id text NOT NULL,
    body jsonb NOT NULL,
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'claimed', 'cancelled')),
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    claimed_at timestamptz
);
CREATE INDEX IF NOT EXISTS gateway_commands_pending ON gateway_commands (gateway_id, created_at)
    WHERE state = 'pending';
"""

# Tables created before database generations: a sequence is unique per (gateway, generation) now, so
# the primary keys must include it (otherwise a new generation's rows would be skipped as duplicates).
UPGRADE = """
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_name = 'telemetry_samples' AND column_name = 'generation') THEN
        ALTER TABLE telemetry_samples ADD COLUMN generation text NOT NULL DEFAULT '';
        ALTER TABLE telemetry_samples DROP CONSTRAINT telemetry_samples_pkey;
        ALTER TABLE telemetry_samples ADD PRIMARY KEY (gateway_id, generation, seq);
    END IF;
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_name = 'stream_items' AND column_name = 'generation') THEN
        ALTER TABLE stream_items ADD COLUMN generation text NOT NULL DEFAULT '';
        ALTER TABLE stream_items DROP CONSTRAINT stream_items_pkey;
        ALTER TABLE stream_items ADD PRIMARY KEY (gateway_id, generation, stream, seq);
    END IF;
    ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS body_hash text NOT NULL DEFAULT '';
END $$;
"""


async def ensure_schema(conn: Any) -> None:
    """Create the tables once; an advisory lock keeps two receivers starting together from racing."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(4242001)")
        await conn.execute(DDL)
        await conn.execute(UPGRADE)
