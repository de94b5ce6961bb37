"""The SD bundle's firstboot.sh, run against a staging root: install, secrets off the boot partition, SD wear."""

from __future__ import annotations

import hashlib
import stat
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import Fleet, gateway_settings, run_firstboot

pytestmark = pytest.mark.slow


def snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Content hash and mode of every file under ``root`` outside the virtualenv."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and "venv" not in path.parts:
            files[str(path.relative_to(root))] = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mode)
    return files


def test_secrets_move_to_etc_and_leave_the_boot_partition(fleet: Fleet, sd_provisioned: Path) -> None:
    etc = fleet.roots["gh-sd"] / "etc/hydro-gateway"
    for name in ("upstream_token", "admin_token", "mqtt_passwords"):
        mode = (etc / name).stat().st_mode
        assert stat.S_IMODE(mode) == 0o640, name
    assert (etc / "upstream_token").read_text() == "upstream-token-0001"
    assert stat.S_IMODE((etc / "gateway.toml").stat().st_mode) == 0o644
    assert not (sd_provisioned / "hydro-gateway/secrets").exists()


def test_installed_config_is_accepted_by_the_gateway(fleet: Fleet, sd_provisioned: Path) -> None:
    etc = fleet.roots["gh-sd"] / "etc/hydro-gateway"
    settings = gateway_settings(etc / "gateway.toml", etc)
    assert settings.gateway.id == "gw-gh-sd"
    assert {user.username for user in settings.broker.users} == {"nd-ph-1", "nd-ec-1"}
    assert settings.web.port == fleet.health["gh-sd"].port


def test_gateway_is_installed_into_its_virtualenv(fleet: Fleet, sd_provisioned: Path) -> None:
    venv = fleet.roots["gh-sd"] / "opt/hydro-gateway/venv"
    assert (venv / "bin/hydro-gateway").exists()
    shown = subprocess.run([str(venv / "bin/pip"), "show", "hydro-gateway"], capture_output=True, text=True)
    assert "Name: hydro-gateway" in shown.stdout
    assert (fleet.roots["gh-sd"] / "opt/hydro-gateway/wheels" / fleet.wheel.name).exists()


def test_unit_and_boot_config_are_in_place(fleet: Fleet, sd_provisioned: Path) -> None:
    root = fleet.roots["gh-sd"]
    assert (root / "etc/systemd/system/hydro-gateway.service").read_text().startswith("# hydro-gateway")
    assert "Storage=volatile" in (root / "etc/systemd/journald.conf.d/hydro-gateway.conf").read_text()
    assert (root / "etc/modules-load.d/hydro-gateway.conf").read_text() == "i2c-dev\n"
    config = (root / "boot/firmware/config.txt").read_text()
    assert config.endswith("# BEGIN hydro-gateway\n[all]\ndtparam=i2c_arm=on\nenable_uart=1\n# END hydro-gateway\n")
    assert config.startswith("# stock\ndtparam=audio=on\n[cm4]\n")
    cmdline = (root / "boot/firmware/cmdline.txt").read_text()
    assert "console=serial0" not in cmdline and cmdline.startswith("console=tty1 root=")
    fstab = (root / "etc/fstab").read_text().splitlines()
    assert fstab[2] == "PARTUUID=1234-02  /  ext4  defaults,noatime  0  1"
    assert fstab[1] == "PARTUUID=1234-01  /boot/firmware  vfat  defaults  0  2"


def test_running_it_again_changes_nothing(fleet: Fleet, sd_provisioned: Path) -> None:
    root = fleet.roots["gh-sd"]
    before = snapshot(root)
    result = run_firstboot(sd_provisioned, root)
    assert "done" in result.stdout
    assert snapshot(root) == before
