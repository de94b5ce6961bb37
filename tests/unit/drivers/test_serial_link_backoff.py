"""SerialLink reconnect backoff on the injected clock, against a port that does not exist."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from drivers.serial_link import SerialLink, SerialMessage
from gateway.clock import ManualClock


async def _ignore(message: SerialMessage) -> None:
    return None


async def test_backoff_doubles_up_to_the_cap_and_logs_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    link = SerialLink(
        str(tmp_path / "ttyUSB9"), 115200, _ignore, clock, "rs485", reconnect_min_s=0.5, reconnect_max_s=4.0
    )
    with caplog.at_level(logging.DEBUG, logger="drivers.serial_link"):
        task = asyncio.create_task(link.run())
        try:
            await asyncio.sleep(0)
            assert link.stats["connect_failures"] == 1  # attempt at t = 0
            # retries at +0.5, +1, +2, +4, then capped at 4 s: t = 0.5, 1.5, 3.5, 7.5, 11.5
            for advance, failures in ((0.5, 2), (1.0, 3), (2.0, 4), (4.0, 5), (3.9, 5), (0.1, 6)):
                await clock.advance(advance)
                assert link.stats["connect_failures"] == failures, advance
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert not link.connected
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "cannot open" in warnings[0].getMessage()


def test_invalid_backoff_bounds_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SerialLink(str(tmp_path / "x"), 9600, _ignore, ManualClock(), "x", reconnect_min_s=5, reconnect_max_s=1)
