"""Deployment fixtures: the project wheel, a small fleet inventory with a vault, staging roots, fake /healthz."""

from __future__ import annotations

import argparse
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.provision.cli import add_subparser
from gateway.settings import Settings, settings_from_mapping

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SSH_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGtestkeytestkeytestkeytestkeytestkey technician@test"
SECRETS = {
    "vault_hydro_gateway_upstream_token": "upstream-token-0001",
    "vault_hydro_gateway_admin_token": "admin-token-0001",
    "vault_hydro_gateway_node_passwords": {"nd-ph-1": "ph-secret", "nd-ec-1": "ec-secret"},
}


def provision(*argv: str | Path) -> int:
    """Run ``hydro-gateway provision ARGV`` in-process through its argparse entry point."""
    parser = argparse.ArgumentParser(prog="hydro-gateway")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["provision", *map(str, argv)])
    return int(args.func(args))


def tool(name: str) -> str:
    """An Ansible command: the one installed beside this interpreter, else the one on PATH."""
    beside = VENV_BIN / name
    found = str(beside) if beside.exists() else shutil.which(name)
    assert found, f"{name} is not installed (pip install ansible-core ansible-lint)"
    return found


def tool_env() -> dict[str, str]:
    """Environment for ansible/pip subprocesses: the project venv first on PATH."""
    return {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def one_host_inventory(base: Path, host: str, **host_vars: Any) -> tuple[Path, Path]:
    """An inventory with ``host`` alone in group greenhouses, and the secrets as a plain extra vars file."""
    entry = {"hydro_gateway_greenhouse_uid": host, "hydro_gateway_admin_ssh_keys": [SSH_KEY], **host_vars}
    inventory = base / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"greenhouses": {"hosts": {host: entry}}}}}))
    secrets = base / "secrets.yml"
    secrets.write_text(yaml.safe_dump(SECRETS))
    return inventory, secrets


def gateway_settings(config: Path, secrets_dir: Path) -> Settings:
    """Validate a generated gateway.toml with the gateway's own loader, its secret files read from ``secrets_dir``."""
    data = tomllib.loads(config.read_text())
    for section, key in (("broker", "password_file"), ("web", "admin_token_file"), ("upstream", "token_file")):
        data[section][key] = str(secrets_dir / Path(data[section][key]).name)
    return settings_from_mapping(data, str(config))


def make_pi_root(root: Path) -> Path:
    """A staging root holding the Raspberry Pi OS files the deployment edits."""
    (root / "boot/firmware").mkdir(parents=True)
    (root / "etc").mkdir(parents=True)
    (root / "boot/firmware/config.txt").write_text("# stock\ndtparam=audio=on\n[cm4]\notg_mode=1\n")
    (root / "boot/firmware/cmdline.txt").write_text(
        "console=serial0,115200 console=tty1 root=PARTUUID=1234-02 rootfstype=ext4 rootwait\n"
    )
    (root / "etc/fstab").write_text(
        "proc  /proc  proc  defaults  0  0\n"
        "PARTUUID=1234-01  /boot/firmware  vfat  defaults  0  2\n"
        "PARTUUID=1234-02  /  ext4  defaults  0  1\n"
    )
    return root


@pytest.fixture(scope="session")
def gateway_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project wheel, built once from a copy of the sources (the build writes into its source tree)."""
    return build_gateway_wheel(tmp_path_factory.mktemp("wheel"))


def build_gateway_wheel(base: Path, version: str | None = None) -> Path:
    """Build the project wheel from a copy of the sources into ``base/dist``, optionally renumbered."""
    src = base / "src"
    src.mkdir()
    pyproject = (REPO / "pyproject.toml").read_text()
    if version is not None:
        pyproject = re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', pyproject, count=1)
    (src / "pyproject.toml").write_text(pyproject)
    readme = REPO / "README.md"
    (src / "README.md").write_text(readme.read_text() if readme.exists() else "hydro-gateway\n")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("gateway", "drivers", "firmware_contracts", "sync"):
        shutil.copytree(REPO / package, src / package, ignore=ignore)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(base / "dist"), str(src)],
        check=True, env=tool_env(), capture_output=True,
    )
    (wheel,) = (base / "dist").glob("hydro_gateway-*.whl")
    return wheel


class HealthServer:
    """A stand-in for the gateway's /healthz on a free 127.0.0.1 port; ``status`` is what it answers,
    unless ``healthy_when`` is set: then 200 while it returns True, else 503."""

    def __init__(self) -> None:
        self.status = 200
        self.healthy_when: Callable[[], bool] | None = None
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status = owner.status
                if owner.healthy_when is not None:
                    status = 200 if owner.healthy_when() else 503
                code = status if self.path == "/healthz" else 404
                self.send_response(code)
                self.end_headers()
                self.wfile.write(b'{"status":"ok"}' if code == 200 else b'{"status":"failing"}')

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        """Stop serving and release the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@dataclass
class Fleet:
    """A three-greenhouse inventory next to an encrypted group vault, with one staging root per host."""

    base: Path
    wheel: Path
    inventory: Path = field(init=False)
    vault_password_file: Path = field(init=False)
    roots: dict[str, Path] = field(default_factory=dict)
    health: dict[str, HealthServer] = field(default_factory=dict)

    HOSTS = ("gh-sd", "gh-fresh", "gh-late", "gh-roll")

    def __post_init__(self) -> None:
        self.inventory = self.base / "inventory.yml"
        self.vault_password_file = self.base / "vault-password"
        self.vault_password_file.write_text("test-vault-password\n")
        hosts = {}
        for host in self.HOSTS:
            self.roots[host] = make_pi_root(self.base / "roots" / host)
            self.health[host] = HealthServer()
            hosts[host] = {
                "hydro_gateway_greenhouse_uid": host,
                "hydro_gateway_root": str(self.roots[host]),
                "hydro_gateway_web_port": self.health[host].port,
                "hydro_gateway_admin_ssh_keys": [SSH_KEY],
            }
        common = {
            "ansible_connection": "local",
            "ansible_python_interpreter": sys.executable,
            "ansible_become": False,
            # Staging-root mode: no packages, users, systemctl or reboots; secrets group root.
            "hydro_gateway_manage_system": False,
            "hydro_gateway_group": "root",
            "hydro_gateway_wheel": str(self.wheel),
            "hydro_gateway_python": sys.executable,
            "hydro_gateway_pip_extra_args": "--no-deps",
            "hydro_gateway_health_retries": 2,
            "hydro_gateway_health_delay": 1,
        }
        inventory = {"all": {"children": {"greenhouses": {"hosts": hosts, "vars": common}}}}
        self.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False))
        vault = self.base / "group_vars" / "greenhouses" / "vault.yml"
        vault.parent.mkdir(parents=True)
        vault.write_text(yaml.safe_dump(SECRETS))
        subprocess.run(
            [tool("ansible-vault"), "encrypt", "--vault-password-file",
             str(self.vault_password_file), str(vault)],
            check=True, capture_output=True, env=tool_env(),
        )

    def close(self) -> None:
        """Stop the health servers."""
        for server in self.health.values():
            server.close()


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory, gateway_wheel: Path) -> Iterator[Fleet]:
    """The shared fleet; the SD-card test provisions gh-sd's root, the Ansible test then manages it."""
    fleet = Fleet(tmp_path_factory.mktemp("fleet"), gateway_wheel)
    yield fleet
    fleet.close()


@pytest.fixture(scope="session")
def sd_provisioned(fleet: Fleet) -> Path:
    """gh-sd installed the SD-card way: provision a bundle, then run its firstboot.sh in the staging root."""
    bundle = fleet.base / "bundle-gh-sd"
    code = provision(
        "--inventory", fleet.inventory, "--host", "gh-sd", "--vault-password-file", fleet.vault_password_file,
        "--wheel", fleet.wheel, "--offline", "--out", bundle,
    )
    assert code == 0
    run_firstboot(bundle, fleet.roots["gh-sd"])
    return bundle


def run_firstboot(bundle: Path, root: Path) -> subprocess.CompletedProcess[str]:
    """Run the bundle's firstboot.sh against a staging root (no users, packages or systemctl)."""
    env = {**tool_env(), "HG_ROOT": str(root), "HG_MANAGE_SYSTEM": "0"}
    result = subprocess.run(
        ["bash", str(bundle / "hydro-gateway" / "firstboot.sh")], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result
