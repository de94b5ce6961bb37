"""The baseline, built like the seed system's history-logger: a paho-mqtt subscriber (paho's network
thread) queues every telemetry message; a writer thread parses them and commits batches with sqlite3.

Same SQLite settings (WAL, synchronous=NORMAL), same batch rules (200 rows or 500 ms, whichever first)
and the same two statements per batch (insert into telemetry_samples, upsert telemetry_last) as the
gateway, so the comparison is about the process architecture, not the schema. It validates less than
the gateway (no JSON Schema, no registry checks beyond the uid → id cache), as the seed did.

Prints ``{"event": "ready"}`` once subscribed; exits (after a final flush) on SIGTERM or stdin EOF.
"""

from __future__ import annotations

import argparse
import json
import math
import queue
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from common import ZONES, bench_nodes, send_json
from paho.mqtt.enums import CallbackAPIVersion

SCHEMA = """
CREATE TABLE IF NOT EXISTS zones (id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS nodes (id INTEGER PRIMARY KEY, uid TEXT NOT NULL UNIQUE, zone_id INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS telemetry_samples (
    id INTEGER PRIMARY KEY, zone_id INTEGER NOT NULL, node_id INTEGER NOT NULL, metric_type TEXT NOT NULL,
    channel TEXT, value REAL NOT NULL, ts REAL NOT NULL, received_at REAL NOT NULL, ts_source TEXT NOT NULL,
    clock_synced INTEGER NOT NULL, raw TEXT);
CREATE INDEX IF NOT EXISTS telemetry_samples_ts ON telemetry_samples (ts);
CREATE TABLE IF NOT EXISTS telemetry_last (
    zone_id INTEGER NOT NULL, node_id INTEGER NOT NULL, metric_type TEXT NOT NULL, channel TEXT,
    value REAL NOT NULL, ts REAL NOT NULL, received_at REAL NOT NULL, raw TEXT,
    UNIQUE (zone_id, node_id, metric_type));
"""
INSERT = (
    "INSERT INTO telemetry_samples(zone_id, node_id, metric_type, channel, value, ts, received_at, ts_source,"
    " clock_synced, raw) VALUES (?,?,?,?,?,?,?,?,?,?)"
)
UPSERT_LAST = (
    "INSERT INTO telemetry_last(zone_id, node_id, metric_type, channel, value, ts, received_at, raw)"
    " VALUES (?,?,?,?,?,?,?,?)"
    " ON CONFLICT(zone_id, node_id, metric_type) DO UPDATE SET value=excluded.value, ts=excluded.ts,"
    " channel=excluded.channel, received_at=excluded.received_at, raw=excluded.raw"
    " WHERE excluded.ts >= telemetry_last.ts"
)
METRICS = {"ph", "ec", "temp_air", "temp_water", "humidity", "co2", "lux", "water_level", "flow_rate", "pump_current"}

Inbound = tuple[str, bytes, float]  # topic, payload, received_at


def open_db(path: Path, node_count: int) -> tuple[sqlite3.Connection, dict[str, tuple[int, int]]]:
    """Create the schema, register the bench nodes and return the uid → (zone_id, node_id) cache."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA)
    conn.execute("BEGIN")
    for uid in ZONES:
        conn.execute("INSERT OR IGNORE INTO zones(uid) VALUES (?)", (uid,))
    zone_ids = {str(r[1]): int(r[0]) for r in conn.execute("SELECT id, uid FROM zones")}
    for node in bench_nodes(node_count):
        conn.execute("INSERT OR IGNORE INTO nodes(uid, zone_id) VALUES (?, ?)", (node.uid, zone_ids[node.zone]))
    conn.execute("COMMIT")
    cache = {str(r[0]): (int(r[2]), int(r[1])) for r in conn.execute("SELECT uid, id, zone_id FROM nodes")}
    return conn, cache


def to_rows(msg: Inbound, cache: dict[str, tuple[int, int]]) -> list[tuple[Any, ...]]:
    """Parse one telemetry message into telemetry_samples rows (bad samples are counted and skipped)."""
    topic, payload, received_at = msg
    parts = topic.split("/")
    ids = cache.get(parts[3]) if len(parts) == 5 else None
    if ids is None:
        return []
    zone_id, node_id = ids
    try:
        body = json.loads(payload)
    except ValueError:
        return []
    items = body if isinstance(body, list) else body.get("samples", [body]) if isinstance(body, dict) else []
    rows = []
    for s in items:
        metric = str(s.get("metric_type", "")).strip().lower()
        value = s.get("value")
        if metric not in METRICS or not isinstance(value, int | float) or not math.isfinite(value):
            continue
        ts = s.get("ts")
        ts_ok = isinstance(ts, int | float)
        raw = s.get("raw")
        rows.append((zone_id, node_id, metric, s.get("channel"), float(value), float(ts) if ts_ok else received_at,
                     received_at, "node" if ts_ok else "gateway", 1,
                     None if raw is None else json.dumps(raw, separators=(",", ":"))))
    return rows


class BatchWriter(threading.Thread):
    """Drains the queue into one transaction per batch (size or time bound, whichever first)."""

    def __init__(self, conn: sqlite3.Connection, cache: dict[str, tuple[int, int]], inbox: queue.Queue[Inbound],
                 batch_size: int, flush_s: float) -> None:
        super().__init__(name="batch-writer", daemon=True)
        self.conn, self.cache, self.inbox = conn, cache, inbox
        self.batch_size, self.flush_s = batch_size, flush_s
        self.stopping = threading.Event()
        self.committed = 0

    def run(self) -> None:
        """Collect, parse, commit; until stopped and the queue is empty."""
        while not (self.stopping.is_set() and self.inbox.empty()):
            rows: list[tuple[Any, ...]] = []
            deadline = time.monotonic() + self.flush_s
            while len(rows) < self.batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    rows.extend(to_rows(self.inbox.get(timeout=remaining), self.cache))
                except queue.Empty:
                    break
            if rows:
                self.commit(rows)

    def commit(self, rows: list[tuple[Any, ...]]) -> None:
        """One transaction: append the samples, upsert the latest value per (zone, node, metric)."""
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.executemany(INSERT, rows)
        self.conn.executemany(UPSERT_LAST, [(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[9]) for r in rows])
        self.conn.execute("COMMIT")
        self.committed += len(rows)


def main() -> int:
    """Subscribe to every node's telemetry and write it until told to stop."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--db", type=Path, required=True)
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--batch-size", type=int, default=200)
    p.add_argument("--flush-ms", type=int, default=500)
    args = p.parse_args()
    conn, cache = open_db(args.db, args.nodes)
    inbox: queue.Queue[Inbound] = queue.Queue()
    writer = BatchWriter(conn, cache, inbox, args.batch_size, args.flush_ms / 1000.0)
    writer.start()
    subscribed = threading.Event()

    def on_connect(client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.subscribe("hydro/+/+/+/telemetry", qos=1)

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        inbox.put((msg.topic, bytes(msg.payload), time.time()))

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="history-logger", clean_session=True)
    client.max_inflight_messages_set(1000)
    client.on_connect = on_connect
    client.on_subscribe = lambda *_a: subscribed.set()
    client.on_message = on_message
    client.connect(args.host, args.port, keepalive=60)
    client.loop_start()
    if not subscribed.wait(10):
        send_json(sys.stdout, {"event": "error", "error": "subscription not acknowledged"})
        return 1
    send_json(sys.stdout, {"event": "ready"})
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_a: stop.set())

    def stop_on_eof() -> None:  # the parent closes our stdin to stop us
        sys.stdin.read()
        stop.set()

    threading.Thread(target=stop_on_eof, daemon=True).start()
    stop.wait()
    client.loop_stop()
    client.disconnect()
    writer.stopping.set()
    writer.join(30)
    conn.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
