"""Config validation and the check-config command: one clear line per problem."""

from __future__ import annotations

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
