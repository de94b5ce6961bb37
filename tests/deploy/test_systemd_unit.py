"""The systemd unit verifies cleanly, stays hardened, and still reaches the GPIO/I2C/serial devices."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO

UNIT = REPO / "systemd" / "hydro-gateway.service"
JOURNALD = REPO / "systemd" / "journald.conf.d" / "hydro-gateway.conf"
EXEC = "/opt/hydro-gateway/venv/bin/hydro-gateway"
# systemd-analyze security: 0 is a fully locked-down unit, 10 an unprotected one; <= 2.0 is "OK".
# The unit scores 1.5 today: what is left is network access, the device allow-list and the
# supplementary groups the hardware needs.
MAX_EXPOSURE = 2.0


def parse_unit(path: Path) -> dict[str, list[str]]:
    """``Section.Key`` -> every value it is given (unit files repeat keys such as DeviceAllow=)."""
    entries: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return entries


def verify(tmp_path: Path, unit_text: str) -> str:
    """Run ``systemd-analyze verify`` on the unit inside a staging root; return everything it printed.

    The root holds a fake executable at the ExecStart path and the host's own units (the unit pulls in
    sysinit.target & co.), so verify resolves everything without the gateway being installed here.
    """
    root = tmp_path / "root"
    executable = root / EXEC.lstrip("/")
    executable.parent.mkdir(parents=True)
    executable.write_text("#!/bin/sh\nexit 0\n")
    executable.chmod(0o755)
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    (root / "etc/systemd/system/hydro-gateway.service").write_text(unit_text)
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "hydro-gateway.service"], capture_output=True, text=True
    )
    return (result.stdout + result.stderr).strip() + ("" if result.returncode == 0 else f"\n[rc={result.returncode}]")


def test_unit_verifies_without_a_single_warning(tmp_path: Path) -> None:
    assert verify(tmp_path, UNIT.read_text()) == ""


def test_verify_harness_reports_unknown_keys(tmp_path: Path) -> None:
    # systemd-analyze verify exits 0 on unknown keys; the harness must still see them.
    broken = UNIT.read_text().replace("[Service]\n", "[Service]\nWatchdogSecs=20\n")
    assert "Unknown key" in verify(tmp_path, broken)


def test_security_exposure_stays_under_threshold() -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(UNIT)], capture_output=True, text=True, check=True
    )
    match = re.search(r"Overall exposure level for hydro-gateway\.service: ([0-9.]+)", result.stdout)
    assert match, result.stdout
    assert float(match.group(1)) <= MAX_EXPOSURE, result.stdout


def test_service_is_notify_with_watchdog_and_restart_policy() -> None:
    unit = parse_unit(UNIT)
    assert unit["Service.Type"] == ["notify"]
    assert unit["Service.NotifyAccess"] == ["main"]
    assert int(unit["Service.WatchdogSec"][0]) > 0
    assert unit["Service.Restart"] == ["always"]
    assert int(unit["Unit.StartLimitBurst"][0]) > 1
    assert int(unit["Unit.StartLimitIntervalSec"][0]) > 0
    assert unit["Service.ExecStart"] == [f"{EXEC} run --config /etc/hydro-gateway/gateway.toml"]
    assert unit["Install.WantedBy"] == ["multi-user.target"]


def test_service_runs_as_its_own_user_with_hardware_groups_and_directories() -> None:
    unit = parse_unit(UNIT)
    assert unit["Service.User"] == ["hydro-gateway"]
    assert set(unit["Service.SupplementaryGroups"][0].split()) == {"gpio", "i2c", "dialout"}
    assert unit["Service.StateDirectory"] == ["hydro-gateway"]
    assert unit["Service.ConfigurationDirectory"] == ["hydro-gateway"]
    # Ports 1883/8080 need no privilege: no capability at all.
    assert unit["Service.CapabilityBoundingSet"] == [""]
    assert unit["Service.AmbientCapabilities"] == [""]


@pytest.mark.parametrize(
    "device_class",
    ["char-gpiochip", "char-bcm2835-gpiomem", "char-rpi-gpiomem", "char-i2c", "char-ttyS", "char-ttyAMA",
     "char-ttyUSB"],
)
def test_hardening_keeps_hardware_devices_reachable(device_class: str) -> None:
    unit = parse_unit(UNIT)
    assert "Service.PrivateDevices" not in unit
    assert unit["Service.DevicePolicy"] == ["closed"]
    assert f"{device_class} rw" in unit["Service.DeviceAllow"]


def test_security_review_sees_the_device_allow_list() -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(UNIT)], capture_output=True, text=True, check=True
    )
    line = next(row for row in result.stdout.splitlines() if "DeviceAllow=" in row)
    for device_class in ("char-gpiochip:rw", "char-i2c:rw", "char-ttyAMA:rw"):
        assert device_class in line


def test_journald_dropin_keeps_logs_off_the_sd_card() -> None:
    journal = parse_unit(JOURNALD)
    assert journal["Journal.Storage"] == ["volatile"]
    assert journal["Journal.RuntimeMaxUse"][0].endswith("M")
    assert journal["Journal.ForwardToSyslog"] == ["no"]
