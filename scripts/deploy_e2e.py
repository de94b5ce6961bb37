#!/usr/bin/env python3
"""Boot what the technician flashes: the SD card path and the Ansible fleet path on real systemd Debian.

Run through ``scripts/deploy-e2e.sh`` as root (see docs/deploy.md, "End-to-end check on booted systems").
A Debian bookworm root file system built with mmdebstrap stands in for Raspberry Pi OS Lite and is booted
with ``systemd-nspawn --boot``; every container gets one private veth link (host 10.213.N.1, container
10.213.N.2) and nothing else. The wheels come from the host: the project wheel is built from this checkout,
its dependencies are downloaded/built into a wheelhouse on the host, and the containers never reach a
package index.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
PYTHON = Path(sys.executable)
VENV_BIN = PYTHON.parent
SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# Raspberry Pi OS Lite minus the Pi kernel/firmware: systemd, Python, cloud-init (Pi OS runs the
# first boot through cloud-init since Trixie, and the bundle's user-data relies on it), SSH, sudo.
# python3-lgpio is in the Raspberry Pi archive only; the containers run the simulated hardware backend.
# python3-apt: Ansible's apt module needs it on the target (Pi OS Lite ships it); without it the module
# tries to install it from a mirror, which an offline greenhouse does not have.
PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "cloud-init", "openssh-server",
    "sudo", "iproute2", "i2c-tools", "netbase", "ca-certificates", "python3-apt",
)
APT_PACKAGES = ["python3-venv", "i2c-tools"]
NET_PREFIX = "10.213"
# Stock Raspberry Pi OS boot files that the first boot and the role edit.
STOCK_CONFIG_TXT = "# Raspberry Pi OS stock config.txt (e2e stand-in)\ndtparam=audio=on\ncamera_auto_detect=1\n[all]\n"
STOCK_CMDLINE_TXT = (
    "console=serial0,115200 console=tty1 root=PARTUUID=4e639091-02 rootfstype=ext4 fsck.repair=yes rootwait\n"
)
UPSTREAM_TOKEN = "e2e-upstream-token"
ADMIN_TOKEN = "e2e-admin-token-0123456789"
NODE_PASSWORDS = {"nd-e2e-1": "node-one-password", "nd-e2e-2": "node-two-password"}
SECRETS: dict[str, Any] = {
    "vault_hydro_gateway_upstream_token": UPSTREAM_TOKEN,
    "vault_hydro_gateway_admin_token": ADMIN_TOKEN,
    "vault_hydro_gateway_node_passwords": NODE_PASSWORDS,
}
VAULT_PASSWORD = "e2e-vault-password"


# --------------------------------------------------------------------------------------------------
# Reporting


class Report:
    """Collects PASS/FAIL lines and the figures for the summary printed at the end."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.failed: list[str] = []
        self.start = time.monotonic()

    def log(self, message: str) -> None:
        """A progress line with the elapsed time."""
        print(f"[{time.monotonic() - self.start:7.1f}s] {message}", flush=True)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        """Record one check; a failed check does not stop the run (later checks still tell something)."""
        line = f"{'PASS' if ok else 'FAIL'}  {name}" + (f"  ({detail})" if detail else "")
        self.lines.append(line)
        if not ok:
            self.failed.append(name)
        self.log(line)
        return ok

    def note(self, line: str) -> None:
        """A figure or an explanation for the summary."""
        self.lines.append(f"NOTE  {line}")
        self.log(f"NOTE  {line}")


REPORT = Report()


def sh(*argv: str | Path, check: bool = True, capture: bool = True, timeout: float | None = None,
       env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command; with ``check`` a non-zero exit raises with its output."""
    result = subprocess.run(
        [str(a) for a in argv], capture_output=capture, text=True, timeout=timeout, env=env, cwd=cwd
    )
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


def wait_for(what: str, probe: Callable[[], Any], timeout: float, interval: float = 2.0) -> Any:
    """Poll ``probe`` until it returns something truthy; raise TimeoutError naming ``what``."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = probe()
            if value:
                return value
        except Exception as exc:
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error})")


def tool_env() -> dict[str, str]:
    """Environment for the project's tools: this checkout importable, the venv first on PATH."""
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_RETRY_FILES_ENABLED": "False",
    }


# --------------------------------------------------------------------------------------------------
# Wheels: the project and its dependencies, built on the host


@dataclass
class Wheels:
    """The project wheels (good, updated, broken) and one wheelhouse of dependencies per architecture."""

    dist: Path
    gateway: Path = field(init=False)
    update: Path = field(init=False)
    broken: Path = field(init=False)


def build_project_wheel(out: Path, version: str | None = None, broken: bool = False) -> Path:
    """Build hydro_gateway from a copy of this checkout; optionally renumbered or deliberately broken."""
    src = out / f"src-{version or 'current'}{'-broken' if broken else ''}"
    shutil.rmtree(src, ignore_errors=True)
    src.mkdir(parents=True)
    pyproject = (REPO / "pyproject.toml").read_text()
    if version:
        pyproject = re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', pyproject, count=1)
    (src / "pyproject.toml").write_text(pyproject)
    (src / "README.md").write_text((REPO / "README.md").read_text())
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("gateway", "drivers", "firmware_contracts", "sync"):
        shutil.copytree(REPO / package, src / package, ignore=ignore)
    if broken:
        # A release whose service starts and crashes before READY: it never answers /healthz.
        app = src / "gateway" / "app.py"
        app.write_text(app.read_text() + '\nraise RuntimeError("deliberately broken release (deploy e2e)")\n')
    dist = out / "dist"
    dist.mkdir(exist_ok=True)
    before = set(dist.glob("hydro_gateway-*.whl"))
    sh("nice", "-n", "10", PYTHON, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, src,
       env=tool_env())
    name_version = version or re.search(r'(?m)^version = "(.*)"$', pyproject).group(1)  # type: ignore[union-attr]
    wheel = dist / f"hydro_gateway-{name_version}-py3-none-any.whl"
    assert wheel.exists(), f"no wheel built in {dist} (had {before})"
    return wheel


def dependency_key() -> str:
    """The wheelhouse cache key: the dependency list of pyproject.toml."""
    text = (REPO / "pyproject.toml").read_text()
    deps = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    return hashlib.sha256(deps.encode()).hexdigest()[:12]


def build_wheelhouse(cache: Path, project_wheel: Path, arch: str) -> Path:
    """All dependency wheels for CPython 3.11 on ``arch`` (amd64 or arm64), cached by the dependency list.

    amd64: ``pip wheel`` on the host (sdists such as sdnotify are built here, into pure wheels).
    arm64: the pure wheels of the amd64 set plus binary aarch64 wheels downloaded per package, since pip
    cannot resolve for a foreign platform with sdists in the tree.
    """
    house = cache / f"wheelhouse-{arch}-{dependency_key()}"
    if (house / ".complete").exists():
        return house
    shutil.rmtree(house, ignore_errors=True)
    house.mkdir(parents=True)
    if arch == "amd64":
        sh("nice", "-n", "10", PYTHON, "-m", "pip", "wheel", "-q", "-w", house, project_wheel, env=tool_env(),
           timeout=1200)
        for own in house.glob("hydro_gateway-*.whl"):
            own.unlink()
    else:
        native = build_wheelhouse(cache, project_wheel, "amd64")
        platform_tags = ["manylinux_2_17_aarch64", "manylinux2014_aarch64", "manylinux_2_28_aarch64",
                         "manylinux_2_31_aarch64", "manylinux_2_34_aarch64", "linux_aarch64"]
        for wheel in sorted(native.glob("*.whl")):
            name, version = wheel.name.split("-")[:2]
            if wheel.name.endswith("-none-any.whl"):
                shutil.copy2(wheel, house)
                continue
            args: list[str | Path] = [PYTHON, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                                      "--python-version", "3.11", "--implementation", "cp", "-d", house]
            for tag in platform_tags:
                args += ["--platform", tag]
            sh(*args, f"{name}=={version}", env=tool_env(), timeout=600)
        # lgpio is a dependency on aarch64 only (gpiozero's pin backend on the Pi).
        args = [PYTHON, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                "--python-version", "3.11", "--implementation", "cp", "-d", house]
        for tag in platform_tags:
            args += ["--platform", tag]
        sh(*args, "lgpio>=0.2.2", env=tool_env(), timeout=600)
    (house / ".complete").write_text("")
    return house


# --------------------------------------------------------------------------------------------------
# The Raspberry Pi OS Lite stand-in


def customize_rootfs(root: Path) -> None:
    """What turns a Debian bootstrap into our stand-in for a freshly flashed Pi OS Lite card."""
    # The greenhouse image has no reachable mirror here: cloud-init's apt-get update then succeeds
    # with nothing to fetch and the packages are already installed, as on an image built offline.
    (root / "etc/apt/sources.list").write_text("# e2e stand-in: no package mirror inside the containers\n")
    for extra in (root / "etc/apt/sources.list.d").glob("*"):
        extra.unlink()
    # Pi OS reads the NoCloud seed (user-data, meta-data, network-config) from its FAT boot partition;
    # the container gets that partition as a bind-mounted directory, so NoCloud's local seed directory
    # points at the mount point (seedfrom: would skip network-config).
    (root / "etc/cloud/cloud.cfg.d/99_hydro_e2e_nocloud.cfg").write_text(
        "# e2e stand-in for Raspberry Pi OS: the NoCloud seed is on the boot partition\n"
        "datasource_list: [NoCloud, None]\n"
    )
    seed = root / "var/lib/cloud/seed"
    seed.mkdir(parents=True, exist_ok=True)
    (seed / "nocloud").symlink_to("/boot/firmware")
    (root / "etc/fstab").write_text(
        "proc            /proc           proc    defaults          0       0\n"
        "# /boot/firmware (the FAT partition) is bind-mounted by systemd-nspawn in the e2e stand-in, and\n"
        "# the root is an overlay: Pi OS has PARTUUID=...-02 / ext4 here, a device a container cannot see.\n"
        "overlay         /               overlay defaults          0       1\n"
    )
    (root / "etc/hostname").write_text("raspberrypi\n")
    (root / "boot/firmware").mkdir(parents=True, exist_ok=True)
    # The private veth link: networkd configures host0 from a per-container file (written at start).
    sh("systemctl", f"--root={root}", "enable", "systemd-networkd.service")
    # Pi OS Lite has no login prompt on the container console either; it only adds noise to the log.
    sh("systemctl", f"--root={root}", "mask", "console-getty.service")


def rootfs(cache: Path, arch: str) -> Path:
    """The unpacked, customised root file system for ``arch``, built once and cached."""
    # The bootstrap is keyed by its package list, the unpacked tree also by the customisation code.
    key = hashlib.sha256(json.dumps([SUITE, arch, PACKAGES]).encode()).hexdigest()[:12]
    tarball = cache / f"rootfs-{SUITE}-{arch}-{key}.tar"
    custom = Path(__file__).read_text().split("def customize_rootfs", 1)[1].split("def rootfs", 1)[0]
    base = cache / f"rootfs-{SUITE}-{arch}-{key}-{hashlib.sha256(custom.encode()).hexdigest()[:8]}"
    if (base / ".complete").exists():
        REPORT.log(f"rootfs {arch}: cached {base}")
        return base
    if not tarball.exists():
        REPORT.log(f"rootfs {arch}: mmdebstrap {SUITE} ({len(PACKAGES)} packages) ...")
        started = time.monotonic()
        partial = tarball.with_suffix(".partial.tar")
        sh("nice", "-n", "10", "mmdebstrap", "--variant=apt", f"--arch={arch}", "--include=" + ",".join(PACKAGES),
           SUITE, partial, MIRROR, timeout=3600)
        partial.rename(tarball)
        REPORT.note(f"rootfs {arch} built by mmdebstrap in {time.monotonic() - started:.0f}s ({tarball})")
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    sh("tar", "-C", base, "--numeric-owner", "-xpf", tarball)
    customize_rootfs(base)
    (base / ".complete").write_text("")
    # Older package lists or customisations of this architecture are dead weight (~1 GB each).
    for stale in cache.glob(f"rootfs-{SUITE}-{arch}-*"):
        if not stale.name.startswith(f"rootfs-{SUITE}-{arch}-{key}"):
            if stale.is_dir():
                shutil.rmtree(stale)
            else:
                stale.unlink()
        elif stale.is_dir() and stale != base:
            shutil.rmtree(stale)
    return base


# --------------------------------------------------------------------------------------------------
# Containers


class Machine:
    """One booted container: an overlay over the cached rootfs, a card directory at /boot/firmware,
    one veth link, and a supervisor that boots it again when it reboots (nspawn exits 133)."""

    def __init__(self, name: str, index: int, base: Path, work: Path, binds_ro: Sequence[tuple[Path, str]] = (),
                 emulated: bool = False):
        self.name = name
        # Under qemu-user, systemd-networkd (netlink), sysctl, sysusers and tmpfiles fail: the host
        # configures host0 inside the container's network namespace with its own native ip(8).
        self.emulated = emulated
        self.index = index
        self.base = base
        self.dir = work / name
        self.card = self.dir / "bootfs"
        self.merged = self.dir / "merged"
        self.binds_ro = list(binds_ro)
        self.host_ip = f"{NET_PREFIX}.{index}.1"
        self.ip = f"{NET_PREFIX}.{index}.2"
        self.ifname = f"ve-{name}"[:15]
        self.proc: subprocess.Popen[bytes] | None = None
        self.boots = 0
        self.stopping = False
        self.thread: threading.Thread | None = None
        self.log_path = self.dir / "console.log"

    def prepare(self) -> None:
        """Mount a fresh overlay, write the network file and the stock boot partition."""
        self.unmount()
        shutil.rmtree(self.dir, ignore_errors=True)
        for sub in ("upper", "work", "merged", "bootfs"):
            (self.dir / sub).mkdir(parents=True)
        sh("mount", "-t", "overlay", "overlay", "-o",
           f"lowerdir={self.base},upperdir={self.dir / 'upper'},workdir={self.dir / 'work'}", self.merged)
        network = self.merged / "etc/systemd/network/05-e2e-host0.network"
        network.write_text(
            f"[Match]\nName=host0\n\n[Network]\nAddress={self.ip}/24\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n"
        )
        (self.card / "config.txt").write_text(STOCK_CONFIG_TXT)
        (self.card / "cmdline.txt").write_text(STOCK_CMDLINE_TXT)

    def run_offline(self, script: str) -> None:
        """Run a shell script in the (not booted) root file system, e.g. to preset an account."""
        sh("systemd-nspawn", "-q", "--register=no", "--keep-unit", "-D", self.merged, "-M", self.name,
           "/bin/sh", "-ec", script, timeout=300)

    def boot(self) -> None:
        """Boot in the background; reboots from inside boot it again until stop()."""
        self.stopping = False
        self.thread = threading.Thread(target=self._supervise, name=f"nspawn-{self.name}", daemon=True)
        self.thread.start()
        wait_for(f"{self.name} to start systemd", self.leader, 120, 0.5)

    def _supervise(self) -> None:
        args = ["systemd-nspawn", "--boot", "--register=no", "--keep-unit", "--console=read-only",
                "-D", str(self.merged), "-M", self.name, "--network-veth", f"--bind={self.card}:/boot/firmware"]
        for host_path, path in self.binds_ro:
            args.append(f"--bind-ro={host_path}:{path}")
        while not self.stopping:
            self.boots += 1
            with self.log_path.open("ab") as log:
                log.write(f"\n=== boot {self.boots} ===\n".encode())
                log.flush()
                self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
                with suppress(Exception):
                    wait_for(f"{self.ifname}", self._configure_link, 60, 0.2)
                code = self.proc.wait()
            if code != 133:  # 133: the container asked to be rebooted
                break
        self.proc = None

    def _configure_link(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            return True
        if sh("ip", "link", "show", self.ifname, check=False).returncode != 0:
            return False
        sh("ip", "addr", "replace", f"{self.host_ip}/24", "dev", self.ifname)
        sh("ip", "link", "set", self.ifname, "up")
        if self.emulated:
            pid = self.leader()
            if pid is None:
                return False
            inside = ("nsenter", "-t", str(pid), "-n", "ip")
            sh(*inside, "addr", "replace", f"{self.ip}/24", "dev", "host0")
            sh(*inside, "link", "set", "host0", "up")
        return True

    def leader(self) -> int | None:
        """PID (on the host) of the container's systemd, or None while it is not running."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return None
        children = sh("pgrep", "-P", str(proc.pid), check=False).stdout.split()
        return int(children[0]) if children else None

    def run(self, *argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run a command inside the booted container (all its namespaces)."""
        pid = self.leader()
        if pid is None:
            raise RuntimeError(f"{self.name} is not running")
        return sh("nsenter", "-t", str(pid), "-a", *argv, check=check, timeout=timeout)

    def is_running(self) -> bool:
        """systemd inside is up far enough to answer."""
        try:
            state = self.run("systemctl", "is-system-running", check=False, timeout=20).stdout.strip()
        except Exception:
            return False
        return state in ("running", "degraded")

    def boot_id(self) -> str:
        """The container's boot id (nspawn gives every boot its own)."""
        return self.run("cat", "/proc/sys/kernel/random/boot_id").stdout.strip()

    def reboot(self) -> None:
        """Reboot from inside and wait until the next boot's systemd answers."""
        before = self.boots
        self.run("systemctl", "reboot", check=False)
        wait_for(f"{self.name} to boot again", lambda: self.boots > before and self.leader(), 180, 0.5)

    def stop(self) -> None:
        """Power off and unmount."""
        self.stopping = True
        if self.leader() is not None:
            with suppress(Exception):
                self.run("systemctl", "poweroff", check=False, timeout=30)
        proc = self.proc
        if proc is not None:
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGTERM)
                with suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=30)
                if proc.poll() is None:
                    proc.kill()
        if self.thread is not None:
            self.thread.join(timeout=30)
        self.unmount()

    def unmount(self) -> None:
        """Unmount the overlay if mounted."""
        if self.merged.exists() and os.path.ismount(self.merged):
            sh("umount", "-l", self.merged, check=False)

    def http(self, path: str, token: str | None = None, timeout: float = 5) -> tuple[int, str]:
        """GET http://<container>:8080<path> from the host over the veth link."""
        request = urllib.request.Request(f"http://{self.ip}:8080{path}")
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def healthy(self) -> bool:
        """/healthz answers 200 from outside."""
        try:
            return self.http("/healthz")[0] == 200
        except OSError:
            return False

    def service(self, *props: str) -> dict[str, str]:
        """``systemctl show hydro-gateway`` properties."""
        out = self.run("systemctl", "show", "hydro-gateway", "-p", ",".join(props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def installed_version(self) -> str:
        """Version of hydro-gateway in the service's virtualenv."""
        out = self.run("/opt/hydro-gateway/venv/bin/python", "-c",
                       "import importlib.metadata as m; print(m.version('hydro-gateway'))", check=False).stdout
        return out.strip()

    def journal(self, unit: str = "hydro-gateway", lines: int = 60) -> str:
        """The unit's journal of this boot."""
        return self.run("journalctl", "-u", unit, "-b", "--no-pager", "-n", str(lines), check=False).stdout


@contextmanager
def machines(*items: Machine) -> Iterator[None]:
    """Stop the machines whatever happens."""
    try:
        yield
    finally:
        for machine in items:
            with suppress(Exception):
                machine.stop()


# --------------------------------------------------------------------------------------------------
# Inventory, vault, SSH key


@dataclass
class Inventory:
    """A fleet inventory for the e2e hosts next to its encrypted vault (group_vars/greenhouses)."""

    dir: Path
    ssh_key: Path
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.dir / "inventory.yml"

    @property
    def vault_password_file(self) -> Path:
        return self.dir / "vault-password"

    def write(self) -> None:
        """Write inventory.yml, the vault password file and the encrypted vault."""
        self.dir.mkdir(parents=True, exist_ok=True)
        self.vault_password_file.write_text(VAULT_PASSWORD + "\n")
        self.vault_password_file.chmod(0o600)
        self.path.write_text(yaml.safe_dump({"all": {"children": {"greenhouses": {"hosts": self.hosts}}}},
                                            sort_keys=False))
        vault = self.dir / "group_vars" / "greenhouses" / "vault.yml"
        vault.parent.mkdir(parents=True, exist_ok=True)
        vault.write_text(yaml.safe_dump(SECRETS))
        sh(VENV_BIN / "ansible-vault", "encrypt", "--vault-password-file", self.vault_password_file, vault,
           env=tool_env())


def host_entry(name: str, machine: Machine, ssh_pub: str, **extra: Any) -> dict[str, Any]:
    """Inventory variables of one container greenhouse."""
    return {
        "ansible_host": machine.ip,
        "hydro_gateway_greenhouse_uid": name,
        "hydro_gateway_id": f"gw-{name}",
        # No HAT in a container: the simulated relays/INA209; and Debian has no python3-lgpio.
        "hydro_gateway_hardware_backend": "sim",
        "hydro_gateway_apt_packages": APT_PACKAGES,
        "hydro_gateway_admin_ssh_keys": [ssh_pub],
        **extra,
    }


# --------------------------------------------------------------------------------------------------
# MQTT from outside


def mqtt_connect(host: str, client_id: str, username: str | None, password: str | None) -> tuple[Any, Any]:
    """Connect a paho client; return (reason code of CONNACK, connected client or None)."""
    import queue

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    if username is not None:
        client.username_pw_set(username, password)
    connack: queue.Queue[Any] = queue.Queue()
    client.on_connect = lambda _c, _u, _f, reason, _p: connack.put(reason)
    client.connect(host, 1883, keepalive=30)
    client.loop_start()
    try:
        reason = connack.get(timeout=15)
    except queue.Empty:
        reason = "no CONNACK"
    if getattr(reason, "is_failure", True):
        client.loop_stop()
        client.disconnect()
        return reason, None
    return reason, client


def mqtt_checks(machine: Machine) -> None:
    """A node with its password connects and publishes (QoS 1 acknowledged, the gateway registers it);
    an anonymous client and a wrong password are refused."""
    node = "nd-e2e-1"
    hello = json.loads((REPO / "firmware_contracts/examples/node_hello/minimal_seed_002.json").read_text())
    hello["hardware_id"] = "esp32-E2E000000001"
    reason, client = mqtt_connect(machine.ip, node, node, NODE_PASSWORDS[node])
    if not REPORT.check("MQTT: node with its password connects", client is not None, f"CONNACK {reason}"):
        return
    info = client.publish("hydro/node_hello", json.dumps(hello).encode(), qos=1)
    info.wait_for_publish(timeout=15)
    REPORT.check("MQTT: node publishes node_hello, QoS 1 acknowledged", info.is_published())
    client.loop_stop()
    client.disconnect()
    token = ADMIN_TOKEN

    def registered() -> bool:
        status, body = machine.http("/api/status", token=token)
        return status == 200 and json.loads(body)["nodes"]["total"] >= 1

    try:
        wait_for("the node to appear in /api/status", registered, 60)
        REPORT.check("MQTT: gateway registered the node (/api/status nodes.total >= 1)", True)
    except TimeoutError as exc:
        REPORT.check("MQTT: gateway registered the node (/api/status nodes.total >= 1)", False, str(exc))
    reason, client = mqtt_connect(machine.ip, "anonymous-e2e", None, None)
    REPORT.check("MQTT: anonymous client refused", client is None, f"CONNACK {reason}")
    reason, client = mqtt_connect(machine.ip, node, node, "wrong-password")
    REPORT.check("MQTT: wrong password refused", client is None, f"CONNACK {reason}")


# --------------------------------------------------------------------------------------------------
# The card path


def card_path(work: Path, base: Path, wheels: Wheels, house: Path, arch: str, index: int, ssh_pub: str,
              full: bool) -> None:
    """Provision a card, boot it, and check the running gateway from outside."""
    tag = f"card[{arch}]"
    name = f"gh-e2e-{arch}"
    emulated = arch != native_arch()
    machine = Machine(f"hge2e-{arch}"[:12], index, base, work, emulated=emulated)
    inventory = Inventory(work / f"inventory-card-{arch}", work / "ssh" / "id_ed25519")
    inventory.hosts[name] = host_entry(name, machine, ssh_pub)
    inventory.write()
    with machines(machine):
        machine.prepare()
        dependency_wheels = sorted(house.glob("*.whl"))
        started = time.monotonic()
        sh(PYTHON, "-m", "gateway", "provision", "--inventory", inventory.path, "--host", name,
           "--vault-password-file", inventory.vault_password_file, "--wheel", wheels.gateway,
           *[arg for w in dependency_wheels for arg in ("--wheel", str(w))], "--offline", "--out", machine.card,
           env=tool_env(), cwd=REPO)
        REPORT.log(f"{tag}: bundle written to the card ({len(dependency_wheels)} dependency wheels); booting")
        boot_started = time.monotonic()
        machine.boot()
        try:
            wait_for(f"{tag} gateway healthy from outside", machine.healthy, 1800 if emulated else 600, 2)
        except TimeoutError as exc:
            REPORT.check(f"{tag}: first boot reaches a healthy gateway", False, str(exc))
            print(machine.run("cat", "/var/log/cloud-init-output.log", check=False).stdout[-6000:])
            print(machine.journal())
            return
        REPORT.check(f"{tag}: first boot reaches a healthy gateway", True,
                     f"{time.monotonic() - boot_started:.0f}s from power-on to /healthz 200, "
                     f"{machine.boots} boot(s), provision+boot {time.monotonic() - started:.0f}s")
        REPORT.note(f"{tag}: boot time to healthy {time.monotonic() - boot_started:.0f}s "
                    f"(first boot runs cloud-init + firstboot.sh, reboots once for config.txt)")
        wait_for(f"{tag} cloud-init to finish", lambda: "status: running" not in machine.run(
            "cloud-init", "status", check=False).stdout, 300)
        ci = machine.run("cloud-init", "status", "--long", check=False)
        REPORT.check(f"{tag}: cloud-init status done", "status: done" in ci.stdout,
                     ci.stdout.strip().splitlines()[0] if ci.stdout.strip() else ci.stderr.strip())
        active = machine.run("systemctl", "is-active", "hydro-gateway", check=False).stdout.strip()
        REPORT.check(f"{tag}: systemctl is-active hydro-gateway", active == "active", active)
        failed = machine.run("systemctl", "--failed", "--no-legend", "--plain", check=False).stdout.strip()
        if emulated:
            # Not the gateway's: these need syscalls/netlink that qemu-user does not emulate.
            units = [line.split()[0] for line in failed.splitlines() if line.strip()]
            REPORT.check(f"{tag}: hydro-gateway not among the failed units", "hydro-gateway.service" not in units)
            if units:
                REPORT.note(f"{tag}: failed under qemu-user emulation (not on a real Pi): {', '.join(units)}")
        else:
            REPORT.check(f"{tag}: no failed units", not failed, failed.replace("\n", "; "))
        machine_arch = machine.run("uname", "-m").stdout.strip()
        REPORT.check(f"{tag}: gateway runs on {machine_arch}", True,
                     f"hydro-gateway {machine.installed_version()} in /opt/hydro-gateway/venv")
        secrets_checks(machine, tag)
        if not full:
            mqtt_checks(machine)
            return
        watchdog_checks(machine, tag)
        mqtt_checks(machine)
        reboot_checks(machine, tag)


def secrets_checks(machine: Machine, tag: str) -> None:
    """Secrets 0640 root:hydro-gateway in /etc/hydro-gateway, unreadable to others, gone from the card."""
    stat = machine.run("stat", "-c", "%n %a %U:%G", "/etc/hydro-gateway/upstream_token",
                       "/etc/hydro-gateway/admin_token", "/etc/hydro-gateway/mqtt_passwords").stdout.split("\n")
    bad = [line for line in stat if line and not line.endswith(" 640 root:hydro-gateway")]
    REPORT.check(f"{tag}: secrets 0640 root:hydro-gateway on disk", not bad, "; ".join(stat).strip("; "))
    other = machine.run("runuser", "-u", "nobody", "--", "cat", "/etc/hydro-gateway/admin_token", check=False)
    REPORT.check(f"{tag}: another user cannot read the secrets", other.returncode != 0, other.stderr.strip())
    leftovers = [p for p in machine.card.rglob("*") if p.is_file()
                 and any(s.encode() in p.read_bytes() for s in (UPSTREAM_TOKEN, ADMIN_TOKEN))]
    gone = not (machine.card / "hydro-gateway" / "secrets").exists() and not leftovers
    REPORT.check(f"{tag}: secrets gone from the boot partition", gone,
                 ", ".join(str(p.relative_to(machine.card)) for p in leftovers) or "no secrets/ directory, no token")


def watchdog_checks(machine: Machine, tag: str) -> None:
    """The gateway pets the systemd watchdog; a stalled (SIGSTOPped) gateway is killed and restarted."""
    props = machine.service("WatchdogUSec", "WatchdogTimestampMonotonic", "MainPID", "NRestarts", "Type")
    first = int(props["WatchdogTimestampMonotonic"])
    time.sleep(12)
    props2 = machine.service("WatchdogTimestampMonotonic", "MainPID")
    REPORT.check(f"{tag}: Type=notify unit pets its watchdog", props["Type"] == "notify"
                 and int(props2["WatchdogTimestampMonotonic"]) > first > 0,
                 f"WatchdogUSec={props['WatchdogUSec']}, last ping advanced "
                 f"{(int(props2['WatchdogTimestampMonotonic']) - first) / 1e6:.1f}s in 12s")
    pid = props2["MainPID"]
    restarts = int(props["NRestarts"])
    stalled = time.monotonic()
    machine.run("kill", "-STOP", pid)

    def restarted() -> bool:
        now = machine.service("MainPID", "NRestarts", "ActiveState")
        return now["MainPID"] not in ("0", pid) and int(now["NRestarts"]) > restarts and now["ActiveState"] == "active"

    try:
        wait_for("systemd to restart the stalled gateway", restarted, 180, 1)
        wait_for("the restarted gateway to be healthy", machine.healthy, 180)
        journal = machine.journal(lines=200)
        REPORT.check(f"{tag}: stalled process (SIGSTOP) killed by the watchdog and restarted",
                     "Watchdog timeout" in journal,
                     f"healthy again {time.monotonic() - stalled:.0f}s after SIGSTOP; journal: "
                     + next((line.split(": ", 1)[-1] for line in journal.splitlines() if "Watchdog timeout" in line),
                            "no 'Watchdog timeout' line"))
    except TimeoutError as exc:
        REPORT.check(f"{tag}: stalled process (SIGSTOP) killed by the watchdog and restarted", False, str(exc))


def reboot_checks(machine: Machine, tag: str) -> None:
    """A reboot brings the gateway back by itself; the database survives; the journal stays in RAM."""
    boot_before = machine.boot_id()
    started = time.monotonic()
    machine.reboot()
    try:
        wait_for(f"{tag} healthy after reboot", machine.healthy, 300)
    except TimeoutError as exc:
        REPORT.check(f"{tag}: reboot brings the gateway back", False, str(exc))
        return
    active = machine.run("systemctl", "is-active", "hydro-gateway", check=False).stdout.strip()
    REPORT.check(f"{tag}: reboot brings the gateway back", active == "active" and machine.boot_id() != boot_before,
                 f"healthy {time.monotonic() - started:.0f}s after reboot, new boot id")
    status, body = machine.http("/api/status", token=ADMIN_TOKEN)
    total = json.loads(body)["nodes"]["total"] if status == 200 else None
    REPORT.check(f"{tag}: registered node survives the reboot (SQLite on the card)", bool(total),
                 f"nodes.total={total}")
    persistent = bool(machine.run("find", "/var/log/journal", "-type", "f", check=False).stdout.strip())
    volatile = machine.run("test", "-d", "/run/log/journal", check=False).returncode == 0
    REPORT.check(f"{tag}: journal in RAM only (SD wear)", volatile and not persistent,
                 f"/run/log/journal {'present' if volatile else 'MISSING'}, "
                 f"/var/log/journal {'HAS FILES' if persistent else 'empty'}")
    options = machine.run("findmnt", "-n", "-o", "OPTIONS", "/").stdout.strip()
    REPORT.check(f"{tag}: root file system mounted noatime (SD wear)", "noatime" in options.split(","), options)


# --------------------------------------------------------------------------------------------------
# The fleet path


RECAP = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)


def playbook(inventory: Inventory, log: Path, *extra: str) -> tuple[int, dict[str, dict[str, int]], str]:
    """Run the rollout playbook; return (exit code, per-host recap, output)."""
    # Straight into the log file, so a long run can be followed with tail -f.
    with log.open("w") as out:
        code = subprocess.run(
            [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory.path), str(REPO / "ansible" / "playbook.yml"),
             "--vault-password-file", str(inventory.vault_password_file), *extra],
            stdout=out, stderr=subprocess.STDOUT, env=tool_env(), cwd=REPO / "ansible", timeout=3600,
        ).returncode
    output = log.read_text()
    recap = {m[1]: {"ok": int(m[2]), "changed": int(m[3]), "unreachable": int(m[4]), "failed": int(m[5])}
             for m in RECAP.finditer(output)}
    return code, recap, output


def fleet_path(work: Path, base: Path, wheels: Wheels, house: Path, ssh_key: Path, ssh_pub: str, count: int) -> None:
    """Two booted Pis without the gateway: install, rerun (changed=0), update, broken update rolled back."""
    fleet = [Machine(f"hge2e-f{i}", 10 + i, base, work, binds_ro=[(house, "/srv/hydro-wheelhouse")])
             for i in range(1, count + 1)]
    names = {m.name: f"gh-e2e-f{i}" for i, m in enumerate(fleet, 1)}
    inventory = Inventory(work / "inventory-fleet", ssh_key)
    for machine in fleet:
        inventory.hosts[names[machine.name]] = host_entry(
            names[machine.name], machine, ssh_pub,
            ansible_ssh_private_key_file=str(ssh_key),
            ansible_ssh_common_args="-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
            ansible_python_interpreter="/usr/bin/python3",
            # The wheelhouse built on the host stands in for the greenhouse's package index.
            hydro_gateway_pip_extra_args="--no-index --find-links /srv/hydro-wheelhouse",
            hydro_gateway_health_retries=24,
            hydro_gateway_health_delay=5,
        )
    inventory.write()
    with machines(*fleet):
        for machine in fleet:
            machine.prepare()
            # A Pi flashed with Imager's customisation: the technician account with the SSH key, no
            # first-boot bundle (cloud-init has nothing to do).
            machine.run_offline(
                "useradd -m -s /bin/bash -G sudo gwadmin && passwd -l gwadmin >/dev/null && "
                "install -d -m 700 -o gwadmin -g gwadmin /home/gwadmin/.ssh && "
                f"echo '{ssh_pub}' > /home/gwadmin/.ssh/authorized_keys && "
                "chown gwadmin:gwadmin /home/gwadmin/.ssh/authorized_keys && "
                "echo 'gwadmin ALL=(ALL) NOPASSWD:ALL' > /etc/sudoers.d/gwadmin && "
                "touch /etc/cloud/cloud-init.disabled"
            )
            machine.boot()
        for machine in fleet:
            wait_for(f"{machine.name} systemd up", machine.is_running, 180)
        REPORT.log(f"fleet: {len(fleet)} Pis booted; first rollout (batch 1)")
        hosts = list(names.values())
        wheel_arg = f"hydro_gateway_wheel={wheels.gateway}"
        started = time.monotonic()
        code, recap, output = playbook(inventory, work / "ansible-1-install.log", "-e", wheel_arg,
                                       "-e", "hydro_gateway_rollout_batch=1")
        healthy = [m.name for m in fleet if m.healthy()]
        REPORT.check("fleet: first run installs the gateway on every Pi", code == 0 and len(healthy) == len(fleet),
                     f"rc={code}, {time.monotonic() - started:.0f}s, recap {recap}, healthy {healthy}")
        if code != 0:
            print(output[-8000:])
            return
        for machine in fleet:
            active = machine.run("systemctl", "is-active", "hydro-gateway", check=False).stdout.strip()
            REPORT.check(f"fleet: {names[machine.name]} hydro-gateway active after the first run", active == "active",
                         f"{machine.boots} boot(s) (config.txt changed: the role rebooted it)")
        code, recap, output = playbook(inventory, work / "ansible-2-rerun.log", "-e", wheel_arg)
        changed = {h: recap.get(h, {}).get("changed") for h in hosts}
        REPORT.check("fleet: second run on running Pis reports changed=0", code == 0 and set(changed.values()) == {0},
                     f"rc={code}, " + ", ".join(f"{h} changed={c}" for h, c in changed.items()))
        if code != 0 or set(changed.values()) != {0}:
            print(output[-6000:])
        pids = {m.name: m.service("MainPID")["MainPID"] for m in fleet}

        # A good new release, one Pi at a time with the health gate.
        update_arg = f"hydro_gateway_wheel={wheels.update}"
        code, recap, output = playbook(inventory, work / "ansible-3-update.log", "-e", update_arg,
                                       "-e", "hydro_gateway_rollout_batch=1")
        versions = {names[m.name]: m.installed_version() for m in fleet}
        restarted = all(m.service("MainPID")["MainPID"] != pids[m.name] for m in fleet)
        REPORT.check("fleet: rolling update to a new wheel passes the health gate on every Pi",
                     code == 0 and set(versions.values()) == {"0.1.1"} and restarted
                     and all(m.healthy() for m in fleet),
                     f"rc={code}, versions {versions}, services restarted={restarted}")
        if code != 0:
            print(output[-6000:])

        # A broken release: the first Pi fails its health gate, is rolled back, the rollout stops.
        broken_arg = f"hydro_gateway_wheel={wheels.broken}"
        started = time.monotonic()
        code, recap, output = playbook(inventory, work / "ansible-4-broken.log", "-e", broken_arg,
                                       "-e", "hydro_gateway_rollout_batch=1")
        first, *rest = fleet
        versions = {names[m.name]: m.installed_version() for m in fleet}
        REPORT.check("fleet: broken release fails the rollout", code != 0,
                     f"rc={code}, {time.monotonic() - started:.0f}s, recap {recap}")
        rolled_back = "rolled back" in output
        REPORT.check(f"fleet: {names[first.name]} rolled back to the previous release and healthy",
                     versions[names[first.name]] == "0.1.1" and first.healthy() and rolled_back,
                     f"version {versions[names[first.name]]}, healthz "
                     f"{'200' if first.healthy() else 'not 200'}; "
                     + next((line.strip() for line in output.splitlines() if "rolled back" in line),
                            "no rollback message"))
        untouched = all(names[m.name] not in recap and versions[names[m.name]] == "0.1.1" for m in rest)
        REPORT.check("fleet: rollout stopped after the first Pi (the others never got the broken wheel)", untouched,
                     ", ".join(f"{names[m.name]} {versions[names[m.name]]}, in recap: {names[m.name] in recap}"
                               for m in rest))
        if code == 0 or not rolled_back:
            print(output[-8000:])


# --------------------------------------------------------------------------------------------------


def native_arch() -> str:
    """The host's Debian architecture name."""
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def binfmt_arm64() -> str | None:
    """None when aarch64 binaries run here (qemu-user-static via binfmt_misc), else why not."""
    if platform.machine() == "aarch64":
        return None
    if not Path("/usr/bin/qemu-aarch64-static").exists():
        return "qemu-user-static is not installed (apt-get install qemu-user-static binfmt-support)"
    misc = Path("/proc/sys/fs/binfmt_misc")
    if not (misc / "status").exists():
        result = sh("mount", "-t", "binfmt_misc", "binfmt_misc", misc, check=False)
        if result.returncode != 0:
            return f"cannot mount binfmt_misc: {result.stderr.strip()}"
    if not (misc / "qemu-aarch64").exists():
        result = sh("update-binfmts", "--enable", "qemu-aarch64", check=False)
        if result.returncode != 0 or not (misc / "qemu-aarch64").exists():
            return f"cannot register the qemu-aarch64 binfmt handler: {(result.stderr or result.stdout).strip()}"
    flags = (misc / "qemu-aarch64").read_text()
    if "flags: " in flags and "F" not in flags.split("flags: ", 1)[1].split("\n", 1)[0]:
        return "the qemu-aarch64 binfmt handler is registered without the F flag (unusable inside containers)"
    return None


def preflight() -> None:
    """Root, the tools, overlayfs; fail early with the exact reason."""
    if os.geteuid() != 0:
        raise SystemExit("deploy-e2e: must run as root (systemd-nspawn, mounts, veth links)")
    for tool in ("systemd-nspawn", "mmdebstrap", "nsenter", "ip"):
        if shutil.which(tool) is None:
            raise SystemExit(f"deploy-e2e: {tool} is missing (scripts/setup.sh e2e installs it)")
    if "overlay" not in Path("/proc/filesystems").read_text():
        sh("modprobe", "overlay", check=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the card path (amd64, then arm64 under qemu) and the fleet path; print the summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cache", type=Path,
                        default=Path(os.environ.get("HYDRO_E2E_CACHE", "/var/cache/hydro-deploy-e2e")))
    parser.add_argument("--only", choices=["card", "fleet", "arm64"], action="append",
                        help="run only these parts (repeatable); default: all")
    parser.add_argument("--work", type=Path, help="work directory of this run (default: CACHE/run, emptied first)")
    parser.add_argument("--fleet-size", type=int, default=2)
    parser.add_argument("--no-arm64", action="store_true", help="skip the arm64 boot")
    args = parser.parse_args(argv)
    parts = set(args.only or ["card", "fleet", "arm64"])
    if args.no_arm64:
        parts.discard("arm64")
    preflight()

    def terminated(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through machines(): containers stopped, overlays unmounted

    signal.signal(signal.SIGTERM, terminated)
    cache: Path = args.cache
    work: Path = args.work or cache / "run"
    # Leftovers of an interrupted run: unmount overlays before removing them.
    if work.exists():
        for merged in work.glob("*/merged"):
            if os.path.ismount(merged):
                sh("umount", "-l", merged, check=False)
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ssh_key = work / "ssh" / "id_ed25519"
    ssh_key.parent.mkdir()
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "technician@deploy-e2e", "-f", ssh_key)
    ssh_pub = ssh_key.with_suffix(".pub").read_text().strip()

    REPORT.log("building the project wheels (current, update 0.1.1, broken 0.1.2) and the wheelhouse")
    wheels = Wheels(work / "wheels")
    wheels.dist.mkdir(parents=True)
    wheels.gateway = build_project_wheel(wheels.dist)
    house = build_wheelhouse(cache, wheels.gateway, "amd64")
    REPORT.note(f"wheelhouse amd64: {len(list(house.glob('*.whl')))} dependency wheels ({house})")
    try:
        if "card" in parts or "fleet" in parts:
            base = rootfs(cache, "amd64")
        if "card" in parts:
            card_path(work, base, wheels, house, "amd64", 1, ssh_pub, full=True)
        if "fleet" in parts:
            wheels.update = build_project_wheel(wheels.dist, "0.1.1")
            wheels.broken = build_project_wheel(wheels.dist, "0.1.2", broken=True)
            fleet_path(work, base, wheels, house, ssh_key, ssh_pub, args.fleet_size)
        if "arm64" in parts:
            reason = binfmt_arm64()
            if reason:
                REPORT.note(f"arm64: NOT RUN - {reason}; only the native boot was checked")
            else:
                house_arm = build_wheelhouse(cache, wheels.gateway, "arm64")
                base_arm = rootfs(cache, "arm64")
                card_path(work, base_arm, wheels, house_arm, "arm64", 2, ssh_pub, full=False)
    except Exception as exc:
        REPORT.check("run completed", False, f"{type(exc).__name__}: {exc}")
    print("\n==== deploy-e2e summary ====")
    for line in REPORT.lines:
        print(line)
    passed = sum(line.startswith("PASS") for line in REPORT.lines)
    print(f"{passed} passed, {len(REPORT.failed)} failed, {time.monotonic() - REPORT.start:.0f}s; logs in {work}")
    return 1 if REPORT.failed else 0


if __name__ == "__main__":
    sys.exit(main())
