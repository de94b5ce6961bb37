"""``hydro-gateway provision --out``: a complete first-boot bundle from one inventory entry."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from argon2 import PasswordHasher

from gateway.provision.passwords import parse_password_file
from gateway.settings import Settings
from tests.deploy.conftest import REPO, SECRETS, SSH_KEY, gateway_settings, one_host_inventory, provision


def run(base: Path, out: Path, *more: str | Path, **host_vars: Any) -> int:
    inventory, secrets = one_host_inventory(base, "gh-0001", **host_vars)
    return provision("-i", inventory, "--host", "gh-0001", "-e", secrets, "--out", out, *more)


def settings_of(out: Path) -> Settings:
    """The bundle's gateway.toml as the gateway would load it."""
    return gateway_settings(out / "hydro-gateway/gateway.toml", out / "hydro-gateway/secrets")


def test_bundle_holds_a_valid_config_and_the_secrets(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(tmp_path, out) == 0
    settings = settings_of(out)
    assert settings.gateway.id == "gw-gh-0001"
    assert settings.gateway.greenhouse_uid == "gh-0001"
    assert settings.gateway.timezone == "Europe/Moscow"
    assert settings.gateway.data_dir == Path("/var/lib/hydro-gateway")
    assert settings.upstream.url == "https://central.example.org/api/gw/v1"
    assert settings.upstream.token == "upstream-token-0001"
    assert settings.web.admin_token == "admin-token-0001"
    assert settings.broker.allow_anonymous is False
    assert (settings.broker.port, settings.web.port) == (1883, 8080)
    hashes = parse_password_file((out / "hydro-gateway/secrets/mqtt_passwords").read_text())
    assert sorted(hashes) == ["nd-ec-1", "nd-ph-1"]
    assert PasswordHasher().verify(hashes["nd-ph-1"], "ph-secret")


def test_secrets_are_private_and_appear_in_no_other_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(tmp_path, out) == 0
    for secret in (out / "hydro-gateway/secrets").iterdir():
        assert secret.stat().st_mode & 0o777 == 0o600
    plain = [p for p in out.rglob("*") if p.is_file() and "secrets" not in p.parts]
    for path in plain:
        text = path.read_text()
        for value in ("upstream-token-0001", "admin-token-0001", "ph-secret", "ec-secret"):
            assert value not in text, f"{value} leaked into {path}"
    assert (out / "hydro-gateway/firstboot.sh").stat().st_mode & 0o111


def test_cloud_init_files_create_the_technician_and_run_firstboot(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(tmp_path, out) == 0
    user_data_text = (out / "user-data").read_text()
    assert user_data_text.startswith("#cloud-config\n")
    user_data = yaml.safe_load(user_data_text)
    assert user_data["hostname"] == "gh-0001"
    assert user_data["ssh_pwauth"] is False
    (admin,) = user_data["users"]
    assert admin["name"] == "gwadmin" and admin["ssh_authorized_keys"] == [SSH_KEY]
    assert ["bash", "/boot/firmware/hydro-gateway/firstboot.sh"] in user_data["runcmd"]
    assert {"python3-venv", "python3-lgpio"} <= set(user_data["packages"])
    network = yaml.safe_load((out / "network-config").read_text())["network"]
    assert network["version"] == 2 and network["ethernets"]["eth0"]["dhcp4"] is True
    assert "wifis" not in network
    meta = yaml.safe_load((out / "meta-data").read_text())
    assert meta["instance-id"].startswith("gw-gh-0001-")
    assert meta["local-hostname"] == "gh-0001"


def test_wifi_goes_into_network_config(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(tmp_path, out, hydro_gateway_wifi_ssid="Greenhouse 1", hydro_gateway_wifi_password="wifi-pw") == 0
    wlan = yaml.safe_load((out / "network-config").read_text())["network"]["wifis"]["wlan0"]
    assert wlan["access-points"] == {"Greenhouse 1": {"password": "wifi-pw"}}
    assert wlan["regulatory-domain"] == "RU"
    assert (out / "network-config").stat().st_mode & 0o777 == 0o600


def test_instance_id_is_reproducible_and_follows_the_config(tmp_path: Path) -> None:
    ids = []
    for index, port in enumerate((8080, 8080, 9090)):
        out = tmp_path / f"out{index}"
        assert run(tmp_path, out, hydro_gateway_web_port=port) == 0
        ids.append(yaml.safe_load((out / "meta-data").read_text())["instance-id"])
    assert ids[0] == ids[1] != ids[2]


def test_install_settings_follow_the_inventory(tmp_path: Path) -> None:
    out = tmp_path / "out"
    extra = ["dtoverlay=disable-bt"]
    assert run(tmp_path, out, hydro_gateway_enable_serial=False, hydro_gateway_boot_config_extra=extra) == 0
    env = (out / "hydro-gateway/install.env").read_text()
    assert "HG_PACKAGE=hydro-gateway\n" in env
    assert "HG_ENABLE_SERIAL=0\n" in env and "HG_ENABLE_I2C=1\n" in env
    assert "HG_SUPPLEMENTARY_GROUPS='gpio i2c dialout'\n" in env
    assert (out / "hydro-gateway/boot-config.txt").read_text() == "[all]\ndtparam=i2c_arm=on\ndtoverlay=disable-bt\n"


def test_bundled_gateway_wheel_is_installed_by_file_name(tmp_path: Path) -> None:
    wheel = tmp_path / "hydro_gateway-9.9.9-py3-none-any.whl"
    wheel.write_bytes(b"PK not really a wheel")
    out = tmp_path / "out"
    assert run(tmp_path, out, "--wheel", wheel, "--offline") == 0
    assert (out / "hydro-gateway/wheels" / wheel.name).read_bytes() == wheel.read_bytes()
    env = (out / "hydro-gateway/install.env").read_text()
    assert f"HG_PACKAGE={wheel.name}\n" in env and "HG_OFFLINE=1\n" in env


def test_reprovisioning_replaces_the_previous_bundle(tmp_path: Path) -> None:
    wheel = tmp_path / "hydro_gateway-1.0.0-py3-none-any.whl"
    wheel.write_bytes(b"old")
    out = tmp_path / "out"
    assert run(tmp_path, out, "--wheel", wheel) == 0
    assert run(tmp_path, out) == 0
    assert not (out / "hydro-gateway/wheels").exists()


def test_offline_without_the_gateway_wheel_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(tmp_path, tmp_path / "out", "--offline") == 2
    assert "no hydro_gateway-*.whl" in capsys.readouterr().err


def test_example_placeholders_never_reach_a_card(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inventory, _ = one_host_inventory(tmp_path, "gh-0001")
    example = REPO / "ansible/vault.example.yml"
    code = provision("-i", inventory, "--host", "gh-0001", "-e", example, "--out", tmp_path / "o")
    assert code == 2
    assert "CHANGE-ME placeholder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("host_vars", "message"),
    [
        ({"hydro_gateway_broker_allow_anonymous": True}, "only allowed in demo mode"),
        ({"hydro_gateway_mode": "staging"}, "hydro_gateway_mode"),
        ({"hydro_gateway_enable_i2c": "yes"}, "YAML boolean"),
        ({"hydro_gateway_admin_ssh_keys": []}, "nobody can log in"),
        ({"hydro_gateway_greenhouse_uid": ""}, "hydro_gateway_greenhouse_uid is empty"),
    ],
)
def test_invalid_host_variables_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], host_vars: dict[str, Any], message: str
) -> None:
    assert run(tmp_path, tmp_path / "out", **host_vars) == 2
    assert message in capsys.readouterr().err


def test_demo_gateway_may_allow_anonymous_nodes(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run(tmp_path, out, hydro_gateway_mode="demo", hydro_gateway_broker_allow_anonymous=True) == 0
    assert settings_of(out).broker.allow_anonymous is True


def test_the_example_inventory_provisions_once_its_vault_is_filled(tmp_path: Path) -> None:
    filled = {key: value for key, value in SECRETS.items()}
    filled["vault_hydro_gateway_wifi_password"] = "wifi-pw"
    filled["hydro_gateway_admin_ssh_keys"] = [SSH_KEY]
    (tmp_path / "vault.yml").write_text(yaml.safe_dump(filled))
    inventory = tmp_path / "inventory.yml"
    shutil.copy(REPO / "ansible/inventory.example.yml", inventory)
    for host in ("gh-0001", "gh-0003", "gh-demo"):
        out = tmp_path / host
        assert provision("-i", inventory, "--host", host, "-e", tmp_path / "vault.yml", "--out", out) == 0
        assert settings_of(out).gateway.greenhouse_uid == host
    assert "wifis" in (tmp_path / "gh-0003/network-config").read_text()
    assert settings_of(tmp_path / "gh-demo").is_demo
