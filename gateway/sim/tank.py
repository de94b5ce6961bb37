"""Simulated tank physics for one zone: pure and deterministic for a given seed (no clock, no I/O).

``step(dt_s, pumps, doses)`` advances the model; ``readings()`` returns what the sensors would
report, under the canonical metric names (water_level %, flow_rate L/min, pump_current A, EC mS/cm).
Pump roles are ``recirc`` (closed loop, does not move the level), ``drain`` and ``fill``. pH creeps up
and EC down over time; fresh fill water dilutes towards tap pH/EC; doses (``ph_down``, ``ph_up`` in
mL, ``nutrient`` in mL) act through a first-order mixing lag that is faster while recirculating.
Faults can be injected per pump role: ``JAMMED`` (2.5 A, no flow), ``DRY`` (tank empties, pumps
that draw from it lose load and flow), ``STUCK_RELAY`` (keeps running whatever the command),
``FLOW_SENSOR_BROKEN`` (flow reading None) and ``FLOW_SENSOR_STUCK_ZERO`` (flow reading 0).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

ROLES = ("recirc", "drain", "fill")
DRY_LEVEL_PCT = 1.0  # below this a pump drawing from the tank sucks air


class Fault(StrEnum):
    """Injectable faults."""

    JAMMED = "jammed"
    DRY = "dry"
    STUCK_RELAY = "stuck_relay"
    FLOW_SENSOR_BROKEN = "flow_sensor_broken"
    FLOW_SENSOR_STUCK_ZERO = "flow_sensor_stuck_zero"


@dataclass(frozen=True)
class PumpModel:
    """Electrical and hydraulic behaviour of one pump."""

    flow_l_min: float
    run_current_a: float = 0.8
    idle_current_a: float = 0.02
    jammed_current_a: float = 2.5
    dry_current_a: float = 0.3
    draws_from_tank: bool = True  # the fill pump draws from the mains, not the tank


DEFAULT_PUMPS: Mapping[str, PumpModel] = {
    "recirc": PumpModel(flow_l_min=12.0),
    "drain": PumpModel(flow_l_min=10.0),
    "fill": PumpModel(flow_l_min=10.0, draws_from_tank=False),
}


class TankSim:
    """One zone's reservoir, its pumps and sensors."""

    def __init__(
        self,
        capacity_l: float = 100.0,
        level_pct: float = 80.0,
        ph: float = 6.0,
        ec: float = 1.8,
        temp_water: float = 20.0,
        *,
        seed: int = 0,
        pumps: Mapping[str, PumpModel] = DEFAULT_PUMPS,
        ph_drift_per_h: float = 0.03,
        ec_drift_per_h: float = -0.01,
        fresh_ph: float = 7.2,
        fresh_ec: float = 0.3,
        mix_tau_s: float = 120.0,
        evaporation_l_h: float = 0.2,
        time_of_day_s: float = 8 * 3600.0,
        noise: bool = True,
    ) -> None:
        if capacity_l <= 0:
            raise ValueError("capacity_l must be > 0")
        self.capacity_l = capacity_l
        self.volume_l = capacity_l * min(max(level_pct, 0.0), 100.0) / 100
        self.ph = ph
        self.ec = ec
        self.temp_water = temp_water
        self.pumps = dict(pumps)
        self.ph_drift_per_h = ph_drift_per_h
        self.ec_drift_per_h = ec_drift_per_h
        self.fresh_ph = fresh_ph
        self.fresh_ec = fresh_ec
        self.mix_tau_s = mix_tau_s
        self.evaporation_l_h = evaporation_l_h
        self.elapsed_s = 0.0
        self.time_of_day_s = time_of_day_s
        self.faults: set[tuple[Fault, str]] = set()
        self._commanded: dict[str, bool] = dict.fromkeys(self.pumps, False)
        self._pending_ph = 0.0
        self._pending_ec = 0.0
        self._rng = random.Random(seed)
        self._noise_on = noise
        self._noise: dict[str, float] = {}
        self._draw_noise()

    # faults ----------------------------------------------------------------------------

    def inject(self, fault: Fault, role: str = "recirc") -> None:
        """Switch a fault on (``DRY`` empties the tank at once and keeps it empty)."""
        self.faults.add((fault, role))
        if fault is Fault.DRY:
            self.volume_l = 0.0

    def clear(self, fault: Fault, role: str = "recirc") -> None:
        """Switch a fault off."""
        self.faults.discard((fault, role))

    def _has(self, fault: Fault, role: str) -> bool:
        return (fault, role) in self.faults

    def _dry_fault(self) -> bool:
        return any(f is Fault.DRY for f, _ in self.faults)

    # physics ---------------------------------------------------------------------------

    @property
    def level_pct(self) -> float:
        """True level in % of capacity."""
        return self.volume_l / self.capacity_l * 100

    def running(self, role: str) -> bool:
        """Whether the pump actually turns (a stuck relay keeps it running)."""
        return self._commanded.get(role, False) or self._has(Fault.STUCK_RELAY, role)

    def _dry_for(self, role: str) -> bool:
        return self.pumps[role].draws_from_tank and (self._dry_fault() or self.level_pct < DRY_LEVEL_PCT)

    def true_flow(self, role: str) -> float:
        """Real flow through the pump in L/min."""
        if not self.running(role) or self._has(Fault.JAMMED, role) or self._dry_for(role):
            return 0.0
        return self.pumps[role].flow_l_min

    def true_current(self, role: str) -> float:
        """Real motor current in A."""
        model = self.pumps[role]
        if not self.running(role):
            return model.idle_current_a
        if self._has(Fault.JAMMED, role):
            return model.jammed_current_a
        if self._dry_for(role):
            return model.dry_current_a
        return model.run_current_a

    def step(self, dt_s: float, pumps: Mapping[str, bool], doses: Mapping[str, float] | None = None) -> None:
        """Advance ``dt_s`` seconds with the given pump commands and doses (mL) added at the start."""
        if dt_s < 0:
            raise ValueError("dt_s must be >= 0")
        for role, on in pumps.items():
            if role not in self.pumps:
                raise KeyError(f"unknown pump role {role!r}")
            self._commanded[role] = on
        self._dose(doses or {})
        minutes = dt_s / 60
        drained = min(self.volume_l, self.true_flow("drain") * minutes) if "drain" in self.pumps else 0.0
        filled = self.true_flow("fill") * minutes if "fill" in self.pumps else 0.0
        self.volume_l -= drained
        self.volume_l -= min(self.volume_l, self.evaporation_l_h * dt_s / 3600)
        if filled > 0:
            room = self.capacity_l - self.volume_l
            filled = min(filled, room)
            total = self.volume_l + filled
            if total > 0:  # fresh water dilutes towards tap values
                self.ec = (self.ec * self.volume_l + self.fresh_ec * filled) / total
                self.ph = (self.ph * self.volume_l + self.fresh_ph * filled) / total
            self.volume_l = total
        if self._dry_fault():
            self.volume_l = 0.0  # a leak keeps the tank empty while the fault lasts
        self._mix(dt_s)
        self.ph = min(14.0, max(0.0, self.ph + self.ph_drift_per_h * dt_s / 3600))
        self.ec = max(0.0, self.ec + self.ec_drift_per_h * dt_s / 3600)
        self.elapsed_s += dt_s
        self._draw_noise()

    def _dose(self, doses: Mapping[str, float]) -> None:
        scale = 100.0 / max(self.volume_l, 1.0)  # effects below are per mL in 100 L
        for name, ml in doses.items():
            if ml < 0:
                raise ValueError(f"dose {name!r} must be >= 0")
            if name == "ph_down":
                self._pending_ph -= 0.1 * ml * scale
            elif name == "ph_up":
                self._pending_ph += 0.1 * ml * scale
            elif name == "nutrient":
                self._pending_ec += 0.02 * ml * scale
            else:
                raise KeyError(f"unknown dose {name!r}")

    def _mix(self, dt_s: float) -> None:
        tau = self.mix_tau_s if self.running("recirc") and self.true_flow("recirc") > 0 else self.mix_tau_s * 5
        frac = 1 - math.exp(-dt_s / tau) if dt_s > 0 else 0.0
        dph, dec = self._pending_ph * frac, self._pending_ec * frac
        self.ph += dph
        self.ec += dec
        self._pending_ph -= dph
        self._pending_ec -= dec

    # sensors ---------------------------------------------------------------------------

    def _draw_noise(self) -> None:
        sigma = {
            "ph": 0.01, "ec": 0.01, "temp_air": 0.1, "temp_water": 0.05, "humidity": 0.5, "co2": 5.0,
            "lux": 50.0, "water_level": 0.2,
        }  # fmt: skip
        for role in self.pumps:
            sigma[f"flow:{role}"] = 0.1
            sigma[f"current:{role}"] = 0.01
        self._noise = {k: (self._rng.gauss(0.0, s) if self._noise_on else 0.0) for k, s in sigma.items()}

    def flow_reading(self, role: str) -> float | None:
        """What the role's flow sensor reports (None when the sensor is broken)."""
        if self._has(Fault.FLOW_SENSOR_BROKEN, role):
            return None
        if self._has(Fault.FLOW_SENSOR_STUCK_ZERO, role):
            return 0.0
        flow = self.true_flow(role)
        return max(0.0, flow + self._noise[f"flow:{role}"]) if flow > 0 else 0.0

    def current_reading(self, role: str) -> float:
        """What the role's INA209 reports in A."""
        return max(0.0, self.true_current(role) + self._noise[f"current:{role}"])

    def _lux(self) -> float:
        hour = ((self.time_of_day_s + self.elapsed_s) % 86_400) / 3600
        daylight = math.sin(math.pi * (hour - 6) / 14) if 6 <= hour <= 20 else 0.0
        return max(0.0, 30_000.0 * daylight + self._noise["lux"])

    def readings(self, role: str = "recirc") -> dict[str, float | None]:
        """Sensor values under canonical metric names; flow and current are those of ``role``."""
        n = self._noise
        return {
            "ph": round(self.ph + n["ph"], 3),
            "ec": round(max(0.0, self.ec + n["ec"]), 3),
            "temp_air": round(24.0 + n["temp_air"], 2),
            "temp_water": round(self.temp_water + n["temp_water"], 2),
            "humidity": round(60.0 + n["humidity"], 1),
            "co2": round(450.0 + n["co2"], 0),
            "lux": round(self._lux(), 0),
            "water_level": round(min(100.0, max(0.0, self.level_pct + n["water_level"])), 2),
            "flow_rate": self.flow_reading(role),
            "pump_current": round(self.current_reading(role), 3),
        }
