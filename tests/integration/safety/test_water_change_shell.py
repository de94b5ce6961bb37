"""The water-change machine driving real (simulated) relays through the safety service."""

from __future__ import annotations

from gateway.water.cycle import WaterPhase
from tests.integration.safety.harness import make_harness


async def test_operator_water_change_runs_drain_fill_stabilize_and_completes(tmp_path):
    h = await make_harness(tmp_path, water_change={"stabilize_minutes": 1}, no_flow_grace_s=20.0)
    try:
        zone = h.water.zones["zone-a"]
        await h.run_for(2.0, dt=0.5, water=True)
        assert zone.state.phase is WaterPhase.NORMAL_RECIRC
        await h.water.start_change("zone-a", by="operator:ivan")
        await h.run_for(2.0, dt=0.5, water=True)
        assert zone.state.phase is WaterPhase.WATER_CHANGE_DRAIN
        assert h.relay("drain").pump_on and not h.relay("recirc").pump_on
        phases = set()
        for _ in range(300):
            await h.run_for(10.0, dt=0.5, water=True)
            phases.add(zone.state.phase)
            if zone.state.phase is WaterPhase.NORMAL_RECIRC:
                break
        assert {WaterPhase.WATER_CHANGE_FILL, WaterPhase.WATER_CHANGE_STABILIZE} <= phases
        assert zone.state.phase is WaterPhase.NORMAL_RECIRC
        assert not h.relay("drain").pump_on and not h.relay("fill").pump_on
        assert zone.recirc.on is not None  # recirculation is back under its duty cycle
        events = await h.events()
        assert events.count("WATER_CHANGE_COMPLETED") == 1 and "WATER_CHANGE_STARTED" in events
        started = next(e for e in await h.alerts.events() if e["type"] == "WATER_CHANGE_STARTED")
        assert started["details"]["by"] == "operator:ivan"
        assert zone.state.solution_started_at is not None
        assert h.zone.tank.level_pct > 70
        usage = await h.db.fetchall("SELECT pump_channel, volume_l FROM water_usage_logs ORDER BY id")
        assert {r["pump_channel"] for r in usage} >= {"a-drain", "a-fill"}
        assert await h.active_codes() == []
    finally:
        await h.close()


async def test_water_change_state_survives_restart_without_blind_drain(tmp_path):
    h = await make_harness(tmp_path)
    await h.run_for(1.0, dt=0.5, water=True)
    await h.water.start_change("zone-a", by="operator")
    await h.run_for(3.0, dt=0.5, water=True)
    assert h.water.zones["zone-a"].state.phase is WaterPhase.WATER_CHANGE_DRAIN
    await h.close()
    h2 = await make_harness(tmp_path)
    try:
        zone = h2.water.zones["zone-a"]
        assert zone.state.phase is WaterPhase.FAILED  # interrupted drain needs the operator
        assert not h2.relay("drain").pump_on
        assert "biz_water_change_failed" in await h2.active_codes()
        await h2.water.ack_failed("zone-a", by="operator")
        await h2.run_for(2.0, dt=0.5, water=True)
        assert zone.state.phase is WaterPhase.NORMAL_RECIRC
    finally:
        await h2.close()
