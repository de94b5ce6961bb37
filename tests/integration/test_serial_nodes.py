"""Nodes on a serial line (real pty pair) enter the same router and get commands over the same wire."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tty

from gateway.telemetry_metrics import Metric
from tests.conftest import eventually, run_gateway


class PtyNode:
    """The ESP32 end of a UART: the pty master."""

    def __init__(self, link_path) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)
        os.symlink(os.ttyname(slave), link_path)
        self._slave = slave  # keep the slave open so the line stays up
        os.set_blocking(self.master, False)
        self.buffer = b""

    def send(self, topic: str, payload: dict) -> None:
        os.write(self.master, json.dumps({"topic": topic, "payload": payload}).encode() + b"\n")

    def frames(self) -> list[dict]:
        with contextlib.suppress(BlockingIOError):
            self.buffer += os.read(self.master, 65536)
        *lines, self.buffer = self.buffer.split(b"\n")
        return [json.loads(line) for line in lines if line.strip()]

    def close(self) -> None:
        os.close(self.master)
        os.close(self._slave)


async def test_serial_node_registers_reports_and_takes_commands(make_settings, tmp_path):
    link = tmp_path / "ttyNODE"
    node = PtyNode(link)
    settings = make_settings(hardware={"backend": "sim", "serial": [{"port": str(link), "baudrate": 115200}]})
    try:
        async with run_gateway(settings) as gw:
            await asyncio.sleep(0.3)  # the link opens the port
            node.send("hydro/node_hello", {"message_type": "node_hello", "hardware_id": "esp32-aa02",
                                           "node_type": "pump", "fw_version": "3.0.0", "node_uid": "nd-water-1"})
            node.send("hydro/gh1/zone-a/nd-water-1/telemetry", {"metric_type": "water_level", "value": 55.5})
            row = await eventually(lambda: gw.services.db.fetchone(
                "SELECT * FROM telemetry_samples WHERE metric_type='water_level'"))
            assert row["value"] == 55.5
            node_row = await gw.services.db.fetchone("SELECT firmware_version FROM nodes WHERE uid='nd-water-1'")
            assert node_row["firmware_version"] == "3.0.0"
            seen: list[dict] = []

            def got(kind: str) -> dict | None:
                seen.extend(node.frames())
                return next((f for f in seen if f["topic"].endswith(kind)), None)

            config = await eventually(lambda: got("/config"))
            assert config["payload"]["node_uid"] == "nd-water-1"
            assert gw.services.latest.get(gw.services.registry.zone_id("zone-a"), Metric.WATER_LEVEL) is not None
            rec = await gw.services.commands.submit("zone-a", "pump_irrigation", "run_pump", {"duration_s": 3},
                                           node_uid="nd-water-1")
            cmd = await eventually(lambda: got("/command"))
            assert cmd["topic"] == "hydro/gh1/zone-a/nd-water-1/pump_irrigation/command"
            assert cmd["payload"]["cmd_id"] == rec["cmd_id"]
            node.send("hydro/gh1/zone-a/nd-water-1/pump_irrigation/command_response",
                      {"cmd": "run_pump", "cmd_id": rec["cmd_id"], "status": "DONE"})
            await eventually(lambda: _done(gw, rec["cmd_id"]))
    finally:
        node.close()


async def _done(gw, cmd_id):
    return (await gw.services.commands.get(cmd_id))["status"] == "DONE"
