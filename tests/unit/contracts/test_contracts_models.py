"""Typed models parsed from validated payloads, and the payloads the gateway emits."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import firmware_contracts
from firmware_contracts.golden import golden_examples
from firmware_contracts.models import (
    ChannelSpec,
    Command,
    CommandResponse,
    CommandStatus,
    Heartbeat,
    Intervals,
    NodeConfig,
    NodeHello,
    NodeStatus,
    TelemetrySample,
    parse_telemetry,
)
from firmware_contracts.validate import decode_and_validate, validate

SAMPLE = {"metric_type": "ph", "value": 5.84, "ts": 1735732800, "channel": "ph1"}


def test_parse_telemetry_handles_all_three_shapes() -> None:
    expected = TelemetrySample("ph", 5.84, 1735732800.0, "ph1", None)
    assert parse_telemetry(SAMPLE) == [expected]
    assert parse_telemetry([SAMPLE, {**SAMPLE, "value": 6}]) == [
        expected,
        dataclasses.replace(expected, value=6.0),
    ]
    assert parse_telemetry({"samples": [SAMPLE]}) == [expected]


def test_parse_telemetry_from_decoded_bytes() -> None:
    payload, failure = decode_and_validate("telemetry", json.dumps({"samples": [SAMPLE] * 10}).encode())
    assert failure is None
    samples = parse_telemetry(payload)
    assert len(samples) == 10
    assert all(isinstance(s.value, float) for s in samples)


def test_sample_timestamps_become_unix_seconds() -> None:
    rfc = parse_telemetry({"metric_type": "ph", "value": 1, "ts": "2025-01-01T03:00:00+03:00"})[0]
    assert rfc.ts == 1735689600.0
    frac = parse_telemetry({"metric_type": "ph", "value": 1, "ts": "2025-01-01T00:00:00.250Z"})[0]
    assert frac.ts == 1735689600.25
    none = parse_telemetry({"metric_type": "ph", "value": 1, "raw": {"adc": 12}})[0]
    assert none.ts is None
    assert none.raw == {"adc": 12}


def test_rest_ingest_samples_keep_their_uids() -> None:
    example = next(e for e in golden_examples("telemetry") if e.name == "rest_ingest_with_uids")
    (sample,) = parse_telemetry(example.payload)
    assert (sample.node_uid, sample.zone_uid) == ("nd-ph-01", "zn-a")


def test_parse_telemetry_refuses_a_scalar() -> None:
    with pytest.raises(TypeError):
        parse_telemetry(5.84)


def test_every_golden_example_parses_into_its_model() -> None:
    parsers = {
        "node_hello": NodeHello.from_payload,
        "heartbeat": Heartbeat.from_payload,
        "command": Command.from_payload,
        "command_response": CommandResponse.from_payload,
        "config": NodeConfig.from_payload,
        "status": NodeStatus.from_payload,
        "telemetry": parse_telemetry,
    }
    for example in golden_examples():
        if example.kind in parsers:
            assert parsers[example.kind](example.payload), example.name


def test_node_hello_minimal_and_full() -> None:
    seed = next(e for e in golden_examples("node_hello") if e.name == "minimal_seed_002")
    minimal = NodeHello.from_payload(seed.payload)
    assert minimal == NodeHello("test-fallback-001", "ph", "1.0.0")
    full = next(e for e in golden_examples("node_hello") if e.name == "pump_node_full")
    hello = NodeHello.from_payload(full.payload)
    assert hello.node_uid == "nd-pump-01"
    assert hello.hardware_revision == "rev-C"
    assert "ina209" in hello.capabilities
    assert ChannelSpec("pump_current", "sensor", metric_type="pump_current") in hello.channels


def test_heartbeat_model() -> None:
    hb = Heartbeat.from_payload(
        {"uptime_s": 5.0, "rssi": -61, "free_heap": 1000, "ts": "2025-01-01T00:00:00Z"}
    )
    assert hb == Heartbeat(5, -61, 1000, 1735689600.0, None)
    assert isinstance(hb.uptime_s, int)


def test_overcurrent_response_model() -> None:
    example = next(e for e in golden_examples("command_response") if e.name == "overcurrent_seed_003")
    response = CommandResponse.from_payload(example.payload)
    assert response.status is CommandStatus.ERROR
    assert response.error_code == "overcurrent"
    assert response.details["current_ma"] == 2300
    assert CommandResponse.from_payload({"cmd": "x", "cmd_id": "1", "status": "ACK"}).details == {}


def test_command_to_payload_is_valid_and_round_trips() -> None:
    command = Command("run_pump", "c-1", {"duration_s": 30}, ts=1735732800.0, deadline_s=60.0)
    payload = command.to_payload()
    assert validate("command", payload) is None
    assert Command.from_payload(payload) == command
    minimal = Command("set_relay", "c-2", {"state": "OFF"}).to_payload()
    assert minimal == {"cmd": "set_relay", "cmd_id": "c-2", "params": {"state": "OFF"}}
    assert validate("command", minimal) is None


def test_node_config_to_payload_is_valid_and_round_trips() -> None:
    config = NodeConfig(
        node_uid="nd-pump-01",
        zone_uid="zn-a",
        gh_uid="gh-1",
        version=3,
        channels=(
            ChannelSpec(
                "pump_recirc", "pump", fail_safe_mode="NC", controlled_by="relay", relay_logic="active_open"
            ),
            ChannelSpec("ph1", "sensor", metric_type="ph"),
        ),
        intervals=Intervals(telemetry_s=5, heartbeat_s=30),
    )
    payload = config.to_payload()
    assert validate("config", payload) is None
    assert NodeConfig.from_payload(json.loads(json.dumps(payload))) == config
    assert payload["channels"][1] == {"id": "ph1", "type": "sensor", "metric_type": "ph"}


def test_a_contradicting_relay_config_is_refused_on_the_way_out() -> None:
    nc_pump_inverted = ChannelSpec("pump_recirc", "pump", fail_safe_mode="NC", relay_logic="active_close")
    config = NodeConfig("nd-1", "zn-a", "gh-1", 1, (nc_pump_inverted,), Intervals(5, 30))
    assert (
        validate("config", config.to_payload())
        == "config.channels[0].relay_logic: 'active_open' was expected"
    )


def test_status_model() -> None:
    assert NodeStatus.from_payload({"status": "offline"}) == NodeStatus(online=False)
    assert NodeStatus.from_payload({"status": "online", "ts": 1735732800}).online


def test_models_are_frozen() -> None:
    sample = parse_telemetry(SAMPLE)[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        sample.value = 1.0  # type: ignore[misc]


def test_schemas_and_examples_load_from_a_zipped_package(tmp_path: Path) -> None:
    """importlib.resources, not file paths: the contracts work from a wheel or zip, not only a checkout."""
    source = Path(firmware_contracts.__file__).parent
    archive = tmp_path / "contracts.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for file in source.rglob("*"):
            if file.suffix in (".py", ".json"):
                zf.write(file, Path("firmware_contracts") / file.relative_to(source))
    script = (
        "import firmware_contracts, sys\n"
        "assert firmware_contracts.__file__.startswith(sys.argv[1]), firmware_contracts.__file__\n"
        "from firmware_contracts.validate import preload, validate\n"
        "from firmware_contracts.golden import golden_examples, invalid_examples\n"
        "preload()\n"
        "assert all(validate(e.kind, e.payload) is None for e in golden_examples())\n"
        "assert all(validate(e.kind, e.payload) for e in invalid_examples())\n"
        "print(len(golden_examples()))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(archive)}
    result = subprocess.run(
        [sys.executable, "-c", script, str(archive)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) == len(golden_examples())
