"""Scenario matrix for the safety loop on the demo wiring, under a manual clock.

For each fault: relay states (asserted on the simulated GPIO coil), alerts, events and lock state
over time; then the operator reset; then that the lock survives a restart.
"""

from __future__ import annotations

from gateway.commands import CommandRefused
from gateway.sim.tank import Fault
from tests.integration.safety.harness import make_harness


async def test_overcurrent_stops_nc_pump_in_the_same_tick_and_locks(tmp_path):
    h = await make_harness(tmp_path)
    try:
        recirc = h.relay("recirc")
        assert recirc.pump_on and not recirc.coil_energised  # NC: runs de-energised
        await h.run_for(1.0)
        assert await h.active_codes() == []
        h.zone.tank.inject(Fault.JAMMED, "recirc")
        h.zone.step(h.hardware, 0.1)  # the INA209 now sees ~2.5 A
        await h.safety.tick()
        assert not recirc.pump_on and recirc.coil_energised  # held OFF by energising the NC coil
        assert await h.active_codes() == ["biz_overcurrent"]
        ch = h.ch("recirc")
        assert h.gate.lock_of(ch) == "biz_overcurrent"
        assert "SAFETY_STOP" in await h.events() and "SAFETY_LOCK" in await h.events()
        decision = await h.gate.switch(h.ch("recirc"), True, source="test")
        assert not decision.allowed and decision.reason == "locked:biz_overcurrent"
        assert not recirc.pump_on
        # the operator fixes the pump and resets
        h.zone.tank.clear(Fault.JAMMED, "recirc")
        assert await h.safety.reset("zone-a", by="operator:anna") == ["biz_overcurrent"]
        assert await h.active_codes() == []
        assert (await h.alerts.events())[0]["details"]["by"] == "operator:anna"
        assert (await h.gate.switch(h.ch("recirc"), True, source="test")).allowed
        await h.run_for(1.0)
        assert recirc.pump_on and await h.active_codes() == []
    finally:
        await h.close()


async def test_lock_survives_restart(tmp_path):
    h = await make_harness(tmp_path)
    h.zone.tank.inject(Fault.JAMMED, "recirc")
    await h.run_for(0.3)
    assert h.gate.lock_of(h.ch("recirc")) == "biz_overcurrent"
    await h.close()
    h2 = await make_harness(tmp_path)
    try:
        ch = h2.ch("recirc")
        assert h2.gate.lock_of(ch) == "biz_overcurrent"
        assert not h2.relay("recirc").pump_on  # restored lock holds the NC pump off
        assert not (await h2.gate.can_start(h2.zone_id, "a-recirc")).allowed
        await h2.safety.reset("zone-a", by="operator")
        h2.sensors_now()  # a fresh level reading: the interlock never starts a pump blind
        assert (await h2.gate.can_start(h2.zone_id, "a-recirc")).allowed
    finally:
        await h2.close()


async def test_dry_tank_stops_running_pump_and_blocks_starts(tmp_path):
    h = await make_harness(tmp_path)
    try:
        await h.run_for(0.5)
        h.zone.tank.inject(Fault.DRY, "recirc")
        await h.run_for(0.5)
        assert not h.relay("recirc").pump_on
        assert "biz_dry_run" in await h.active_codes()
        decision = await h.gate.can_start(h.zone_id, "a-drain")
        assert not decision.allowed and decision.reason.startswith("alert:")
    finally:
        await h.close()


async def test_flow_stuck_at_zero_trips_no_flow_after_grace(tmp_path):
    h = await make_harness(tmp_path)
    try:
        await h.run_for(1.0)
        h.zone.tank.inject(Fault.FLOW_SENSOR_STUCK_ZERO, "recirc")
        await h.run_for(4.0)
        assert h.relay("recirc").pump_on  # still inside the 5 s grace
        assert await h.active_codes() == []
        await h.run_for(2.0)
        assert not h.relay("recirc").pump_on
        assert await h.active_codes() == ["biz_no_flow"]
        assert h.gate.lock_of(h.ch("recirc")) == "biz_no_flow"
    finally:
        await h.close()


async def test_broken_flow_sensor_is_unavailable_not_zero_and_nc_pump_keeps_running(tmp_path):
    h = await make_harness(tmp_path, stale_after_s=2.0)
    try:
        await h.run_for(1.0)
        h.feed_flow = False  # the sensor stops reporting: the last value goes stale
        await h.run_for(15.0)
        assert h.relay("recirc").pump_on  # NC recirc stays in its fail-safe, running
        assert await h.active_codes() == ["biz_sensor_unavailable"]
        h.feed_flow = True
        await h.run_for(0.5)
        assert await h.active_codes() == []  # self-clearing when the sensor is back
    finally:
        await h.close()


async def test_stuck_relay_raises_pump_stuck_on(tmp_path):
    h = await make_harness(tmp_path)
    try:
        await h.run_for(0.5)
        h.zone.tank.inject(Fault.STUCK_RELAY, "recirc")
        await h.gate.switch(h.ch("recirc"), False, source="test")
        assert h.relay("recirc").coil_energised  # we command OFF ...
        await h.run_for(8.0)  # ... but current and flow stay up past the settle time
        assert await h.active_codes() == ["biz_pump_stuck_on"]
        assert h.gate.lock_of(h.ch("recirc")) == "biz_pump_stuck_on"
    finally:
        await h.close()


async def test_drain_without_level_change_is_no_flow(tmp_path):
    h = await make_harness(tmp_path)
    try:
        await h.run_for(0.5)
        assert (await h.gate.switch(h.ch("drain"), True, source="test")).allowed
        h.zone.tank.inject(Fault.JAMMED, "drain")  # jammed drain: no flow ... and overcurrent first
        await h.run_for(0.3)
        assert not h.relay("drain").pump_on
        assert await h.active_codes() == ["biz_overcurrent"]
    finally:
        await h.close()


async def test_every_start_path_is_refused_while_locked(tmp_path):
    h = await make_harness(tmp_path)
    try:
        await h.run_for(0.5)
        h.zone.tank.inject(Fault.JAMMED, "recirc")
        await h.run_for(0.3)
        # local API/upstream/schedules all go through CommandService.submit:
        for source in ("api", "upstream", "schedule", "automation"):
            try:
                await h.commands.submit("zone-a", "a-drain", "run_pump", {"duration_s": 5}, source=source)
            except CommandRefused as exc:
                assert exc.reason == "alert:biz_overcurrent"
            else:
                raise AssertionError(f"{source} command started a pump while locked")
        assert not h.relay("drain").pump_on
        # the water change cannot start either: it fails and asks for the operator
        await h.water.start_change("zone-a", by="operator")
        await h.run_for(2.0, water=True)
        assert h.water.zones["zone-a"].state.phase.value in ("FAILED", "NORMAL_RECIRC")
        assert not h.relay("drain").pump_on
    finally:
        await h.close()


async def test_watchdog_drops_coils_when_the_loop_stalls(tmp_path):
    h = await make_harness(tmp_path)
    try:
        await h.run_for(0.5)  # the INA209s have been read: the fill pump's protections can see
        await h.gate.switch(h.ch("recirc"), False, source="test")  # NC coil energised
        assert (await h.gate.switch(h.ch("fill"), True, source="test")).allowed
        assert h.relay("recirc").coil_energised and h.relay("fill").coil_energised
        import asyncio

        task = asyncio.create_task(h.safety.watchdog.run())
        await h.clock.advance(1.0, step=0.1)  # loop stalled: nobody feeds
        assert h.relay("fill").coil_energised  # not yet: timeout is 2 s
        await h.clock.advance(1.5, step=0.1)
        assert not h.relay("recirc").coil_energised and h.relay("recirc").pump_on  # NC pump runs
        assert not h.relay("fill").coil_energised and not h.relay("fill").pump_on  # NO pump stops
        assert h.safety.watchdog.tripped
        task.cancel()
    finally:
        await h.close()
