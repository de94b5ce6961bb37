"""Each bypass and starvation found against the old interlock, now impossible (issue: safety by construction).

The demo's wiring under a manual clock: simulated GPIO relays (gpiozero MockFactory) and INA209 chips, tank
physics, the real gate, safety loop, water machine and command service on a real SQLite file. Node commands
are captured where they would go to the broker.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gateway.commands import CommandRefused
from gateway.readings import Reading
from gateway.settings import NodeConfig
from gateway.sim.tank import Fault
from gateway.telemetry_metrics import Metric
from gateway.water.config import WaterMode
from tests.integration.safety.harness import Harness, make_harness


class Wire:
    """Where the gate's node commands go: (topic, payload) in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []

    async def __call__(self, topic: str, payload: bytes, qos: int, retain: bool) -> None:
        self.sent.append((topic, json.loads(payload)))

    def commands(self) -> list[tuple[str, str, dict[str, Any]]]:
        return [(t.split("/")[-2], b["cmd"], b["params"]) for t, b in self.sent if t.endswith("/command")]


async def _with_water_node(tmp_path: Path, **kw: Any) -> tuple[Harness, Wire]:
    wire = Wire()
    h = await make_harness(tmp_path, publish=wire, **kw)
    await h.commands._registry.register(  # the water node said hello
        {"hardware_id": "esp32-a-water", "node_type": "water", "fw_version": "1.0"}, "nd-a-water"
    )
    h.sensors_now()
    return h, wire


async def _lock_irrigation(h: Harness) -> None:
    rec = await h.commands.submit("zone-a", "pump_irrigation", "run_pump", {"duration_s": 30}, node_uid="nd-a-water")
    await h.safety.on_command_error({**rec, "node_uid": "nd-a-water"}, "overcurrent", {"current_ma": 2300})
    assert h.gate.locked_pumps() == {"node:nd-a-water/pump_irrigation": "biz_overcurrent"}


# ---- finding 1: every spelling of "start" is either outside the contract (422) or refused while locked ---------
@pytest.mark.parametrize(
    ("cmd", "params", "status", "reason"),
    [
        ("set_relay", {"state": "ON"}, 409, "locked:biz_overcurrent"),
        ("run_pump", {"duration_s": 600}, 409, "locked:biz_overcurrent"),
        ("dose", {"ml": 5}, 409, "locked:biz_overcurrent"),
        ("set_relay", {"on": True}, 422, "'on' was unexpected"),
        ("RUN_PUMP", {"duration_s": 5}, 422, "is not one of"),
        ("set_pump", {"state": "ON"}, 422, "is not one of"),
        ("pump_on", {}, 422, "is not one of"),
        ("run_pump", {"duration_s": 5, "force": True}, 422, "'force' was unexpected"),
    ],
)
async def test_a_locked_node_pump_gets_no_start_in_any_spelling(tmp_path, cmd, params, status, reason):
    h, wire = await _with_water_node(tmp_path)
    try:
        await _lock_irrigation(h)
        before = len(wire.commands())
        with pytest.raises(CommandRefused) as refused:
            await h.commands.submit("zone-a", "pump_irrigation", cmd, params, node_uid="nd-a-water", source="api")
        assert refused.value.http_status == status and reason in refused.value.reason
        assert wire.commands()[before:] == []  # nothing reached the node
        # A stop is never refused: it goes out even while locked.
        await h.commands.submit("zone-a", "pump_irrigation", "stop_pump", {}, node_uid="nd-a-water")
        assert wire.commands()[-1] == ("pump_irrigation", "stop_pump", {})
    finally:
        await h.close()


async def test_a_locked_gateway_relay_gets_no_start_from_any_source(tmp_path):
    h, _ = await _with_water_node(tmp_path)
    try:
        await h.run_for(0.5)
        assert (await h.gate.switch(h.ch("drain"), True, source="test")).allowed
        h.zone.tank.inject(Fault.JAMMED, "drain")
        await h.run_for(0.3)
        assert h.gate.lock_of(h.ch("drain")) == "biz_overcurrent"
        h.zone.tank.clear(Fault.JAMMED, "drain")
        for source in ("api", "upstream", "schedule"):
            with pytest.raises(CommandRefused, match="locked:biz_overcurrent"):
                await h.commands.submit("zone-a", "a-drain", "set_relay", {"state": "ON"}, source=source)
        assert not h.relay("drain").pump_on
    finally:
        await h.close()


# ---- finding 3: the NC pump is never held OFF past its limit (plus one tick) ------------------------------------
def _longest_off(samples: list[tuple[float, bool]]) -> float:
    longest, off_since = 0.0, None
    for t, on in samples:
        if not on and off_since is None:
            off_since = t
        if on and off_since is not None:
            longest, off_since = max(longest, t - off_since), None
    if off_since is not None:
        longest = max(longest, samples[-1][0] - off_since)
    return longest


async def _run_watching_recirc(h: Harness, seconds: float) -> list[tuple[float, bool]]:
    seen: list[tuple[float, bool]] = []
    for _ in range(int(seconds)):
        await h.run_for(1.0, dt=1.0, water=True)
        seen.append((h.clock.monotonic(), h.relay("recirc").pump_on))
    return seen


LIMIT_S = 600.0  # the demo's max_recirc_off_minutes = 10
TICK_S = 1.0


async def test_nc_pump_is_not_starved_by_a_stale_level_sensor(tmp_path):
    h = await make_harness(tmp_path, stale_after_s=30.0)
    try:
        await h.run_for(2.0, dt=1.0, water=True)
        h.feed_level = False  # the level goes stale and stays stale for 40 minutes
        seen = await _run_watching_recirc(h, 2400)
        longest = _longest_off(seen)
        print(f"stale level: longest NC OFF stretch {longest:.0f} s")
        assert any(not on for _, on in seen)  # the duty cycle did switch it off
        assert longest <= LIMIT_S + TICK_S
    finally:
        await h.close()


async def test_nc_pump_is_not_starved_by_another_pumps_critical_alert(tmp_path):
    h = await make_harness(tmp_path)
    try:
        await h.alerts.raise_alert("biz_overcurrent", zone_id=h.zone_id, scope="pump_irrigation",
                                   details={"channel": "pump_irrigation"})
        seen = await _run_watching_recirc(h, 2400)
        longest = _longest_off(seen)
        print(f"other pump's alert: longest NC OFF stretch {longest:.0f} s")
        assert any(not on for _, on in seen)
        assert longest <= LIMIT_S + TICK_S
    finally:
        await h.close()


async def test_a_failed_water_change_restores_circulation(tmp_path):
    h = await make_harness(tmp_path, water_change={"drain_timeout_min": 5})
    try:
        await h.run_for(2.0, dt=1.0, water=True)
        h.zone.tank.inject(Fault.JAMMED, "drain")  # the drain jams: overcurrent, locked, the change fails
        await h.water.start_change("zone-a", by="operator")
        seen = await _run_watching_recirc(h, 2400)
        assert h.water.zones["zone-a"].state.phase.value == "FAILED"
        longest = _longest_off(seen)
        print(f"drain jam → FAILED: longest NC OFF stretch {longest:.0f} s")
        assert h.relay("recirc").pump_on  # circulation restored after the failure
        # OFF during the drain attempt (its timeout, 5 min), never beyond the limit afterwards.
        assert longest <= max(LIMIT_S, 5 * 60.0) + TICK_S
    finally:
        await h.close()


async def test_only_a_lock_on_that_pump_keeps_it_off_and_then_the_zone_hears_it_has_no_circulation(tmp_path):
    h = await make_harness(tmp_path)
    try:
        await h.run_for(1.0)
        h.zone.tank.inject(Fault.JAMMED, "recirc")
        await h.run_for(0.3)
        assert not h.relay("recirc").pump_on and h.gate.lock_of(h.ch("recirc")) == "biz_overcurrent"
        await h.run_for(LIMIT_S + 5, dt=1.0, water=True)
        assert not h.relay("recirc").pump_on  # a jammed motor stays off ...
        assert "biz_no_circulation" in await h.active_codes()  # ... and the operator is told
    finally:
        await h.close()


# ---- finding 4: a timed run never leaves a running NC pump OFF ----------------------------------------------------
def _set_mode(h: Harness, mode: str) -> None:
    zw = h.water.zones["zone-a"]
    zw.cfg = replace(zw.cfg, mode=WaterMode(mode))


@pytest.mark.parametrize("mode", ["RECIRCULATING", "MANUAL"])
async def test_a_timed_run_on_the_running_nc_pump_leaves_it_running(tmp_path, mode):
    h = await make_harness(tmp_path)
    try:
        _set_mode(h, mode)
        await h.run_for(1.0)
        assert h.relay("recirc").pump_on
        rec = await h.commands.submit("zone-a", "a-recirc", "run_pump", {"duration_s": 5})
        assert rec["status"] == "DONE"
        await h.run_for(60.0, dt=1.0)
        assert h.relay("recirc").pump_on
    finally:
        await h.close()


async def test_an_operator_stop_of_the_nc_pump_in_manual_mode_ends_at_the_limit(tmp_path):
    h = await make_harness(tmp_path)
    try:
        _set_mode(h, "MANUAL")
        await h.run_for(1.0)
        await h.commands.submit("zone-a", "a-recirc", "stop_pump", {})
        assert not h.relay("recirc").pump_on
        seen = await _run_watching_recirc(h, 1200)
        assert _longest_off(seen) <= LIMIT_S + TICK_S and h.relay("recirc").pump_on
    finally:
        await h.close()


# ---- finding 5: locks belong to the physical pump ---------------------------------------------------------------
async def test_moving_a_locked_node_to_another_zone_does_not_unlock_its_pump(tmp_path):
    h, wire = await _with_water_node(tmp_path)
    try:
        await _lock_irrigation(h)
        registry = h.commands._registry
        zones = h.settings.zones
        moved = [NodeConfig(hardware_id="esp32-a-water", uid="nd-a-water", zone="zone-b", node_type="water")]
        await registry.apply_config(zones, moved)  # an upstream config moves the node
        zone_b = registry.zone_id("zone-b")
        assert zone_b is not None
        h.latest.update(zone_b, Metric.WATER_LEVEL, Reading(80.0, h.clock.monotonic(), h.clock.time(), 1, None))
        before = len(wire.commands())
        with pytest.raises(CommandRefused, match="locked:biz_overcurrent"):
            await h.commands.submit("zone-b", "pump_irrigation", "run_pump", {"duration_s": 5}, node_uid="nd-a-water")
        assert wire.commands()[before:] == []
    finally:
        await h.close()


async def test_locks_and_the_failure_counter_survive_a_restart(tmp_path):
    h, _ = await _with_water_node(tmp_path)
    await _lock_irrigation(h)
    await h.close()
    h2, _ = await _with_water_node(tmp_path)
    try:
        assert h2.gate.locked_pumps() == {"node:nd-a-water/pump_irrigation": "biz_overcurrent"}
        assert h2.gate.recent_failures("node:nd-a-water/pump_irrigation") == 1
        with pytest.raises(CommandRefused, match="locked"):
            await h2.commands.submit("zone-a", "pump_irrigation", "run_pump", {"duration_s": 5},
                                     node_uid="nd-a-water")
    finally:
        await h2.close()


# ---- finding 6: freshness counts from the measurement ----------------------------------------------------------
async def test_a_level_measured_two_hours_ago_is_unavailable_not_85_percent(tmp_path):
    h = await make_harness(tmp_path)
    try:
        now = h.clock.monotonic()
        old = Reading(85.0, now, h.clock.time() - 7200, 1, None, measured_mono=now - 7200)
        h.latest.update(h.zone_id, Metric.WATER_LEVEL, old)
        decision = await h.gate.can_start(h.zone_id, "a-fill")
        assert not decision.allowed and decision.reason == "level_unavailable"
        # A newer measurement replaces it; an older one never replaces a newer one.
        await h.run_for(0.5)  # the INA209s are read, the level is measured now
        h.latest.update(h.zone_id, Metric.WATER_LEVEL, old)
        assert (await h.gate.can_start(h.zone_id, "a-fill")).allowed
    finally:
        await h.close()


# ---- finding 9: no start while the watchdog is tripped -------------------------------------------------------
async def test_no_start_while_the_relay_watchdog_is_tripped(tmp_path):
    h = await make_harness(tmp_path)
    try:
        await h.run_for(0.5)  # INA209s read, level fresh, watchdog fed
        assert (await h.gate.can_start(h.zone_id, "a-fill")).allowed
        watchdog = h.safety.watchdog
        task = asyncio.create_task(watchdog.run())
        await h.clock.advance(5.0, step=0.1)  # nobody feeds: timeout is 2 s
        task.cancel()
        assert watchdog.tripped
        decision = await h.gate.switch(h.ch("fill"), True, source="test")
        assert not decision.allowed and decision.reason == "watchdog_tripped"
        assert not h.relay("fill").coil_energised
    finally:
        await h.close()


# ---- finding 7: node pumps are supervised like gateway relays -----------------------------------------------
NODE_IRRIGATION = {"irrigation": {"channel": "pump_irrigation", "node_uid": "nd-a-water", "flow_l_min": 4.0,
                                  "telemetry": ["current", "flow"]}}


def _channel_reading(h: Harness, metric: Metric, value: float) -> None:
    now = h.clock.monotonic()
    h.latest.update(h.zone_id, metric, Reading(value, now, h.clock.time(), 1, "pump_irrigation"))


async def test_a_node_pump_over_its_current_limit_is_stopped_locked_and_alerted(tmp_path):
    h, wire = await _with_water_node(tmp_path, actuators=NODE_IRRIGATION)
    try:
        await h.run_for(0.5)
        _channel_reading(h, Metric.PUMP_CURRENT, 0.8)
        _channel_reading(h, Metric.FLOW_RATE, 4.0)
        await h.commands.submit("zone-a", "pump_irrigation", "run_pump", {"duration_s": 60}, node_uid="nd-a-water")
        await h.run_for(1.0)
        assert h.ch("irrigation").relay_on
        _channel_reading(h, Metric.PUMP_CURRENT, 2.6)  # the node reports its pump's current: jammed
        await h.run_for(0.2)
        assert wire.commands()[-1] == ("pump_irrigation", "set_relay", {"state": "OFF"})
        assert h.gate.lock_of(h.ch("irrigation")) == "biz_overcurrent"
        assert "biz_overcurrent" in await h.active_codes()
    finally:
        await h.close()


async def test_a_node_pump_without_flow_is_stopped_for_no_flow(tmp_path):
    h, wire = await _with_water_node(tmp_path, actuators=NODE_IRRIGATION)
    try:
        await h.run_for(0.5)
        _channel_reading(h, Metric.PUMP_CURRENT, 0.8)
        _channel_reading(h, Metric.FLOW_RATE, 0.0)
        await h.commands.submit("zone-a", "pump_irrigation", "run_pump", {"duration_s": 60}, node_uid="nd-a-water")
        for _ in range(70):  # grace 5 s; the node keeps reporting 0 L/min
            _channel_reading(h, Metric.PUMP_CURRENT, 0.8)
            _channel_reading(h, Metric.FLOW_RATE, 0.0)
            await h.run_for(0.1)
        assert wire.commands()[-1] == ("pump_irrigation", "set_relay", {"state": "OFF"})
        assert h.gate.lock_of(h.ch("irrigation")) == "biz_no_flow"
    finally:
        await h.close()


async def test_a_node_pump_run_is_logged_as_water_usage_with_its_command(tmp_path):
    h, _ = await _with_water_node(tmp_path)
    try:
        await h.run_for(0.5)
        rec = await h.commands.submit("zone-a", "pump_irrigation", "run_pump", {"duration_s": 60},
                                      node_uid="nd-a-water")
        await h.run_for(30.0, dt=1.0)
        await h.commands.submit("zone-a", "pump_irrigation", "stop_pump", {}, node_uid="nd-a-water")
        await h.run_for(1.0, dt=1.0)
        rows = await h.db.fetchall("SELECT pump_channel, volume_l, details FROM water_usage_logs")
        details = json.loads(rows[0]["details"])
        assert rows[0]["pump_channel"] == "pump_irrigation" and rows[0]["volume_l"] == pytest.approx(2.0, abs=0.1)
        assert details["cmd_id"] == rec["cmd_id"] and details["node_uid"] == "nd-a-water"
    finally:
        await h.close()


async def test_an_nc_recirculation_pump_on_a_node_gets_the_duty_cycle_and_the_max_off_backstop(tmp_path):
    actuators = {"recirc": {"channel": "pump_recirc", "node_uid": "nd-a-water", "fail_safe_mode": "NC"}}
    h, wire = await _with_water_node(tmp_path, actuators=actuators)
    try:
        ch = h.ch("recirc")
        assert ch.relay is None and ch.fail_safe.value == "NC" and ch.relay_on  # runs unless told otherwise
        states = []
        for _ in range(2400):
            await h.run_for(1.0, dt=1.0, water=True)
            states.append((h.clock.monotonic(), ch.relay_on))
        sent = [p for c, cmd, p in wire.commands() if c == "pump_recirc"]
        assert {"state": "OFF"} in sent and {"state": "ON"} in sent  # the duty cycle drives the node
        assert _longest_off(states) <= LIMIT_S + TICK_S
    finally:
        await h.close()


async def test_a_timed_run_of_a_no_relay_ends_in_the_safety_loop(tmp_path):
    h = await make_harness(tmp_path)
    try:
        await h.run_for(0.5)
        rec = await h.commands.submit("zone-a", "a-fill", "run_pump", {"duration_s": 5})
        assert rec["status"] == "DONE" and h.relay("fill").pump_on
        await h.run_for(4.8)
        assert h.relay("fill").pump_on
        await h.run_for(0.3)
        assert not h.relay("fill").pump_on
    finally:
        await h.close()


async def test_a_water_change_drives_node_pumps_through_the_gate(tmp_path):
    actuators = {"drain": {"channel": "pump_drain", "node_uid": "nd-a-water"},
                 "fill": {"channel": "pump_fill", "node_uid": "nd-a-water"}}
    h, wire = await _with_water_node(tmp_path, actuators=actuators)
    try:
        await h.run_for(1.0, dt=1.0, water=True)
        await h.water.start_change("zone-a", by="operator")
        await h.run_for(3.0, dt=1.0, water=True)
        assert h.water.zones["zone-a"].state.phase.value == "WATER_CHANGE_DRAIN"
        assert ("pump_drain", "set_relay", {"state": "ON"}) in wire.commands()
        assert not h.relay("recirc").pump_on  # the NC recirculation is held OFF on the water change's lease
    finally:
        await h.close()


async def test_while_the_watchdog_holds_the_coils_the_nc_pump_cannot_be_switched_off(tmp_path):
    h = await make_harness(tmp_path)
    try:
        await h.run_for(0.5)
        task = asyncio.create_task(h.safety.watchdog.run())
        await h.clock.advance(5.0, step=0.1)  # the loop stalls: the watchdog releases and holds every coil
        task.cancel()
        assert h.safety.watchdog.tripped
        decision = await h.gate.switch(h.ch("recirc"), False, source="recirc_duty")
        assert not decision.allowed and decision.reason == "relay_held_by_watchdog"
        assert h.relay("recirc").pump_on and not h.relay("recirc").coil_energised
    finally:
        await h.close()
