"""Downlink: config with ETag and last-good fallback, rejected configs, commands claimed and run once."""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

import pytest

from gateway.clock import ManualClock
from gateway.store.db import Database
from sync.client import UpstreamClient
from sync.config_schema import validate_config
from sync.downlink import CONFIG_KEY, Downlink
from tests.sync.synckit import RunningReceiver, eventually, running


def example_config() -> dict[str, Any]:
    text = resources.files("sync").joinpath("schemas/config.example.json").read_text(encoding="utf-8")
    doc: dict[str, Any] = json.loads(text)
    return doc


class Hooks:
    """Records what the downlink hands to the rest of the gateway."""

    def __init__(self) -> None:
        self.configs: list[dict[str, Any]] = []
        self.rejections: list[list[str]] = []
        self.commands: list[dict[str, Any]] = []
        self.fail_submit = False

    async def on_config(self, config: dict[str, Any]) -> None:
        self.configs.append(config)

    async def on_config_rejected(self, problems: list[str]) -> None:
        self.rejections.append(problems)

    async def submit_command(self, cmd: dict[str, Any]) -> str:
        if self.fail_submit:
            raise RuntimeError("interlock table unavailable")
        self.commands.append(cmd)
        return "QUEUED"

    def downlink(self, db: Database, client: UpstreamClient, clock: ManualClock) -> Downlink:
        return Downlink(db, client, clock=clock, on_config=self.on_config,
                        on_config_rejected=self.on_config_rejected, submit_command=self.submit_command)


async def stored_config(db: Database) -> dict[str, Any] | None:
    row = await db.fetchone("SELECT value FROM kv_state WHERE key = ?", (CONFIG_KEY,))
    return None if row is None else json.loads(row[0])


def test_the_example_config_is_valid_and_mistakes_are_named() -> None:
    good = example_config()
    assert validate_config(good) == []
    typo = copy.deepcopy(good)
    typo["zones"][0]["water_cycle"]["recirc"]["max_recirc_of_minutes"] = 5  # misspelt safety limit
    assert "max_recirc_of_minutes" in validate_config(typo)[0]
    dangling = copy.deepcopy(good)
    dangling["nodes"][0]["zone_uid"] = "zone-x"
    dangling["nodes"][1]["hardware_id"] = "esp32-aa01"
    assert validate_config(dangling) == ["nodes hardware_id 'esp32-aa01' is not unique",
                                         "nodes/0/zone_uid: unknown zone 'zone-x'"]
    bad_duty = copy.deepcopy(good)
    bad_duty["zones"][0]["water_cycle"]["recirc"]["schedule"][0]["duty_cycle"] = 1.5
    assert validate_config(bad_duty)[0].startswith("zones/0/water_cycle/recirc/schedule/0/duty_cycle")
    assert validate_config({"zones": []})[0].startswith("<root>: 'version' is a required property")


async def test_config_is_pulled_stored_and_only_refetched_when_changed(
    gw_db: Database, receiver: RunningReceiver, client: UpstreamClient, clock: ManualClock
) -> None:
    hooks = Hooks()
    downlink = hooks.downlink(gw_db, client, clock)
    await receiver.admin("PUT", f"/admin/gateways/{receiver.gateway}/config", example_config())
    assert await downlink.refresh_config() is True
    assert hooks.configs[0]["version"] == 1 and hooks.configs[0]["zones"][0]["uid"] == "zone-a"
    assert await stored_config(gw_db) == hooks.configs[0]

    assert await downlink.refresh_config() is False  # 304
    assert len(hooks.configs) == 1
    changed = example_config()
    changed["zones"][1]["name"] = "Zone B (basil)"
    await receiver.admin("PUT", f"/admin/gateways/{receiver.gateway}/config", changed)
    assert await downlink.refresh_config() is True
    assert hooks.configs[-1]["version"] == 2 and hooks.configs[-1]["zones"][1]["name"] == "Zone B (basil)"
    assert downlink.status()["config_version"] == 2


async def test_a_restart_while_offline_uses_the_last_good_config(
    gw_db: Database, receiver: RunningReceiver, client: UpstreamClient, clock: ManualClock
) -> None:
    await receiver.admin("PUT", f"/admin/gateways/{receiver.gateway}/config", example_config())
    assert await Hooks().downlink(gw_db, client, clock).refresh_config()
    await receiver.stop()

    hooks = Hooks()  # the gateway restarts, upstream is down
    downlink = hooks.downlink(gw_db, client, clock)
    async with running(downlink):
        await eventually(lambda: downlink.status()["config_error"] is not None)
    assert [c["version"] for c in hooks.configs] == [1]
    assert "GET config" in downlink.status()["config_error"]


async def test_a_bad_config_is_rejected_once_and_the_previous_one_stays(
    gw_db: Database, receiver: RunningReceiver, client: UpstreamClient, clock: ManualClock
) -> None:
    hooks = Hooks()
    downlink = hooks.downlink(gw_db, client, clock)
    path = f"/admin/gateways/{receiver.gateway}/config"
    await receiver.admin("PUT", path, example_config())
    await downlink.refresh_config()
    bad = example_config()
    bad["nodes"][0]["zone_uid"] = "zone-that-does-not-exist"
    await receiver.admin("PUT", path, bad)

    assert await downlink.refresh_config() is False
    assert await downlink.refresh_config() is False  # not downloaded again, not reported again
    assert hooks.rejections == [["nodes/0/zone_uid: unknown zone 'zone-that-does-not-exist'"]]
    assert [c["version"] for c in hooks.configs] == [1]
    assert (await stored_config(gw_db) or {})["version"] == 1
    assert downlink.config is not None and downlink.config["version"] == 1
    assert downlink.status()["config_error"].startswith("rejected: nodes/0/zone_uid")

    await receiver.admin("PUT", path, example_config())  # fixed upstream
    assert await downlink.refresh_config() is True
    assert (await stored_config(gw_db) or {})["version"] == 3


async def enqueue(receiver: RunningReceiver, cmd_id: str, **extra: Any) -> None:
    body = {"cmd_id": cmd_id, "cmd": "run_pump", "zone_uid": "zone-a", "channel": "pump_irrigation",
            "params": {"duration_ms": 5000}, **extra}
    await receiver.admin("POST", f"/admin/gateways/{receiver.gateway}/commands", body)


async def upstream_states(receiver: RunningReceiver) -> dict[str, str]:
    doc = await receiver.admin("GET", f"/admin/gateways/{receiver.gateway}/commands")
    return {c["cmd_id"]: c["state"] for c in doc["commands"]}


async def test_pending_commands_are_claimed_and_submitted_once_in_order(
    gw_db: Database, receiver: RunningReceiver, client: UpstreamClient, clock: ManualClock
) -> None:
    hooks = Hooks()
    downlink = hooks.downlink(gw_db, client, clock)
    ids = [f"{receiver.gateway}-c{i}" for i in range(3)]
    for cmd_id in ids:
        await enqueue(receiver, cmd_id)
    assert await downlink.poll_commands() == 3
    assert await downlink.poll_commands() == 0
    assert [c["cmd_id"] for c in hooks.commands] == ids
    assert hooks.commands[0]["params"] == {"duration_ms": 5000}
    assert await upstream_states(receiver) == dict.fromkeys(ids, "claimed")


async def test_a_lost_claim_response_never_runs_a_command_twice_or_not_at_all(
    gw_db: Database, receiver: RunningReceiver, client: UpstreamClient, clock: ManualClock
) -> None:
    hooks = Hooks()
    cmd_id = f"{receiver.gateway}-lost"
    await enqueue(receiver, cmd_id)
    receiver.faults.update({"drop_after_commit_next": 1})  # the claim commits upstream, the answer is lost
    assert await hooks.downlink(gw_db, client, clock).poll_commands() == 0
    assert hooks.commands == [] and await upstream_states(receiver) == {cmd_id: "claimed"}

    # even after a restart: the local 'claiming' record finishes the job, exactly once
    fresh = hooks.downlink(gw_db, client, clock)
    assert await fresh.poll_commands() == 1
    assert await fresh.poll_commands() == 0
    assert [c["cmd_id"] for c in hooks.commands] == [cmd_id]


async def test_expired_cancelled_and_failing_commands_are_not_run_but_reported(
    gw_db: Database, receiver: RunningReceiver, client: UpstreamClient, clock: ManualClock
) -> None:
    hooks = Hooks()
    downlink = hooks.downlink(gw_db, client, clock)
    gw = receiver.gateway
    await enqueue(receiver, f"{gw}-old", expires_at=clock.time() - 60)
    await enqueue(receiver, f"{gw}-fresh", expires_at=clock.time() + 60)
    assert await downlink.poll_commands() == 1
    assert [c["cmd_id"] for c in hooks.commands] == [f"{gw}-fresh"]

    await enqueue(receiver, f"{gw}-cancel")
    receiver.faults.update({"drop_after_commit_next": 1})
    await downlink.poll_commands()  # claim lost...
    assert receiver.pg is not None
    await receiver.pg.execute("UPDATE gateway_commands SET state = 'cancelled' WHERE cmd_id = $1", f"{gw}-cancel")
    hooks.fail_submit = True
    await enqueue(receiver, f"{gw}-boom")
    await downlink.poll_commands()  # ...and the command was cancelled meanwhile: 409, not run
    assert [c["cmd_id"] for c in hooks.commands] == [f"{gw}-fresh"]

    local = {r[0]: (r[1], r[2]) for r in await gw_db.fetchall(
        "SELECT cmd_id, state, submit_status FROM sync_pulled_commands")}
    assert local == {f"{gw}-old": ("expired", "expired"), f"{gw}-fresh": ("submitted", "QUEUED"),
                     f"{gw}-cancel": ("rejected", "gone upstream"),
                     f"{gw}-boom": ("rejected", "submit error: interlock table unavailable")}
    statuses = [json.loads(r[0]) for r in await gw_db.fetchall(
        "SELECT body FROM sync_outbox WHERE stream = 'command_status' ORDER BY id")]
    assert [(s["cmd_id"], s["status"], s["error_code"]) for s in statuses] == [
        (f"{gw}-old", "FAILED", "expired"), (f"{gw}-boom", "FAILED", "submit_error")]
    assert statuses[0]["cmd"] == "run_pump" and statuses[0]["source"] == "upstream"
    assert statuses[0]["zone_uid"] == "zone-a" and statuses[0]["params"] == {"duration_ms": 5000}


@pytest.mark.parametrize("status", [500, 401])
async def test_upstream_errors_leave_commands_for_the_next_poll(
    gw_db: Database, receiver: RunningReceiver, client: UpstreamClient, clock: ManualClock, status: int
) -> None:
    hooks = Hooks()
    downlink = hooks.downlink(gw_db, client, clock)
    await enqueue(receiver, f"{receiver.gateway}-x")
    receiver.faults.update({"fail_next": 1, "fail_status": status})
    assert await downlink.poll_commands() == 0
    assert f"HTTP {status}" in downlink.status()["commands_error"]
    assert await downlink.poll_commands() == 1
    assert downlink.status()["commands_error"] is None
