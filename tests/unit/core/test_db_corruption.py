"""SQLITE_CORRUPT at run time: recognised as corruption, and the crashing service leaves the marker."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.app import ServiceCrashed
from gateway.compose import build_gateway
from gateway.settings import settings_from_mapping
from gateway.store.db import Database, corrupt_marker, is_corruption, open_or_recover
from gateway.tools.seed_db import add_samples
from tests.e2e import dbdamage


async def test_a_page_damaged_under_a_running_gateway_crashes_its_service_and_marks_the_file(tmp_path: Path) -> None:
    settings = settings_from_mapping({"gateway": {"id": "gw-rt", "greenhouse_uid": "gh1", "mode": "demo",
                                                  "data_dir": str(tmp_path)}})
    gw = await build_gateway(settings)  # opens the database (and the demo's simulated hardware)
    generation = gw.services.db.generation
    await gw.services.db.close()
    add_samples(settings.db_path, 20_000)
    await gw.services.db.open()
    try:
        middle = settings.db_path.stat().st_size // dbdamage.PAGE // 2  # telemetry pages, under its feet
        dbdamage._overwrite(settings.db_path, middle * dbdamage.PAGE, 8 * dbdamage.PAGE, seed=5)
        # Another writer moves the WAL on, so the gateway's connection drops its page cache and reads the file.
        with sqlite3.connect(settings.db_path) as other:
            other.execute("INSERT INTO kv_state(key, value, updated_at) VALUES ('x', '1', 0)")
        other.close()

        async def reader() -> None:
            await gw.services.db.fetchall("SELECT SUM(value) FROM telemetry_samples")

        with pytest.raises(ServiceCrashed) as crashed:
            await gw._supervised("reader", reader)
        assert is_corruption(crashed.value)
        assert "malformed" in corrupt_marker(settings.db_path).read_text()
    finally:
        await gw.services.db.close()
        gw.services.hardware.close()
    # The next start moves it aside and begins a new sequence space.
    fresh = Database(settings.db_path)
    recovered = await open_or_recover(fresh)
    try:
        assert recovered is not None and "run time" in recovered.reason
        assert recovered.new_generation != generation
    finally:
        await fresh.close()


def test_ordinary_errors_are_not_corruption() -> None:
    assert not is_corruption(sqlite3.OperationalError("database or disk is full"))
    assert not is_corruption(sqlite3.IntegrityError("UNIQUE constraint failed: nodes.uid"))
    assert is_corruption(sqlite3.DatabaseError("database disk image is malformed"))


async def test_the_first_corruption_any_query_meets_is_reported_once(tmp_path: Path) -> None:
    path = tmp_path / "gateway.db"
    db = Database(path)
    await db.open()
    await db.close()
    add_samples(path, 20_000)
    await db.open()
    seen: list[BaseException] = []
    db.on_corruption = seen.append
    try:
        middle = path.stat().st_size // dbdamage.PAGE // 2
        dbdamage._overwrite(path, middle * dbdamage.PAGE, 8 * dbdamage.PAGE, seed=6)
        with sqlite3.connect(path) as other:  # invalidate the connection's page cache
            other.execute("INSERT INTO kv_state(key, value, updated_at) VALUES ('x', '1', 0)")
        other.close()
        for _ in range(2):
            with pytest.raises(sqlite3.DatabaseError):
                async with db.transaction() as conn:  # e.g. the writer, which retries every error
                    await conn.execute("SELECT SUM(value) FROM telemetry_samples")
        assert len(seen) == 1 and is_corruption(seen[0])
    finally:
        await db.close()
