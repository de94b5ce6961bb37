"""The real gateway's database goes back in time (an older copy put in place, or 64 KiB of its WAL
overwritten) while a real node publishes and the reference receiver on PostgreSQL takes the uplink.

Before database generations, the gateway numbered its new samples from the older maximum, the receiver
took them for retries and dropped them, silently. Now: every sample the database holds reaches
PostgreSQL, ``infra_db_rolled_back`` names what happened, and what only the lost file held is a gap.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.conftest import free_port
from tests.e2e import dbdamage, gateway_proc
from tests.e2e.gateway_proc import ROOT

TOKEN = "rollback-token"
RATE = 200  # samples per second from the node


async def _until(predicate: Callable[[], Any], what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _local_numbers(db: Path) -> list[int]:
    """The node's sample numbers in the gateway's SQLite file, by sequence."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT raw FROM telemetry_samples ORDER BY id").fetchall()
    conn.close()
    return [json.loads(r[0])["i"] for r in rows if r[0]]


def _alert(db: Path, code: str) -> dict[str, Any] | None:
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT details FROM alerts WHERE code = ? AND status = 'ACTIVE'", (code,)).fetchone()
    conn.close()
    return None if row is None else dict(json.loads(row[0]))


class Rig:
    """Receiver process, gateway process, node process; figures from PostgreSQL and the ack file."""

    def __init__(self, tmp: Path, dsn: str) -> None:
        self.tmp, self.dsn = tmp, dsn
        self.gateway_id = f"gw-rb-{uuid.uuid4().hex[:8]}"
        self.db = tmp / "data" / "gateway.db"
        self.acks = tmp / "acks.txt"
        self.http_port, self.mqtt_port = free_port(), free_port()
        self.rx = subprocess.Popen([sys.executable, "-m", "sync.receiver", "--dsn", dsn, "--port", "0",
                                    "--token", TOKEN], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.rx.stdout is not None
        url = "http://" + self.rx.stdout.readline().split()[-1]
        self.config = gateway_proc.write_config(
            tmp, gateway_id=self.gateway_id, mqtt_port=self.mqtt_port, http_port=self.http_port,
            ingest={"flush_interval_ms": 100}, upstream=gateway_proc.upstream(url, TOKEN))
        self.gw: subprocess.Popen[str] | None = None
        self.node: subprocess.Popen[bytes] | None = None
        self.pg: asyncpg.Connection | None = None
        self._last_local = -1
        self.starts = 0

    async def start_gateway(self) -> float:
        self.starts += 1
        self.gw = gateway_proc.start(self.config, self.tmp / f"gateway-{self.starts}.log")
        return await asyncio.to_thread(gateway_proc.wait_healthy, self.http_port, self.gw, 90.0)

    def kill_gateway(self) -> None:
        assert self.gw is not None
        gateway_proc.kill9(self.gw)

    def start_node(self) -> None:
        self.node = subprocess.Popen([sys.executable, str(ROOT / "tests/e2e/acked_publisher.py"),
                                      str(self.mqtt_port), str(RATE), str(self.acks)])

    def stop_node(self) -> None:
        assert self.node is not None
        self.node.terminate()
        self.node.wait()

    async def upstream_numbers(self) -> list[int]:
        if self.pg is None:
            self.pg = await asyncpg.connect(self.dsn)
        rows = await self.pg.fetch("SELECT raw FROM telemetry_samples WHERE gateway_id = $1", self.gateway_id)
        return [json.loads(r["raw"])["i"] for r in rows if r["raw"]]

    async def upstream_count(self) -> int:
        return len(await self.upstream_numbers())

    async def upstream_count_at_least(self, n: int) -> bool:
        return await self.upstream_count() >= n

    def acked(self) -> set[int]:
        return {int(line) for line in self.acks.read_text().split()} if self.acks.exists() else set()

    async def close(self) -> None:
        for proc in (self.gw, self.node):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
        if self.pg is not None:
            await self.pg.close()
        self.rx.send_signal(signal.SIGTERM)
        self.rx.wait(timeout=10)
        if self.rx.stdout is not None:
            self.rx.stdout.close()

    async def drained(self) -> bool:
        """Every sample of the local file is in PostgreSQL, and the file stopped growing (node stopped)."""
        local = set(await asyncio.to_thread(_local_numbers, self.db))
        settled, self._last_local = len(local) == self._last_local, len(local)
        return settled and bool(local) and local <= set(await self.upstream_numbers())


async def _figures(rig: Rig, what: str) -> dict[str, int]:
    local = await asyncio.to_thread(_local_numbers, rig.db)
    upstream = await rig.upstream_numbers()
    acked, up = rig.acked(), set(upstream)
    figures = {
        "acknowledged": len(acked),
        "acknowledged_in_postgres": len(acked & up),
        "acknowledged_lost": len(acked - up),
        "local_rows": len(local),
        "local_rows_missing_upstream": len(set(local) - up),
        "upstream_rows": len(upstream),
        "upstream_duplicates": len(upstream) - len(up),
    }
    print(f"{what}: {figures}; acknowledged but not upstream: {_ranges(sorted(acked - up))}")
    return figures


def _ranges(numbers: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for n in numbers:
        if out and out[-1][1] == n - 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


@pytest.mark.slow
async def test_database_replaced_by_an_older_copy(tmp_path: Path, postgres_dsn: str) -> None:
    rig = Rig(tmp_path, postgres_dsn)
    try:
        await rig.start_gateway()
        rig.start_node()
        await _until(lambda: rig.upstream_count_at_least(1000), "1000 samples upstream")
        await asyncio.to_thread(dbdamage.copy_database, rig.db, tmp_path / "older.db")
        at_copy = await rig.upstream_count()
        await _until(lambda: rig.upstream_count_at_least(at_copy + 1200), "1200 more samples upstream")
        rig.kill_gateway()
        dbdamage.replace_with(rig.db, tmp_path / "older.db")
        took = await rig.start_gateway()
        await _until(lambda: _alert(rig.db, "infra_db_rolled_back") is not None, "the rollback alert")
        alert = _alert(rig.db, "infra_db_rolled_back")
        assert alert is not None
        telemetry = alert["streams"]["telemetry"]
        print(f"older copy: healthy after {took:.2f} s; alert {alert}")
        assert alert["old_generation"] != alert["new_generation"]
        assert telemetry["acknowledged"] > telemetry["local_head"]
        # new samples after the restart, then the node stops and everything drains
        restart_rows = len(await asyncio.to_thread(_local_numbers, rig.db))
        await _until(lambda: len(_local_numbers(rig.db)) >= restart_rows + 600, "600 new samples")
        rig.stop_node()
        await _until(rig.drained, "the local file upstream")
        figures = await _figures(rig, "older copy")
        assert figures["local_rows_missing_upstream"] == 0
        gaps = _gaps(rig.db)
        print(f"older copy: gaps {gaps}")
        assert all(reason == "db_rolled_back" for *_, reason in gaps)
        # The central side hears it too: the alert went up the alerts stream.
        assert rig.pg is not None
        codes = [json.loads(r["data"]).get("code") for r in await rig.pg.fetch(
            "SELECT data FROM stream_items WHERE gateway_id = $1 AND stream = 'alerts'", rig.gateway_id)]
        assert "infra_db_rolled_back" in codes
    finally:
        await rig.close()


@pytest.mark.slow
async def test_garbage_in_the_wal(tmp_path: Path, postgres_dsn: str) -> None:
    rig = Rig(tmp_path, postgres_dsn)
    wal = Path(str(rig.db) + "-wal")
    try:
        await rig.start_gateway()
        rig.start_node()
        await _until(lambda: rig.upstream_count_at_least(1500), "1500 samples upstream")
        await _until(lambda: wal.exists() and wal.stat().st_size >= 512 * 1024, "a WAL of 512 KiB")
        rig.kill_gateway()  # as a power cut would: the WAL is not checkpointed
        before = len(await asyncio.to_thread(_local_numbers_nowal, rig.db, wal))
        dbdamage.garbage_in_wal(wal)
        took = await rig.start_gateway()
        after = len(await asyncio.to_thread(_local_numbers, rig.db))
        print(f"WAL damage: {before} rows before, {after} after recovery; healthy after {took:.2f} s")
        await _until(lambda: _alert(rig.db, "infra_db_rolled_back") is not None, "the rollback alert")
        alert = _alert(rig.db, "infra_db_rolled_back")
        print(f"WAL damage: alert {alert}")
        assert alert is not None and alert["old_generation"] != alert["new_generation"]
        restart_rows = after
        try:
            await _until(lambda: len(_local_numbers(rig.db)) >= restart_rows + 600, "600 new samples")
        except AssertionError:
            print("gateway rc", rig.gw.poll() if rig.gw else None, sorted(p.name for p in rig.db.parent.iterdir()))
            print((tmp_path / f"gateway-{rig.starts}.log").read_text()[-3000:])
            raise
        rig.stop_node()
        await _until(rig.drained, "the local file upstream")
        figures = await _figures(rig, "WAL damage")
        assert figures["local_rows_missing_upstream"] == 0
        print(f"WAL damage: gaps {_gaps(rig.db)}")
    finally:
        await rig.close()


def _local_numbers_nowal(db: Path, wal: Path) -> list[int]:
    """Rows as they were before the damage (read from a copy so the real files stay untouched)."""
    copy = db.with_name("before.db")
    copy.write_bytes(db.read_bytes())
    Path(str(copy) + "-wal").write_bytes(wal.read_bytes())
    try:
        return _local_numbers(copy)
    finally:
        for suffix in ("", "-wal", "-shm"):
            Path(str(copy) + suffix).unlink(missing_ok=True)


def _gaps(db: Path) -> list[tuple[int, int, int, str]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT first_seq, last_seq, count, reason FROM sync_gaps").fetchall()
    conn.close()
    return [tuple(r) for r in rows]
