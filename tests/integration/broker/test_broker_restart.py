"""Across a gateway restart: sessions are gone (memory-only), retained node configs come back from SQLite."""

from __future__ import annotations

import json

from tests.conftest import eventually, run_gateway
from tests.fakes.mqtt_clients import PahoClient

CONFIG = "hydro/gh1/zone-a/nd-ph-1/config"
HELLO = {"message_type": "node_hello", "hardware_id": "esp32-aa01", "node_type": "ph", "fw_version": "1.0.0"}


async def test_restarted_gateway_serves_the_retained_config_again(make_settings):
    settings = make_settings()
    async with run_gateway(settings) as gw:
        node = PahoClient("nd-ph-1", gw.services.broker.port, clean_session=False)
        await node.connect()
        await node.subscribe(CONFIG)
        await node.publish("hydro/node_hello", HELLO)
        assert json.loads((await node.get()).payload)["zone_uid"] == "zone-a"
        await node.disconnect()

    async with run_gateway(settings) as gw:  # same data dir, same port
        fresh = PahoClient("esp32-spare", gw.services.broker.port)
        await fresh.connect()
        await fresh.subscribe(CONFIG)
        config = await fresh.get()
        assert config.retain and json.loads(config.payload)["node_uid"] == "nd-ph-1"
        await fresh.disconnect()
        # The node's persistent session did not survive: it must subscribe again (see gateway/broker/README.md).
        node = PahoClient("nd-ph-1", gw.services.broker.port, clean_session=False)
        assert await node.connect() == ("Success", False)
        await node.subscribe(CONFIG)
        assert (await node.get()).retain
        await eventually(lambda: gw.services.broker.stats()["subscriptions"] == 1)
        await node.disconnect()
