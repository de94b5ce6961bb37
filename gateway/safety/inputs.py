"""What the rules see of one pump channel right now: commanded state and sensor values with their ages."""

from __future__ import annotations

from gateway.readings import LatestReadings, Reading
from gateway.safety.channels import PumpChannel
from gateway.safety.rules import ChannelInputs
from gateway.telemetry_metrics import Metric


def channel_inputs(ch: PumpChannel, latest: LatestReadings, now: float) -> ChannelInputs:
    """Inputs of ``ch`` at monotonic ``now``: gateway relays use their INA209 and the zone's flow sensor,
    node pumps their own channel telemetry; ages count from the measurement."""
    level = latest.get(ch.zone_id, Metric.WATER_LEVEL)
    if ch.relay is None:
        flow = latest.get(ch.zone_id, Metric.FLOW_RATE, ch.channel)
        current_a, current_age = _value_age(latest.get(ch.zone_id, Metric.PUMP_CURRENT, ch.channel), now)
    else:
        flow = latest.get(ch.zone_id, Metric.FLOW_RATE)
        current_a = ch.current_a
        current_age = None if ch.current_read_mono is None else now - ch.current_read_mono
    flow_v, flow_age = _value_age(flow, now)
    level_v, level_age = _value_age(level, now)
    return ChannelInputs(
        desired_on=ch.desired_on,
        relay_on=ch.relay_on,
        current_a=current_a,
        current_age_s=current_age,
        flow_l_min=flow_v,
        flow_age_s=flow_age,
        water_level=level_v,
        level_age_s=level_age,
        off_allowed_until=ch.off_lease_until,
    )


def _value_age(reading: Reading | None, now: float) -> tuple[float | None, float | None]:
    return (None, None) if reading is None else (reading.value, now - reading.taken_mono)
