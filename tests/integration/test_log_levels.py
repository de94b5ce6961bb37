"""Log levels mean something: routine switching is INFO, a safety trip is WARNING (seen on the demo greenhouse)."""

from __future__ import annotations

import logging

import pytest

from gateway.settings import settings_from_mapping
from gateway.sim.demo import demo_config
from tests.conftest import eventually, free_port, run_gateway


def _records(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if text in r.getMessage()]


async def test_routine_off_is_info_and_a_safety_trip_is_warning(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="gateway")
    settings = settings_from_mapping(demo_config(tmp_path, http_port=free_port(), mqtt_port=free_port()))
    async with run_gateway(settings, simulate=True) as gw:
        await eventually(lambda: gw.services.safety.snapshot()["zones"]["zone-a"]["pumps"][0]["current_a"] is not None,
                         timeout=15)
        await eventually(lambda: _level_known(gw), timeout=15)
        # A water change: recirculation OFF for the change, the drain ON, then an abort switches the drain OFF.
        assert await gw.services.water.start_change("zone-a", "test")
        await eventually(lambda: gw.services.water.snapshot()["zone-a"]["phase"] == "WATER_CHANGE_DRAIN", timeout=15)
        await eventually(lambda: bool(_records(caplog, "relay:a-drain ON (water_cycle)")), timeout=15)
        assert await gw.services.water.abort("zone-a", "test")
        await eventually(lambda: bool(_records(caplog, "relay:a-drain OFF")), timeout=15)
        routine = _records(caplog, "relay:a-recirc OFF") + _records(caplog, "relay:a-drain OFF")
        assert routine and all(r.levelno == logging.INFO for r in routine), [(r.levelname, r.message) for r in routine]
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "switched OFF" in r.getMessage()]

        # A jammed drain pump started by a new change: the safety loop trips it, and that reads as a warning.
        gw.services.simulation.inject("zone-a", "jammed", "drain")
        await eventually(lambda: gw.services.water.snapshot()["zone-a"]["phase"] == "NORMAL_RECIRC", timeout=15)
        assert await gw.services.water.start_change("zone-a", "test")
        await eventually(lambda: bool(_records(caplog, "safety trip biz_overcurrent: relay:a-drain")), timeout=15)
        trips = _records(caplog, "safety trip biz_overcurrent: relay:a-drain switched OFF")
        assert trips and all(r.levelno == logging.WARNING for r in trips)
        gw.services.simulation.clear("zone-a", "jammed", "drain")


async def _level_known(gw) -> bool:
    row = await gw.services.db.fetchone("SELECT 1 FROM telemetry_last WHERE metric_type='water_level' LIMIT 1")
    return row is not None
