"""Fault matrix: the simulated tank, the safety rules and the interlock together, second by second.

Each scenario injects one fault at an explicit time and asserts exactly when the pump is stopped,
which alerts are raised or resolved, what is locked and why a restart is refused.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest

from gateway.safety.interlock import InterlockSnapshot, can_run_pump
from gateway.safety.rules import (
    ChannelInputs,
    ChannelLimits,
    ChannelSafetyState,
    FailSafe,
    LockChannel,
    RaiseAlert,
    ResolveAlert,
    SafetyAction,
    StopPump,
    blind_sensors,
    evaluate,
    operator_reset,
)
from gateway.sim.tank import Fault, TankSim

DRAIN = ChannelLimits(channel="pump_drain", min_water_level=2.0)
RECIRC = ChannelLimits(channel="pump_recirc", fail_safe=FailSafe.NC, min_water_level=10.0)


@dataclass
class Rig:
    """A tiny safety loop: interlock before a start, evaluate after every second of physics."""

    sim: TankSim
    limits: ChannelLimits
    role: str
    state: ChannelSafetyState = field(default_factory=ChannelSafetyState)
    relay_on: bool = False
    locked: str | None = None
    active: dict[str, RaiseAlert] = field(default_factory=dict)
    log: list[tuple[int, str]] = field(default_factory=list)
    _refusal: str | None = None

    def inputs(self, desired_on: bool) -> ChannelInputs:
        r = self.sim.readings(self.role)
        flow = r["flow_rate"]
        return ChannelInputs(
            desired_on=desired_on,
            relay_on=self.relay_on,
            current_a=r["pump_current"],
            current_age_s=0.0,
            flow_l_min=flow,
            flow_age_s=None if flow is None else 0.0,
            water_level=r["water_level"],
            level_age_s=0.0,
        )

    def try_start(self, t: int) -> None:
        pre = self.inputs(True)
        snap = InterlockSnapshot(
            channel=self.limits.channel,
            active_alert_codes=frozenset(self.active),
            own_alert_codes=frozenset(self.active),  # one pump per rig: every alert is about it
            locked_code=self.locked,
            water_level=pre.water_level,
            level_age_s=pre.level_age_s,
            stale_after_s=self.limits.stale_after_s,
            min_water_level=self.limits.min_water_level,
            requires_level=self.limits.level_sensor,
            unavailable_sensors=blind_sensors(pre, self.limits),
            fail_safe=self.limits.fail_safe,
        )
        decision = can_run_pump(snap)
        if decision.allowed:
            self.relay_on, self._refusal = True, None
            self.log.append((t, "start"))
            return
        if decision.raise_alert is not None:
            self.apply(t, [decision.raise_alert])
        if decision.reason != self._refusal:
            self._refusal = decision.reason
            self.log.append((t, f"refused:{decision.reason}"))

    def apply(self, t: int, actions: list[SafetyAction]) -> None:
        for a in actions:
            if isinstance(a, StopPump):
                self.relay_on = False
                self.log.append((t, f"stop:{a.reason_code}"))
            elif isinstance(a, RaiseAlert):
                self.active[a.code] = a
                self.log.append((t, f"alert:{a.code}"))
            elif isinstance(a, ResolveAlert):
                self.active.pop(a.code, None)
                self.log.append((t, f"resolve:{a.code}"))
            elif isinstance(a, LockChannel):
                self.locked = a.code
                self.log.append((t, f"lock:{a.code}"))

    def tick(self, t: int, desired_on: bool) -> None:
        if desired_on and not self.relay_on:
            self.try_start(t)
        if not desired_on:
            self.relay_on = False
        self.sim.step(1.0, {self.role: self.relay_on})
        self.state, actions = evaluate(self.state, self.inputs(desired_on), self.limits, float(t))
        self.apply(t, actions)

    def operator_reset(self) -> None:
        self.locked = None
        self.active = {
            k: v for k, v in self.active.items() if not k.startswith("biz_") or k == "biz_sensor_unavailable"
        }
        self.state = operator_reset(self.state)


@dataclass(frozen=True)
class Scenario:
    limits: ChannelLimits
    role: str
    faults: dict[int, tuple[str, Fault]]  # t -> ("inject"|"clear", fault)
    expected: list[tuple[int, str]]
    seconds: int = 300
    desired: Callable[[int], bool] = lambda t: True


SCENARIOS = {
    "healthy drain runs undisturbed": Scenario(DRAIN, "drain", {}, [(0, "start")]),
    "healthy NC recirc runs undisturbed": Scenario(RECIRC, "recirc", {}, [(0, "start")], seconds=1800),
    "jammed drain: stop, alert and lock in one tick": Scenario(
        DRAIN,
        "drain",
        {60: ("inject", Fault.JAMMED)},
        [
            (0, "start"),
            (60, "stop:biz_overcurrent"),
            (60, "alert:biz_overcurrent"),
            (60, "lock:biz_overcurrent"),
            (61, "refused:locked:biz_overcurrent"),
        ],
    ),
    "jammed NC recirc is stopped too": Scenario(
        RECIRC,
        "recirc",
        {60: ("inject", Fault.JAMMED)},
        [
            (0, "start"),
            (60, "stop:biz_overcurrent"),
            (60, "alert:biz_overcurrent"),
            (60, "lock:biz_overcurrent"),
            (61, "refused:locked:biz_overcurrent"),
        ],
    ),
    "dry tank seen by the level sensor: dry-run stop": Scenario(
        RECIRC,
        "recirc",
        {60: ("inject", Fault.DRY)},
        [
            (0, "start"),
            (60, "stop:biz_dry_run"),
            (60, "alert:biz_dry_run"),
            (61, "refused:alert:biz_dry_run"),
        ],
    ),
    "dry tank without level sensor: no-flow after the grace": Scenario(
        replace(RECIRC, level_sensor=False, min_water_level=None),
        "recirc",
        {60: ("inject", Fault.DRY)},
        [
            (0, "start"),
            (90, "stop:biz_no_flow"),  # flow last good at 59, grace 30 s
            (90, "alert:biz_no_flow"),
            (90, "lock:biz_no_flow"),
            (91, "refused:locked:biz_no_flow"),
        ],
    ),
    "stuck relay after switch-off: one critical alert, no chatter": Scenario(
        DRAIN,
        "drain",
        {60: ("inject", Fault.STUCK_RELAY)},
        [(0, "start"), (65, "alert:biz_pump_stuck_on"), (65, "lock:biz_pump_stuck_on")],
        seconds=400,
        desired=lambda t: t < 60,
    ),
    "broken flow sensor on a NO drain: warn, stop, refuse, recover": Scenario(
        DRAIN,
        "drain",
        {60: ("inject", Fault.FLOW_SENSOR_BROKEN), 120: ("clear", Fault.FLOW_SENSOR_BROKEN)},
        [
            (0, "start"),
            (70, "alert:biz_sensor_unavailable"),
            (70, "stop:biz_sensor_unavailable"),
            (71, "refused:sensor_unavailable:flow"),
            (120, "start"),
            (120, "resolve:biz_sensor_unavailable"),
        ],
    ),
    "broken flow sensor on the NC recirc: warn, keep running": Scenario(
        RECIRC,
        "recirc",
        {60: ("inject", Fault.FLOW_SENSOR_BROKEN)},
        [(0, "start"), (70, "alert:biz_sensor_unavailable")],
        seconds=1800,
    ),
    "broken flow sensor on a drain with level fallback: warn, keep draining": Scenario(
        replace(DRAIN, level_change_min=1.0),
        "drain",
        {60: ("inject", Fault.FLOW_SENSOR_BROKEN)},
        [(0, "start"), (70, "alert:biz_sensor_unavailable")],
    ),
    "flow sensor stuck at zero: no-flow after the grace": Scenario(
        RECIRC,
        "recirc",
        {60: ("inject", Fault.FLOW_SENSOR_STUCK_ZERO)},
        [
            (0, "start"),
            (90, "stop:biz_no_flow"),
            (90, "alert:biz_no_flow"),
            (90, "lock:biz_no_flow"),
            (91, "refused:locked:biz_no_flow"),
        ],
    ),
}


def play(sc: Scenario, seed: int = 7) -> Rig:
    rig = Rig(TankSim(level_pct=80.0, seed=seed), sc.limits, sc.role)
    for t in range(sc.seconds):
        if t in sc.faults:
            what, fault = sc.faults[t]
            (rig.sim.inject if what == "inject" else rig.sim.clear)(fault, sc.role)
        rig.tick(t, sc.desired(t))
    return rig


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_fault_matrix(name: str) -> None:
    sc = SCENARIOS[name]
    assert play(sc).log == sc.expected


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_matrix_does_not_depend_on_the_noise_draw(seed: int) -> None:
    for sc in SCENARIOS.values():
        assert play(sc, seed).log == sc.expected


def test_operator_reset_after_a_jam_lets_the_pump_run_again() -> None:
    sc = SCENARIOS["jammed drain: stop, alert and lock in one tick"]
    rig = play(sc)
    rig.sim.clear(Fault.JAMMED, "drain")
    rig.operator_reset()
    for t in range(300, 400):
        rig.tick(t, True)
    assert rig.log[len(sc.expected) :] == [(300, "start")]
    assert rig.relay_on and rig.locked is None


def test_reset_while_still_jammed_trips_again_at_once() -> None:
    rig = play(SCENARIOS["jammed drain: stop, alert and lock in one tick"])
    rig.operator_reset()
    n = len(rig.log)
    rig.tick(300, True)
    assert rig.log[n:] == [
        (300, "start"),
        (300, "stop:biz_overcurrent"),
        (300, "alert:biz_overcurrent"),
        (300, "lock:biz_overcurrent"),
    ]
