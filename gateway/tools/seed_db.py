"""Fill a gateway SQLite file with synthetic telemetry and outbox rows (tests, chaos runs, benchmarks).

``python -m gateway.tools.seed_db --db X --samples 1000000 --outbox 100``
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

from gateway.store.db import Database
from gateway.store.samples import SampleValues, insert_samples
from sync.outbox import ENQUEUE_SQL
from sync.streams import OUTBOX_STREAMS

METRICS = ("ph", "ec", "temp_air", "temp_water", "humidity", "co2", "lux", "water_level", "flow_rate")


async def migrate(path: Path) -> None:
    """Create the file and apply every migration."""
    db = Database(path)
    await db.open()
    await db.close()


def ensure_topology(conn: sqlite3.Connection, zones: int = 2, nodes_per_zone: int = 3, now: float = 0.0) -> None:
    """Zones z1..zN and nodes n<z>_<k> so telemetry rows have uids to join."""
    for z in range(1, zones + 1):
        conn.execute("INSERT OR IGNORE INTO zones (id, uid, name, created_at) VALUES (?, ?, ?, ?)",
                     (z, f"zone-{z}", f"Zone {z}", now))
        for k in range(1, nodes_per_zone + 1):
            nid = z * 100 + k
            conn.execute(
                "INSERT OR IGNORE INTO nodes (id, uid, hardware_id, node_type, zone_id, lifecycle_state, validated,"
                " updated_at) VALUES (?, ?, ?, 'sensor', ?, 'ASSIGNED', 1, ?)",
                (nid, f"node-{z}-{k}", f"hw-{z}-{k}", z, now),
            )


def _samples(n: int, start_ts: float, step_s: float, zones: int, nodes_per_zone: int) -> Iterator[SampleValues]:
    for i in range(n):
        z = i % zones + 1
        node = z * 100 + (i // zones) % nodes_per_zone + 1
        ts = start_ts + i * step_s
        metric = METRICS[i % len(METRICS)]
        yield (z, node, metric, None, round(5.0 + (i % 1000) / 100.0, 3), ts, ts + 0.05, "node", 1, None)


def add_samples(path: Path, n: int, *, start_ts: float = 1_767_225_600.0, step_s: float = 0.01,
                zones: int = 2, nodes_per_zone: int = 3, chunk: int = 50_000) -> None:
    """Append ``n`` telemetry samples (ts from ``start_ts`` every ``step_s``), committing per chunk."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        with conn:
            ensure_topology(conn, zones, nodes_per_zone, start_ts)
        rows = _samples(n, start_ts, step_s, zones, nodes_per_zone)
        while True:
            part = [r for _, r in zip(range(chunk), rows, strict=False)]
            if not part:
                break
            with conn:
                insert_samples(conn, part)
    finally:
        conn.close()


def add_outbox(path: Path, per_stream: int, *, created_at: float = 1_767_225_600.0) -> None:
    """Append ``per_stream`` rows to each outbox stream, interleaved as they would be in real life."""
    conn = sqlite3.connect(path)
    try:
        conn.execute("PRAGMA busy_timeout=5000")
        with conn:
            for i in range(per_stream):
                for stream in OUTBOX_STREAMS:
                    body = {"kind": stream, "n": i, "text": f"{stream} #{i}"}
                    conn.execute(ENQUEUE_SQL, (stream, json.dumps(body), created_at + i))
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(prog="python -m gateway.tools.seed_db", description=__doc__)
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--samples", type=int, default=0)
    p.add_argument("--outbox", type=int, default=0, help="rows per outbox stream")
    args = p.parse_args(argv)
    asyncio.run(migrate(args.db))
    if args.samples:
        add_samples(args.db, args.samples)
    if args.outbox:
        add_outbox(args.db, args.outbox)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
