"""The demo's simulated greenhouse in-process: nodes answer commands; a jammed node pump reports overcurrent."""

from __future__ import annotations

from gateway.commands import CommandRefused
from gateway.settings import settings_from_mapping
from gateway.sim.demo import demo_config
from tests.conftest import eventually, free_port, run_gateway


async def test_jammed_node_pump_answers_overcurrent_and_locks_its_channel(tmp_path):
    settings = settings_from_mapping(demo_config(tmp_path, http_port=free_port(), mqtt_port=free_port()))
    async with run_gateway(settings, simulate=True) as gw:
        gw.services.simulation.telemetry_s = 0.2
        zone_a = gw.services.registry.zone_id("zone-a")
        await eventually(lambda: gw.services.registry.get("nd-a-water") and gw.services.latest.get(zone_a, _level()),
                         timeout=20)
        await eventually(lambda: len(gw.services.broker.clients()) == 8, timeout=20)
        ok = await gw.services.commands.submit("zone-a", "pump_irrigation", "run_pump", {"duration_s": 2},
                                      node_uid="nd-a-water")
        await eventually(lambda: _status(gw, ok["cmd_id"], "DONE"))
        gw.services.simulation.inject("zone-a", "jammed", "pump_irrigation")
        bad = await gw.services.commands.submit("zone-a", "pump_irrigation", "run_pump", {"duration_s": 2},
                                       node_uid="nd-a-water")
        await eventually(lambda: _status(gw, bad["cmd_id"], "FAILED"))
        record = await gw.services.commands.get(bad["cmd_id"])
        assert record["error_code"] == "overcurrent" and record["details"]["current_ma"] == 2300
        alerts = await eventually(lambda: gw.services.alerts.active(zone_a, any_zone=False))
        assert [(a["code"], a["scope"]) for a in alerts] == [("biz_overcurrent", "pump_irrigation")]
        assert gw.services.gate.locked_pumps() == {"node:nd-a-water/pump_irrigation": "biz_overcurrent"}
        try:
            await gw.services.commands.submit("zone-a", "pump_irrigation", "run_pump", {"duration_s": 1},
                                              node_uid="nd-a-water")
        except CommandRefused as exc:
            assert exc.reason == "locked:biz_overcurrent"
        else:
            raise AssertionError("locked node pump accepted a start")
        gw.services.simulation.clear("zone-a", "jammed", "pump_irrigation")
        assert await gw.services.safety.reset("zone-a", by="operator") == ["biz_overcurrent"]
        again = await gw.services.commands.submit("zone-a", "pump_irrigation", "run_pump", {"duration_s": 1},
                                         node_uid="nd-a-water")
        await eventually(lambda: _status(gw, again["cmd_id"], "DONE"))


def _level():
    from gateway.telemetry_metrics import Metric

    return Metric.WATER_LEVEL


async def _status(gw, cmd_id, status):
    return (await gw.services.commands.get(cmd_id))["status"] == status
