"""Tank physics: pumps move water, chemistry drifts and mixes, faults look like real faults."""

from __future__ import annotations

import pytest

from gateway.sim.tank import Fault, TankSim

CANONICAL = {"ph", "ec", "temp_air", "temp_water", "humidity", "co2", "lux"} | {
    "water_level",
    "flow_rate",
    "pump_current",
}
ALL_OFF = {"recirc": False, "drain": False, "fill": False}


def run(sim: TankSim, seconds: int, dt: float = 1.0, **pumps: bool) -> None:
    cmd = {**ALL_OFF, **pumps}
    for _ in range(int(seconds / dt)):
        sim.step(dt, cmd)


def test_readings_use_canonical_metric_names() -> None:
    assert set(TankSim().readings()) == CANONICAL


def test_same_seed_gives_the_same_history_and_another_seed_does_not() -> None:
    def history(seed: int) -> list[dict[str, float | None]]:
        sim = TankSim(seed=seed)
        out = []
        for i in range(50):
            sim.step(10.0, {"recirc": i % 7 < 4, "drain": i == 20}, {"nutrient": 1.0} if i == 10 else None)
            out.append(sim.readings())
        return out

    assert history(42) == history(42)
    assert history(42) != history(43)


def test_readings_are_stable_between_steps() -> None:
    sim = TankSim(seed=1)
    assert sim.readings() == sim.readings()


def test_noise_is_small_and_can_be_switched_off() -> None:
    sim = TankSim(level_pct=50.0, ph=6.0, seed=3)
    r = sim.readings()
    assert r["ph"] == pytest.approx(6.0, abs=0.05) and r["water_level"] == pytest.approx(50.0, abs=1.0)
    quiet = TankSim(level_pct=50.0, ph=6.0, noise=False).readings()
    assert (quiet["ph"], quiet["water_level"], quiet["pump_current"]) == (6.0, 50.0, 0.02)


def test_recirc_pump_draws_current_and_flows_without_moving_the_level() -> None:
    sim = TankSim(level_pct=70.0, noise=False, evaporation_l_h=0.0)
    assert (sim.readings()["pump_current"], sim.readings()["flow_rate"]) == (0.02, 0.0)
    run(sim, 600, recirc=True)
    r = sim.readings()
    assert (r["pump_current"], r["flow_rate"], r["water_level"]) == (0.8, 12.0, 70.0)


def test_drain_and_fill_move_the_level_at_their_rates() -> None:
    sim = TankSim(capacity_l=100.0, level_pct=80.0, noise=False, evaporation_l_h=0.0)
    run(sim, 60, drain=True)  # 10 L/min out of 100 L
    assert sim.level_pct == pytest.approx(70.0)
    run(sim, 120, fill=True)
    assert sim.level_pct == pytest.approx(90.0)
    run(sim, 600, fill=True)
    assert sim.level_pct == pytest.approx(100.0)  # never overfills
    run(sim, 1200, drain=True)
    assert sim.level_pct == pytest.approx(1.0)  # below ~1 % the drain pump sucks air
    r = sim.readings("drain")
    assert (r["flow_rate"], r["pump_current"]) == (0.0, 0.3)


def test_fresh_water_dilutes_the_solution() -> None:
    sim = TankSim(level_pct=10.0, ec=2.0, ph=5.8, noise=False, ec_drift_per_h=0.0, ph_drift_per_h=0.0)
    run(sim, 360, fill=True)  # +60 L of tap water (EC 0.3, pH 7.2) to 10 L
    assert sim.ec == pytest.approx((2.0 * 10 + 0.3 * 60) / 70, rel=0.01)
    assert 6.9 < sim.ph < 7.2


def test_ph_creeps_up_and_ec_down_over_hours() -> None:
    sim = TankSim(ph=6.0, ec=1.8, noise=False)
    run(sim, 10 * 3600, dt=60.0, recirc=True)
    assert sim.ph == pytest.approx(6.3) and sim.ec == pytest.approx(1.7)


def test_doses_act_through_a_mixing_lag() -> None:
    sim = TankSim(capacity_l=100.0, level_pct=100.0, ph=6.5, ec=1.0, noise=False, ph_drift_per_h=0, ec_drift_per_h=0)
    sim.step(1.0, {"recirc": True}, {"ph_down": 5.0, "nutrient": 10.0})  # aims at pH 6.0, EC 1.2
    assert sim.ph > 6.49 and sim.ec < 1.01  # barely moved after a second
    run(sim, 120, recirc=True)
    assert 6.1 < sim.ph < 6.4  # about one time constant
    run(sim, 1200, recirc=True)
    assert sim.ph == pytest.approx(6.0, abs=0.01) and sim.ec == pytest.approx(1.2, abs=0.01)


def test_mixing_is_slower_without_recirculation() -> None:
    still = TankSim(level_pct=100.0, ph=6.5, noise=False, ph_drift_per_h=0)
    still.step(1.0, ALL_OFF, {"ph_down": 5.0})
    run(still, 120)
    assert still.ph > 6.35


def test_jammed_pump_draws_high_current_and_no_flow() -> None:
    sim = TankSim(noise=False)
    sim.inject(Fault.JAMMED, "recirc")
    run(sim, 5, recirc=True)
    assert (sim.readings()["pump_current"], sim.readings()["flow_rate"]) == (2.5, 0.0)
    run(sim, 5)
    assert sim.readings()["pump_current"] == 0.02  # off is off, jammed or not
    sim.clear(Fault.JAMMED, "recirc")
    run(sim, 5, recirc=True)
    assert sim.readings()["pump_current"] == 0.8


def test_dry_tank_empties_and_pumps_lose_load_and_flow() -> None:
    sim = TankSim(level_pct=60.0, noise=False)
    sim.inject(Fault.DRY)
    run(sim, 5, recirc=True, drain=True)
    r = sim.readings()
    assert (r["water_level"], r["pump_current"], r["flow_rate"]) == (0.0, 0.3, 0.0)
    assert sim.readings("drain")["flow_rate"] == 0.0
    run(sim, 5, fill=True)  # the leak keeps it empty while the fault lasts
    assert sim.level_pct == 0.0
    assert sim.readings("fill")["flow_rate"] == 10.0  # the fill pump draws from the mains


def test_stuck_relay_keeps_the_pump_running_whatever_the_command() -> None:
    sim = TankSim(noise=False, evaporation_l_h=0.0, level_pct=80.0)
    sim.inject(Fault.STUCK_RELAY, "drain")
    run(sim, 60)
    assert sim.running("drain") and sim.level_pct == pytest.approx(70.0)
    assert sim.readings("drain")["pump_current"] == 0.8


def test_broken_flow_sensor_reads_none_and_stuck_one_reads_zero() -> None:
    sim = TankSim(noise=False)
    sim.inject(Fault.FLOW_SENSOR_BROKEN, "recirc")
    run(sim, 5, recirc=True)
    assert sim.readings()["flow_rate"] is None and sim.true_flow("recirc") == 12.0
    sim.clear(Fault.FLOW_SENSOR_BROKEN, "recirc")
    sim.inject(Fault.FLOW_SENSOR_STUCK_ZERO, "recirc")
    run(sim, 5, recirc=True)
    assert sim.readings()["flow_rate"] == 0.0 and sim.readings()["pump_current"] == 0.8


def test_lux_follows_the_day() -> None:
    sim = TankSim(time_of_day_s=0.0, noise=False)
    assert sim.readings()["lux"] == 0.0
    sim.step(13 * 3600, ALL_OFF)
    assert sim.readings()["lux"] == pytest.approx(30_000.0)


@pytest.mark.parametrize(
    ("pumps", "doses", "error"),
    [
        ({"mixer": True}, None, KeyError),
        (ALL_OFF, {"salt": 1.0}, KeyError),
        (ALL_OFF, {"ph_down": -1.0}, ValueError),
    ],
)
def test_unknown_pumps_and_doses_are_rejected(
    pumps: dict[str, bool], doses: dict[str, float] | None, error: type[Exception]
) -> None:
    with pytest.raises(error):
        TankSim().step(1.0, pumps, doses)
