"""The Ansible playbook and role: lint-clean, idempotent, converging with SD-provisioned Pis, stopping bad rollouts.

The role runs for real against localhost into staging roots (hydro_gateway_root), with the system-level
tasks (packages, users, systemctl, reboot) switched off by hydro_gateway_manage_system: false.
"""

from __future__ import annotations

import re
import stat
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.provision.passwords import parse_password_file
from tests.deploy.conftest import REPO, Fleet, build_gateway_wheel, gateway_settings, tool, tool_env

# Each playbook run forks ansible-playbook and pip; on a loaded 2-core CI machine one run can take over a
# minute, so these get more than the default 120 s (they wait for process exit, never for a clock).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(360)]

ANSIBLE = REPO / "ansible"


@dataclass(frozen=True)
class Run:
    """One ansible-playbook run: exit code, output, changed= per host from the recap."""

    code: int
    output: str
    changed: dict[str, int]


def playbook(fleet: Fleet, *args: str) -> Run:
    """Run the playbook on the test fleet."""
    result = subprocess.run(
        [tool("ansible-playbook"), "-i", str(fleet.inventory), "playbook.yml",
         "--vault-password-file", str(fleet.vault_password_file), *args],
        cwd=ANSIBLE, capture_output=True, text=True, env={**tool_env(), "ANSIBLE_NOCOLOR": "1"},
    )
    output = result.stdout + result.stderr
    changed = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\S+)\s+: ok=\d+\s+changed=(\d+)", output, re.M)}
    return Run(result.returncode, output, changed)


def test_ansible_lint_production_profile_passes() -> None:
    result = subprocess.run(
        [tool("ansible-lint"), "--offline", "--profile", "production", "--nocolor"],
        cwd=ANSIBLE, capture_output=True, text=True, env=tool_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Profile 'production' was required, and it passed" in result.stdout + result.stderr


def test_playbook_syntax_check_passes() -> None:
    result = subprocess.run(
        [tool("ansible-playbook"), "-i", "inventory.example.yml", "playbook.yml", "--syntax-check"],
        cwd=ANSIBLE, capture_output=True, text=True, env=tool_env(),
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def first_rollout(fleet: Fleet, sd_provisioned: Path) -> Run:
    """gh-sd was installed from its SD card bundle; gh-fresh has never seen the gateway. One batch."""
    run = playbook(fleet, "--limit", "gh-sd,gh-fresh", "-e", "hydro_gateway_rollout_batch=2")
    assert run.code == 0, run.output
    return run


def test_sd_provisioned_pi_needs_no_change(first_rollout: Run) -> None:
    assert first_rollout.changed["gh-sd"] == 0, first_rollout.output


def test_fresh_pi_gets_the_gateway_installed(first_rollout: Run, fleet: Fleet) -> None:
    assert first_rollout.changed["gh-fresh"] > 0
    root = fleet.roots["gh-fresh"]
    etc = root / "etc/hydro-gateway"
    # The config names the target paths, never the staging root.
    upstream = tomllib.loads((etc / "gateway.toml").read_text())["upstream"]
    assert upstream["token_file"] == "/etc/hydro-gateway/upstream_token"
    settings = gateway_settings(etc / "gateway.toml", etc)
    assert settings.gateway.id == "gw-gh-fresh"
    assert settings.web.port == fleet.health["gh-fresh"].port
    assert settings.upstream.token == "upstream-token-0001"
    assert sorted(parse_password_file((etc / "mqtt_passwords").read_text())) == ["nd-ec-1", "nd-ph-1"]
    for secret in ("upstream_token", "admin_token", "mqtt_passwords"):
        assert stat.S_IMODE((etc / secret).stat().st_mode) == 0o640
    assert (root / "opt/hydro-gateway/venv/bin/hydro-gateway").exists()
    assert (root / "etc/systemd/system/hydro-gateway.service").read_bytes() == (
        REPO / "systemd/hydro-gateway.service"
    ).read_bytes()
    assert "Storage=volatile" in (root / "etc/systemd/journald.conf.d/hydro-gateway.conf").read_text()
    assert "defaults,noatime" in (root / "etc/fstab").read_text()
    assert "console=serial0" not in (root / "boot/firmware/cmdline.txt").read_text()
    # Same block as firstboot.sh writes: both come from the role's boot-config.txt.j2.
    boot = "boot/firmware/config.txt"
    assert (root / boot).read_text() == (fleet.roots["gh-sd"] / boot).read_text()


def test_rerun_changes_nothing_and_an_unhealthy_gateway_stops_the_rollout(first_rollout: Run, fleet: Fleet) -> None:
    # One batch per host: gh-fresh (installed by the first rollout) answers 503, gh-late comes next.
    fleet.health["gh-fresh"].status = 503
    try:
        run = playbook(fleet, "--limit", "gh-fresh,gh-late", "-e", "hydro_gateway_rollout_batch=1")
    finally:
        fleet.health["gh-fresh"].status = 200
    assert run.changed == {"gh-fresh": 0}, run.output
    assert run.code != 0
    assert re.search(r"fatal: \[gh-fresh\].*Status code was 503", run.output), run.output
    # Nothing to roll back to: this run installed nothing new.
    assert "no previous release to roll back to" in run.output, run.output
    # The next batch never started: gh-late was not touched at all.
    assert not (fleet.roots["gh-late"] / "etc/hydro-gateway").exists()


def installed_version(root: Path) -> str:
    """The hydro-gateway version in a staging root's virtualenv, from its dist-info directory."""
    (info,) = (root / "opt/hydro-gateway/venv/lib").glob("python3*/site-packages/hydro_gateway-*.dist-info")
    return info.name.removeprefix("hydro_gateway-").removesuffix(".dist-info")


def test_an_unhealthy_release_is_rolled_back_to_the_previous_one(
    fleet: Fleet, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = fleet.roots["gh-roll"]
    # The stand-in /healthz is healthy exactly while the staged venv holds the current release.
    fleet.health["gh-roll"].healthy_when = lambda: installed_version(root) == "0.1.0"
    first = playbook(fleet, "--limit", "gh-roll")
    assert first.code == 0, first.output
    assert (root / "opt/hydro-gateway/release").read_text() == f"{fleet.wheel.name}\n"

    bad = build_gateway_wheel(tmp_path_factory.mktemp("bad-wheel"), version="0.1.99")
    run = playbook(fleet, "--limit", "gh-roll", "-e", f"hydro_gateway_wheel={bad}")
    assert run.code != 0, run.output
    assert f"hydro-gateway {bad.name} did not become healthy on gh-roll" in run.output, run.output
    assert f"rolled back to {fleet.wheel.name}, which is healthy again" in run.output, run.output
    assert installed_version(root) == "0.1.0"
    assert (root / "opt/hydro-gateway/release").read_text() == f"{fleet.wheel.name}\n"
    # Both wheels stay on the host: the next rollout (or another rollback) needs no download.
    wheels = sorted(p.name for p in (root / "opt/hydro-gateway/wheels").glob("*.whl"))
    assert wheels == sorted([fleet.wheel.name, bad.name])


def test_example_placeholders_are_never_deployed(fleet: Fleet) -> None:
    example = REPO / "ansible/vault.example.yml"
    run = playbook(fleet, "--limit", "gh-late", "-e", f"@{example}")
    assert run.code != 0
    assert "still the placeholders from vault.example.yml" in run.output
    assert "CHANGE-ME-admin-token" not in run.output
    assert not (fleet.roots["gh-late"] / "etc/hydro-gateway").exists()
