"""Fixtures for the sync tests: gateway SQLite file, reference receiver on a throwaway PostgreSQL."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.clock import ManualClock
from gateway.store.db import Database
from sync.client import UpstreamClient
from sync.reachability import Reachability
from sync.uplink import Uplink, UplinkSettings
from tests.sync.synckit import TOKEN, RunningReceiver


@pytest.fixture
async def gw_db(tmp_path: Path) -> AsyncIterator[Database]:
    """The gateway's SQLite file with every migration applied."""
    db = Database(tmp_path / "gateway.sqlite")
    await db.open()
    yield db
    await db.close()


@pytest.fixture
def gateway_id() -> str:
    """A gateway id of its own per test: the receiver's tables are keyed by it, so tests share one database."""
    return f"gw-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def receiver(postgres_dsn: str, gateway_id: str) -> AsyncIterator[RunningReceiver]:
    """The reference receiver (fresh fault switches and counters) served on a free port."""
    rx = RunningReceiver(postgres_dsn, gateway_id)
    await rx.start()
    yield rx
    await rx.close()


@pytest.fixture
def clock() -> ManualClock:
    """A manual clock."""
    return ManualClock()


@pytest.fixture
async def client(receiver: RunningReceiver, gateway_id: str) -> AsyncIterator[UpstreamClient]:
    """An UpstreamClient pointed at the receiver."""
    async with UpstreamClient(receiver.url, TOKEN, gateway_id, timeout_s=10) as c:
        yield c


@pytest.fixture
def make_uplink(gw_db: Database, client: UpstreamClient, clock: ManualClock) -> Callable[..., Uplink]:
    """Build an Uplink on the manual clock with a seeded random source."""

    def make(reachability: Reachability | None = None, **settings: Any) -> Uplink:
        return Uplink(gw_db, client, UplinkSettings(**settings), clock=clock, rng=random.Random(7),
                      reachability=reachability)

    return make
