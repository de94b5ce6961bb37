"""Gateway ⇄ reference receiver ⇄ PostgreSQL with the simulated greenhouse: exactly once, in order."""

from __future__ import annotations

import asyncio
import json
import uuid

from gateway.compose import build_gateway
from gateway.settings import settings_from_mapping
from gateway.sim.demo import demo_config
from tests.conftest import eventually, free_port
from tests.sync.synckit import TOKEN, RunningReceiver


async def test_simulated_greenhouse_syncs_exactly_once_and_takes_upstream_commands(tmp_path, postgres_dsn):
    gateway_id = f"gw-e2e-{uuid.uuid4().hex[:8]}"
    rx = RunningReceiver(postgres_dsn, gateway_id)
    await rx.start()
    cfg = demo_config(tmp_path / "data", http_port=free_port(), mqtt_port=free_port())
    cfg["gateway"]["id"] = gateway_id
    cfg["upstream"] = {"url": rx.url, "token": TOKEN, "interval_s": 0.2, "config_poll_s": 0.5}
    settings = settings_from_mapping(cfg, "<e2e>")
    gw = await build_gateway(settings, simulate=True)
    gw.services.simulation.telemetry_s = 0.2
    task = asyncio.create_task(gw.run())
    try:
        await asyncio.wait_for(gw.ready.wait(), 20)
        await eventually(lambda: gw.services.writer.committed > 200, timeout=30)
        # a command from the platform team, for the irrigation pump on a node: through the interlock
        await rx.admin("POST", f"/admin/gateways/{gateway_id}/commands", {
            "cmd_id": "up-1", "zone_uid": "zone-a", "node_uid": "nd-a-water", "channel": "pump_irrigation",
            "cmd": "run_pump", "params": {"duration_s": 5}})
        await eventually(lambda: _status(gw, "up-1", "DONE"), timeout=30)
        # stop producing, then everything committed must arrive upstream exactly once, in order
        sim_task = next(t for t in asyncio.all_tasks() if t.get_name() == "greenhouse_sim")
        sim_task.cancel()
        await asyncio.sleep(1.0)
        await gw.services.writer.flush()
        local = [r[0] for r in await gw.services.db.fetchall("SELECT id FROM telemetry_samples ORDER BY id")]
        await eventually(lambda: _seqs_equal(rx, "telemetry", local), timeout=60)
        for stream in ("alerts", "zone_events", "command_status", "node_registrations"):
            local_ids = [r[0] for r in await gw.services.db.fetchall(
                "SELECT id FROM sync_outbox WHERE stream=? ORDER BY id", (stream,))]
            await eventually(lambda s=stream, ids=local_ids: _seqs_equal(rx, s, ids), timeout=30)
        statuses = [json.loads(i["data"]) if isinstance(i["data"], str) else i["data"]
                    for i in await rx.items("command_status")]
        assert any(s and s.get("cmd_id") == "up-1" and s.get("status") == "DONE" for s in statuses), statuses
        registrations = await rx.items("node_registrations")
        assert len(registrations) >= 8
    finally:
        task.cancel()
        try:
            await task
        except (asyncio.CancelledError, Exception):
            pass
        await rx.close()


async def _status(gw, cmd_id, status):
    record = await gw.services.commands.get(cmd_id)
    return record is not None and record["status"] == status


async def _seqs_equal(rx, stream, expected):
    got = await rx.seqs(stream)
    return got == expected
