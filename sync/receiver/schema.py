"""PostgreSQL schema of the reference receiver (idempotent DDL) and the monthly telemetry partitions.

Telemetry is range-partitioned by sample time (``ts``, epoch seconds), one partition per calendar month
(UTC), so retention drops whole months (``DROP TABLE``) instead of deleting rows, and a query over a
time window touches only its months. A unique constraint on a partitioned table must contain the
partition key, so ``(gateway_id, generation, seq)`` cannot be a primary key any more: idempotency is
kept by ``telemetry_seq_ranges`` instead (one row per stored run of sequence numbers, with an exclusion
constraint that forbids two runs claiming the same number) plus a per-(gateway, generation) advisory
lock in ``store.py``. See docs/fleet.md.
"""

from __future__ import annotations

import calendar
import logging
import time
from datetime import UTC, datetime

import asyncpg

log = logging.getLogger(__name__)

TELEMETRY_DDL = """
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
    stored_at timestamptz NOT NULL DEFAULT now()
) PARTITION BY RANGE (ts);
-- Implausible timestamps (an unsynced clock at 1970, a year far ahead) land here, never an insert error.
CREATE TABLE IF NOT EXISTS telemetry_samples_default PARTITION OF telemetry_samples DEFAULT;
-- The central queries: one greenhouse (gateway), zone and metric over a time window.
CREATE INDEX IF NOT EXISTS telemetry_samples_series ON telemetry_samples (gateway_id, zone_uid, metric_type, ts);
-- Idempotency checks of overlapping retries, and per-gateway seq queries.
CREATE INDEX IF NOT EXISTS telemetry_samples_seq ON telemetry_samples (gateway_id, generation, seq);
CREATE EXTENSION IF NOT EXISTS btree_gist;
CREATE TABLE IF NOT EXISTS telemetry_seq_ranges (
    gateway_id text NOT NULL,
    generation text NOT NULL,
    first_seq bigint NOT NULL,
    last_seq bigint NOT NULL,
    CHECK (first_seq <= last_seq),
    PRIMARY KEY (gateway_id, generation, first_seq),
    EXCLUDE USING gist (gateway_id WITH =, generation WITH =, int8range(first_seq, last_seq, '[]') WITH &&)
);
"""

DDL = """
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
# the keys must include it (otherwise a new generation's rows would be skipped as duplicates).
UPGRADE = """
DO $$ BEGIN
    IF EXISTS (SELECT 1 FROM pg_class WHERE relname = 'telemetry_samples' AND relkind = 'r')
       AND NOT EXISTS (SELECT 1 FROM information_schema.columns
                       WHERE table_name = 'telemetry_samples' AND column_name = 'generation') THEN
        ALTER TABLE telemetry_samples ADD COLUMN generation text NOT NULL DEFAULT '';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM information_schema.columns
                   WHERE table_name = 'stream_items' AND column_name = 'generation') THEN
        ALTER TABLE stream_items ADD COLUMN generation text NOT NULL DEFAULT '';
        ALTER TABLE stream_items DROP CONSTRAINT stream_items_pkey;
        ALTER TABLE stream_items ADD PRIMARY KEY (gateway_id, generation, stream, seq);
    END IF;
    ALTER TABLE idempotency_keys ADD COLUMN IF NOT EXISTS body_hash text NOT NULL DEFAULT '';
    -- A telemetry table from before partitioning: moved aside, copied into the partitions below.
    IF EXISTS (SELECT 1 FROM pg_class WHERE relname = 'telemetry_samples' AND relkind = 'r') THEN
        ALTER TABLE telemetry_samples RENAME TO telemetry_samples_unpartitioned;
        ALTER TABLE telemetry_samples_unpartitioned DROP CONSTRAINT IF EXISTS telemetry_samples_pkey;
    END IF;
END $$;
"""

_COPY_LEGACY = """
INSERT INTO telemetry_samples SELECT gateway_id, generation, seq, zone_uid, node_uid, metric_type, channel, value,
    ts, received_at, ts_source, clock_synced, raw, stored_at FROM telemetry_samples_unpartitioned;
-- Runs of consecutive seqs (gaps and islands) become the idempotency ranges.
INSERT INTO telemetry_seq_ranges (gateway_id, generation, first_seq, last_seq)
SELECT gateway_id, generation, min(seq), max(seq) FROM (
    SELECT gateway_id, generation, seq,
           seq - row_number() OVER (PARTITION BY gateway_id, generation ORDER BY seq) AS island
    FROM telemetry_samples_unpartitioned) s
GROUP BY gateway_id, generation, island;
DROP TABLE telemetry_samples_unpartitioned;
"""

_ADVISORY_SCHEMA = 4242001
_ADVISORY_PARTITIONS = 4242002
# Months outside this window go to the default partition (a clock at 1970 must not create 600 tables).
EARLIEST_MONTH = (2000, 1)
MONTHS_AHEAD = 2  # partitions created ahead of the current month at start


def month_of(ts: float) -> tuple[int, int]:
    """(year, month) in UTC of an epoch time."""
    d = datetime.fromtimestamp(ts, UTC)
    return d.year, d.month


def month_bounds(month: tuple[int, int]) -> tuple[float, float]:
    """Epoch seconds of the first instant of the month and of the next month."""
    y, m = month
    ny, nm = (y + 1, 1) if m == 12 else (y, m + 1)
    return float(calendar.timegm((y, m, 1, 0, 0, 0))), float(calendar.timegm((ny, nm, 1, 0, 0, 0)))


def partition_name(month: tuple[int, int]) -> str:
    """``telemetry_samples_y2026m03``."""
    return f"telemetry_samples_y{month[0]:04d}m{month[1]:02d}"


def add_months(month: tuple[int, int], n: int) -> tuple[int, int]:
    """The month ``n`` months after ``month``."""
    index = month[0] * 12 + month[1] - 1 + n
    return index // 12, index % 12 + 1


def plausible(month: tuple[int, int], now: float | None = None) -> bool:
    """A month that gets its own partition (between 2000-01 and a year ahead of now)."""
    latest = add_months(month_of(time.time() if now is None else now), 12)
    return EARLIEST_MONTH <= month <= latest


class Partitions:
    """The monthly partitions this process knows exist; creates missing ones before rows arrive."""

    def __init__(self) -> None:
        self.known: set[tuple[int, int]] = set()

    async def load(self, conn: asyncpg.Connection) -> None:
        """Read the existing partitions' names."""
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'telemetry_samples'")
        for r in rows:
            name: str = r["relname"]
            if name.startswith("telemetry_samples_y") and len(name) == len("telemetry_samples_y2026m01"):
                self.known.add((int(name[-7:-3]), int(name[-2:])))

    def missing(self, timestamps: list[float]) -> set[tuple[int, int]]:
        """Plausible months of these times without a partition yet (cheap: min/max span of a batch)."""
        if not timestamps:
            return set()
        lo, hi = month_of(min(timestamps)), month_of(max(timestamps))
        months: set[tuple[int, int]] = set()
        m = lo
        while m <= hi and len(months) < 24:  # a batch spanning years is odd: its ends are enough
            months.add(m)
            m = add_months(m, 1)
        months.add(hi)
        return {m for m in months if m not in self.known and plausible(m)}

    async def create(self, conn: asyncpg.Connection, months: set[tuple[int, int]]) -> None:
        """Create monthly partitions (own transaction, serialised across receiver processes)."""
        for month in sorted(months):
            start, end = month_bounds(month)
            try:
                async with conn.transaction():
                    await conn.execute(f"SELECT pg_advisory_xact_lock({_ADVISORY_PARTITIONS})")
                    await conn.execute(
                        f"CREATE TABLE IF NOT EXISTS {partition_name(month)} PARTITION OF telemetry_samples"
                        f" FOR VALUES FROM ({start!r}) TO ({end!r})")
            except Exception as exc:  # e.g. the default partition already holds rows of that month
                log.warning("telemetry partition %s not created (rows stay in the default partition): %s",
                            partition_name(month), exc)
            self.known.add(month)  # created, or not creatable: do not try on every batch


async def ensure_schema(
    conn: asyncpg.Connection, partitions: Partitions | None = None, now: float | None = None
) -> None:
    """Create the tables once, migrate an unpartitioned telemetry table, create this month's partitions
    and ``MONTHS_AHEAD`` more; an advisory lock keeps receivers starting together from racing."""
    parts = partitions or Partitions()
    async with conn.transaction():
        await conn.execute(f"SELECT pg_advisory_xact_lock({_ADVISORY_SCHEMA})")
        await conn.execute(DDL)
        await conn.execute(UPGRADE)
        await conn.execute(TELEMETRY_DDL)
        await parts.load(conn)
        legacy = await conn.fetchval("SELECT to_regclass('telemetry_samples_unpartitioned') IS NOT NULL")
        if legacy:
            span = await conn.fetchrow("SELECT min(ts) AS lo, max(ts) AS hi FROM telemetry_samples_unpartitioned")
    current = month_of(time.time() if now is None else now)
    await parts.create(conn, parts.missing([month_bounds(current)[0], month_bounds(add_months(current,
                                                                                              MONTHS_AHEAD))[0]]))
    if legacy:
        if span["lo"] is not None:
            await parts.create(conn, parts.missing([span["lo"], span["hi"]]))
        async with conn.transaction():
            await conn.execute(f"SELECT pg_advisory_xact_lock({_ADVISORY_SCHEMA})")
            if await conn.fetchval("SELECT to_regclass('telemetry_samples_unpartitioned') IS NOT NULL"):
                await conn.execute(_COPY_LEGACY)
