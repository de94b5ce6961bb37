"""A whole water change driven against the simulated tank, 10 s per tick."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from gateway.safety.rules import RaiseAlert
from gateway.sim.tank import Fault, TankSim
from gateway.water.config import water_cycle_from_dict
from gateway.water.cycle import RecordEvent, SetPump, WaterEvent, WaterInputs, WaterPhase, WaterState, step

MSK = ZoneInfo("Europe/Moscow")
CFG = water_cycle_from_dict(
    {
        "water_change": {
            "enabled": True,
            "empty_level": 5,
            "target_level": 90,
            "drain_timeout_min": 15,
            "fill_timeout_min": 15,
            "stabilize_minutes": 10,
        }
    }
)
T0 = datetime(2026, 1, 12, 11, tzinfo=MSK).timestamp()


def drive(
    sim: TankSim, minutes: int
) -> tuple[WaterState, list[tuple[float, WaterPhase]], list[object], dict[str, bool]]:
    pumps = {"recirc": True, "drain": False, "fill": False}
    state = WaterState(solution_started_at=T0 - 3 * 86_400, ec_at_start=1.8, phase_started_at_wall=T0)
    phases: list[tuple[float, WaterPhase]] = []
    actions_seen: list[object] = []
    for i in range(minutes * 6):
        wall = T0 + i * 10
        r = sim.readings()
        inputs = WaterInputs(
            water_level=r["water_level"],
            level_age_s=1.0,
            ec=r["ec"],
            ec_age_s=1.0,
            operator_start=i == 0,
        )
        state, actions = step(state, inputs, CFG, wall, datetime.fromtimestamp(wall, MSK))
        for a in actions:
            if isinstance(a, SetPump):
                pumps[a.channel_role.value] = a.on
        actions_seen += actions
        if not phases or phases[-1][1] is not state.phase:
            phases.append((wall - T0, state.phase))
        sim.step(10.0, pumps)
    return state, phases, actions_seen, pumps


def test_full_change_replaces_the_solution() -> None:
    sim = TankSim(capacity_l=100.0, level_pct=80.0, ec=1.8, seed=5)
    state, phases, actions, pumps = drive(sim, minutes=40)
    # 80 L out at 10 L/min ≈ 7.5 min to 5 %, then 85 L in ≈ 8.5 min, then 10 min of stabilising.
    assert [p for _, p in phases] == [
        WaterPhase.WATER_CHANGE_DRAIN,
        WaterPhase.WATER_CHANGE_FILL,
        WaterPhase.WATER_CHANGE_STABILIZE,
        WaterPhase.NORMAL_RECIRC,
    ]
    fill_at, stab_at, done_at = (t for t, _ in phases[1:])
    assert 420 <= fill_at <= 480 and 900 <= stab_at <= 1000 and done_at == stab_at + 600
    assert pumps == {"recirc": True, "drain": False, "fill": False}
    completed = [a for a in actions if isinstance(a, RecordEvent) and a.type is WaterEvent.COMPLETED]
    assert len(completed) == 1
    assert state.solution_started_at == T0 + done_at
    assert state.ec_at_start == pytest.approx((5 * 1.8 + 85 * 0.3) / 90, abs=0.05)  # mostly tap water now


def test_jammed_drain_times_out_into_failed_with_recirc_back_on() -> None:
    sim = TankSim(capacity_l=100.0, level_pct=80.0, seed=5)
    sim.inject(Fault.JAMMED, "drain")
    state, phases, actions, pumps = drive(sim, minutes=30)
    assert [p for _, p in phases] == [WaterPhase.WATER_CHANGE_DRAIN, WaterPhase.FAILED]
    assert phases[1][0] == 15 * 60
    assert state.last_error == "drain_timeout"
    assert pumps == {"recirc": True, "drain": False, "fill": False}
    assert [a.code for a in actions if isinstance(a, RaiseAlert)] == ["biz_water_change_failed"]
