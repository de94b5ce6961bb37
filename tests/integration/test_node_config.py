"""The retained config a node gets names the channels the zones' actuators wire to it."""

from __future__ import annotations

import asyncio
import json

from firmware_contracts.validate import MessageKind, check
from tests.conftest import run_gateway
from tests.fakes.paho_node import PahoNode

HELLO = {"message_type": "node_hello", "hardware_id": "esp32-aa02", "node_type": "water", "fw_version": "1.0.0"}
ZONES = [
    {
        "uid": "zone-a",
        "name": "Zone A",
        "actuators": {
            "irrigation": {"channel": "pump_irrigation", "node_uid": "nd-water-1"},
            "recirc": {"channel": "pump_recirc", "node_uid": "nd-water-1", "fail_safe_mode": "NC"},
            "ph_down": {"channel": "ph_down", "node_uid": "nd-ph-1", "ml_per_s": 1.0},
        },
    },
    {"uid": "zone-b", "name": "Zone B"},
]


async def _config_of(port: int, uid: str, zone: str, hello: dict[str, str]) -> dict[str, object]:
    node = PahoNode(uid, port)
    try:
        await asyncio.to_thread(node.connect)
        await asyncio.to_thread(node.subscribe, f"hydro/gh1/{zone}/{uid}/config")
        await asyncio.to_thread(node.publish, "hydro/node_hello", hello)
        topic, payload, _, _ = await asyncio.to_thread(node.get, 10.0)
    finally:
        node.close()
    assert topic == f"hydro/gh1/{zone}/{uid}/config"
    doc: dict[str, object] = json.loads(payload)
    return doc


async def test_a_node_is_configured_with_the_actuator_channels_wired_to_it(make_settings):
    async with run_gateway(make_settings(zones=ZONES, nodes_health={"heartbeat_interval_s": 20})) as gw:
        config = await _config_of(gw.services.broker.port, "nd-water-1", "zone-a", HELLO)
    assert check(MessageKind.CONFIG, config) is None  # what the firmware's own validator accepts
    assert config["channels"] == [
        {"id": "pump_irrigation", "type": "pump", "fail_safe_mode": "NO", "relay_logic": "active_close"},
        {"id": "pump_recirc", "type": "pump", "fail_safe_mode": "NC", "relay_logic": "active_open"},
    ]
    assert config["intervals"] == {"telemetry_s": 5, "heartbeat_s": 20}


async def test_a_node_without_actuators_gets_no_channels(make_settings):
    hello = {**HELLO, "hardware_id": "esp32-bb01", "node_type": "ph"}
    async with run_gateway(make_settings(zones=ZONES)) as gw:
        config = await _config_of(gw.services.broker.port, "nd-ph-2", "zone-b", hello)
    assert check(MessageKind.CONFIG, config) is None
    assert config["channels"] == [] and config["zone_uid"] == "zone-b"
