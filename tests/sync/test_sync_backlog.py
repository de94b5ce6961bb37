"""Outage visibility: the backlog and ETA come from the outbox while nothing can be sent, not from the last send."""

from __future__ import annotations

import asyncio
import random

from gateway.clock import ManualClock
from gateway.store.db import Database
from gateway.tools.seed_db import add_samples
from sync.client import UpstreamClient
from sync.uplink import Uplink, UplinkSettings
from tests.sync.synckit import RunningReceiver, drive, eventually, running


async def test_a_dead_upstream_shows_the_real_growing_backlog(
    gw_db: Database, receiver: RunningReceiver, client: UpstreamClient, clock: ManualClock
) -> None:
    add_samples(gw_db.path, 1000, start_ts=clock.time())
    await receiver.stop()  # upstream dead from the start: no send ever succeeds
    uplink = Uplink(gw_db, client, UplinkSettings(telemetry_max_rows=500, backoff_base_s=60, backoff_cap_s=600,
                                                  backlog_refresh_s=10), clock=clock, rng=random.Random(1))
    async with running(uplink):
        telemetry = uplink.stream_status("telemetry")
        await eventually(lambda: telemetry.attempts >= 1 and telemetry.state == "backoff")
        assert telemetry.backlog_rows == 1000
        # Samples keep arriving during the outage (the writer commits them as usual).
        await asyncio.to_thread(add_samples, gw_db.path, 2500, start_ts=clock.time())
        await drive(clock, lambda: telemetry.backlog_rows == 3500, step=5)
        assert telemetry.rows_sent == 0 and telemetry.last_success_at is None
        st = uplink.status()["streams"]["telemetry"]
        assert st["backlog_rows"] == 3500
        assert st["catch_up_eta_s"] is None  # unknown while nothing moves, never a reassuring 0
        assert st["oldest_unsynced_age_s"] is not None and st["oldest_unsynced_age_s"] > 0

        await receiver.start()
        await drive(clock, lambda: telemetry.cursor == 3500, step=30)
        assert telemetry.backlog_rows == 0
    assert await receiver.seqs("telemetry") == list(range(1, 3501))
