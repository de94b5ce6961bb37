"""Config validation and the check-config command: one clear line per problem."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.settings import SettingsError, load_settings

EXAMPLE = Path(__file__).resolve().parents[3] / "gateway.example.toml"


def _secrets(tmp_path: Path) -> Path:
    (tmp_path / "admin_token").write_text("s3cret\n")
    (tmp_path / "upstream_token").write_text("tok\n")
    (tmp_path / "mqtt_passwords").write_text("nd-a-ph:$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo\n")
    text = EXAMPLE.read_text().replace("/etc/hydro-gateway/", f"{tmp_path}/")
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def test_example_config_is_valid(tmp_path):
    settings = load_settings(_secrets(tmp_path))
    assert settings.gateway.id == "gw-gh-0001"
    assert settings.web.admin_token == "s3cret" and settings.upstream.token == "tok"
    assert [u.username for u in settings.broker.users] == ["nd-a-ph"]
    assert settings.hardware.relays[0].fail_safe_mode == "NC"


def test_check_config_cli_ok_and_errors(tmp_path):
    path = _secrets(tmp_path)
    ok = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(path)], capture_output=True, text=True)
    assert ok.returncode == 0 and "OK" in ok.stdout
    bad = path.read_text().replace('port = 1883', 'port = "x"').replace('duty_cycle = 0.75', 'duty_cycle = 7')
    bad = bad.replace('zone = "zone-a"\nnode_type = "ph"', 'zone = "zone-z"\nnode_type = "ph"')
    (tmp_path / "upstream_token").unlink()
    path.write_text(bad)
    res = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(path)], capture_output=True, text=True)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert any(line.startswith("broker.port:") and str(path) in line for line in lines), lines


def test_production_refuses_missing_token_and_anonymous(tmp_path):
    path = _secrets(tmp_path)
    path.write_text(path.read_text().replace(f'token_file = "{tmp_path}/upstream_token"\n', "")
                    .replace("allow_anonymous = false", "allow_anonymous = true"))
    with pytest.raises(SettingsError) as exc:
        load_settings(path)
    text = "\n".join(exc.value.problems)
    assert "upstream.token_file: required when upstream.url is set" in text
    assert "broker.allow_anonymous: not allowed in production mode" in text


def test_semantic_errors_name_the_key(tmp_path):
    path = _secrets(tmp_path)
    path.write_text(path.read_text().replace('recirc = { channel = "a-recirc" }', 'recirc = { channel = "nope" }')
                    .replace("duty_cycle = 0.75", "duty_cycle = 7"))
    with pytest.raises(SettingsError) as exc:
        load_settings(path)
    text = "\n".join(exc.value.problems)
    assert "zones.0.actuators.recirc.channel: no hardware relay named 'nope'" in text
    assert "zones.0.water_cycle.recirc.schedule[0].duty_cycle" in text


def test_check_config_rejects_cross_field_wiring_mistakes_naming_the_keys(tmp_path):
    text = _secrets(tmp_path).read_text()
    bad = text.replace("pin = 27", 'pin = "GPIO17"')  # a-drain on the recirc pump's pin (spelled differently)
    bad = bad.replace("heartbeat_pin = 26", "heartbeat_pin = 22")  # the watchdog heartbeat on a-fill's pin
    bad = bad.replace("overcurrent_a = 1.5", "overcurrent_a = 0.1")
    bad = bad.replace("idle_current_a = 0.1", "idle_current_a = 0.2")
    bad = bad.replace("max_expected_amps = 3.0", "max_expected_amps = 1.0")  # below critical_amps = 1.5
    path = tmp_path / "bad.toml"
    path.write_text(bad)
    with pytest.raises(SettingsError) as info:
        load_settings(path)
    problems = "\n".join(info.value.problems)
    pin = "hardware.relays.1.pin: GPIO 17 of relay 'a-drain' is already hardware.relays.0.pin (relay 'a-recirc')"
    assert pin in problems
    assert "hardware.watchdog.heartbeat_pin: GPIO 22 is also hardware.relays.2.pin (relay 'a-fill')" in problems
    assert "safety.overcurrent_a: 0.1 A must be above safety.idle_current_a (0.2 A)" in problems
    assert "hardware.ina209.0.critical_amps: 1.5 A is above hardware.ina209.0.max_expected_amps (1.0 A)" in problems
    assert len(info.value.problems) == 4, problems
    cli = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(path)], capture_output=True, text=True)
    assert cli.returncode == 2 and cli.stderr.count("\n") >= 4 and "heartbeat_pin" in cli.stderr


def test_shipped_example_passes_check_config_example_and_version(tmp_path):
    # Without its secret files the plain check fails with a hint; --example checks it with placeholders.
    plain = subprocess.run([sys.executable, "-m", "gateway", "check-config", str(EXAMPLE)],
                           capture_output=True, text=True, cwd=tmp_path)
    assert plain.returncode == 2 and "use --example" in plain.stderr
    example = subprocess.run([sys.executable, "-m", "gateway", "check-config", "--example", str(EXAMPLE)],
                             capture_output=True, text=True, cwd=tmp_path)
    assert example.returncode == 0, example.stderr
    assert "gateway.example.toml: OK (gateway gw-gh-0001" in example.stdout
    assert "web.admin_token_file /etc/hydro-gateway/admin_token does not exist here" in example.stderr
    version = subprocess.run([sys.executable, "-m", "gateway", "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and re.fullmatch(r"hydro-gateway \d+\.\d+\.\d+\n", version.stdout)
