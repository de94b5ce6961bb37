"""What one gateway-relay command costs on its way from the API to the relay (docs/architecture.md counts it)."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import gateway.safety.gate as gate_module
from gateway.readings import Reading
from gateway.settings import settings_from_mapping
from gateway.sim.demo import demo_config
from gateway.telemetry_metrics import Metric
from tests.conftest import eventually, free_port, run_gateway
from tests.fakes.paho_node import PahoNode

DB_CALLS = ("execute", "fetchone", "fetchall", "transaction", "in_thread_transaction")
# docs/architecture.md, Path 2: before this change 6 round trips (2 fetchone, 1 fetchall, 3 transactions) and
# 36 trips to aiosqlite's worker thread; now the active alerts (1 fetchall) and the command stored in its final
# state with its three outbox rows (1 in-thread transaction).
ROUND_TRIPS = {"fetchall": 1, "in_thread_transaction": 1}
THREAD_HOPS = 4  # fetchall: execute, fetchall, cursor close; the transaction: one call
NODE_THREAD_HOPS = 14  # two transactions (BEGIN, INSERT|SELECT+UPDATE…, outbox, COMMIT) and the fetchall


def _counting(counts: Counter[str], name: str, fn: Callable[..., Any], task: Callable[[], Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if asyncio.current_task() is task():  # only the command's own task, not the loops running alongside
            counts[name] += 1
        return fn(*args, **kwargs)

    return wrapper


async def test_a_relay_command_checks_the_interlock_once_and_makes_few_database_round_trips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = demo_config(tmp_path / "data", http_port=free_port(), mqtt_port=free_port())
    for zone in cfg["zones"]:
        zone["water_cycle"]["recirc"]["enabled"] = False  # nothing else switches pumps meanwhile
    async with run_gateway(settings_from_mapping(cfg)) as gw:
        s = gw.services
        zone_id = s.registry.zone_id("zone-a")
        assert zone_id is not None
        now = s.clock.monotonic()
        s.latest.update(zone_id, Metric.WATER_LEVEL, Reading(70.0, now, s.clock.time(), 1, None))
        s.latest.update(zone_id, Metric.FLOW_RATE, Reading(12.0, now, s.clock.time(), 1, None))
        counts: Counter[str] = Counter()
        measuring: list[asyncio.Task[Any] | None] = [None]
        for name in DB_CALLS:
            monkeypatch.setattr(s.db, name, _counting(counts, name, getattr(s.db, name), lambda: measuring[0]))
        # Every trip to aiosqlite's worker thread goes through Connection._execute.
        monkeypatch.setattr(s.db.conn, "_execute",
                            _counting(counts, "thread_hop", s.db.conn._execute, lambda: measuring[0]))
        monkeypatch.setattr(gate_module, "can_run_pump",
                            _counting(counts, "interlock", gate_module.can_run_pump, lambda: measuring[0]))
        measuring[0] = asyncio.current_task()
        record = await s.commands.submit("zone-a", "a-drain", "run_pump", {"duration_s": 30}, source="api")
        measuring[0] = None
        assert record["status"] == "DONE"
        assert s.hardware.relays["a-drain"].pump_on  # the relay really switched
        assert counts["interlock"] == 1
        assert {name: counts[name] for name in DB_CALLS if counts[name]} == ROUND_TRIPS, dict(counts)
        assert counts["thread_hop"] == THREAD_HOPS, dict(counts)
        # Fewer trips, the same result: the record returned is the one stored, and upstream gets the
        # command's three states as before (QUEUED, SENT, DONE), in order.
        assert await s.commands.get(record["cmd_id"]) == record
        assert record["zone_uid"] == "zone-a" and record["node_uid"] is None and record["target"] == "local"
        assert record["sent_at"] is not None and record["finished_at"] is not None
        bodies = [json.loads(r["body"]) for r in await s.db.fetchall(
            "SELECT body FROM sync_outbox WHERE stream = 'command_status' ORDER BY id")]
        mine = [b for b in bodies if b["cmd_id"] == record["cmd_id"]]
        assert [b["status"] for b in mine] == ["QUEUED", "SENT", "DONE"]
        assert mine[-1] == record
        assert mine[0]["sent_at"] is None and mine[1]["finished_at"] is None


NODE_HELLO = {"message_type": "node_hello", "hardware_id": "esp32-aa02", "node_type": "pump", "fw_version": "2.1.0"}


async def test_a_node_command_is_stored_before_it_is_published_and_returns_what_was_written(
    make_settings: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with run_gateway(make_settings()) as gw:
        s = gw.services
        node = PahoNode("nd-water-1", s.broker.port)
        await asyncio.to_thread(node.connect)
        await asyncio.to_thread(node.publish, "hydro/node_hello", NODE_HELLO)
        await eventually(lambda: s.registry.get("nd-water-1"))
        zone_id = s.registry.zone_id("zone-a")
        assert zone_id is not None
        s.latest.update(zone_id, Metric.WATER_LEVEL, Reading(62.0, s.clock.monotonic(), s.clock.time(), 1, None))
        counts: Counter[str] = Counter()
        measuring: list[asyncio.Task[Any] | None] = [None]
        for name in DB_CALLS:
            monkeypatch.setattr(s.db, name, _counting(counts, name, getattr(s.db, name), lambda: measuring[0]))
        monkeypatch.setattr(s.db.conn, "_execute",
                            _counting(counts, "thread_hop", s.db.conn._execute, lambda: measuring[0]))
        seen_at_publish: list[str | None] = []
        publish = s.gate._publish

        async def checking_publish(topic: str, payload: bytes, qos: int, retain: bool) -> None:
            # The node may answer before the publish returns: its command must already be stored.
            task, measuring[0] = measuring[0], None
            stored = await s.commands.get(json.loads(payload)["cmd_id"])
            seen_at_publish.append(None if stored is None else stored["status"])
            measuring[0] = task
            await publish(topic, payload, qos, retain)

        monkeypatch.setattr(s.gate, "_publish", checking_publish)
        measuring[0] = asyncio.current_task()
        record = await s.commands.submit("zone-a", "pump_drain", "run_pump", {"duration_s": 5},
                                         node_uid="nd-water-1", source="api")
        measuring[0] = None
        assert seen_at_publish == ["QUEUED"]
        assert record["status"] == "SENT" and record["node_uid"] == "nd-water-1" and record["sent_at"] is not None
        assert await s.commands.get(record["cmd_id"]) == record
        # Before: 2 fetchone (cmd_id lookup, read-back), 1 fetchall, 2 transactions; 26 worker-thread trips.
        assert {name: counts[name] for name in DB_CALLS if counts[name]} == {"transaction": 2, "fetchall": 1}
        assert counts["thread_hop"] == NODE_THREAD_HOPS, dict(counts)
        node.close()


async def test_a_relay_command_that_cannot_be_stored_is_undone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The decision for gateway relays (docs/architecture.md, Path 2): stored once the outcome is known; a
    database that refuses the write after the switch gets the error to the caller and the pump it started is
    stopped again, so an error still means nothing happened."""
    cfg = demo_config(tmp_path / "data", http_port=free_port(), mqtt_port=free_port())
    for zone in cfg["zones"]:
        zone["water_cycle"]["recirc"]["enabled"] = False
    async with run_gateway(settings_from_mapping(cfg)) as gw:
        s = gw.services
        zone_id = s.registry.zone_id("zone-a")
        assert zone_id is not None
        relay = s.hardware.relays["a-drain"]
        assert not relay.pump_on
        now = s.clock.monotonic()
        s.latest.update(zone_id, Metric.WATER_LEVEL, Reading(70.0, now, s.clock.time(), 1, None))
        s.latest.update(zone_id, Metric.FLOW_RATE, Reading(12.0, now, s.clock.time(), 1, None))
        caplog.set_level(logging.INFO, logger="gateway.safety.gate")
        await s.db.fetchone("PRAGMA query_only = 1")  # no write succeeds, as with a full disk
        try:
            with pytest.raises(sqlite3.OperationalError):
                await s.commands.submit("zone-a", "a-drain", "run_pump", {"duration_s": 600}, source="api")
            assert not relay.pump_on  # started (the interlock passed), then stopped when it could not be stored
            messages = [r.getMessage() for r in caplog.records]
            assert any(m.endswith("ON (command:run_pump:api)") for m in messages), caplog.text
            assert any(m.endswith("OFF (command_not_recorded)") for m in messages), caplog.text
        finally:
            await s.db.fetchone("PRAGMA query_only = 0")
        assert await s.db.fetchall("SELECT cmd_id FROM commands WHERE channel = 'a-drain'") == []
