"""The per-greenhouse first-boot bundle: every file that goes onto the SD card's boot partition."""

from __future__ import annotations

import hashlib
import shlex
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.provision import cloudinit
from gateway.provision.checks import check_host
from gateway.provision.errors import ProvisionError
from gateway.provision.hostvars import HostVars
from gateway.provision.passwords import render_password_file
from gateway.provision.render import render_template
from gateway.provision.resources import Resources

BUNDLE_DIR = "hydro-gateway"
GATEWAY_WHEEL_PREFIX = "hydro_gateway-"


@dataclass(frozen=True)
class BundleFile:
    """One file of the bundle; secrets are written 0600 on the provisioning machine."""

    content: bytes
    secret: bool = False
    executable: bool = False


Bundle = Mapping[str, BundleFile]


def build_bundle(
    resources: Resources, hv: HostVars, wheels: Sequence[Path] = (), offline: bool = False
) -> dict[str, BundleFile]:
    """Build the bundle for one host: relative path on the boot partition -> file."""
    check_host(hv)
    package = _package(hv, wheels, offline)
    files: dict[str, BundleFile] = {}

    def add(name: str, content: str | bytes, secret: bool = False, executable: bool = False) -> None:
        data = content.encode() if isinstance(content, str) else content
        files[f"{BUNDLE_DIR}/{name}"] = BundleFile(data, secret, executable)

    add("gateway.toml", render_template(resources.template("gateway.toml.j2"), hv))
    add("boot-config.txt", render_template(resources.template("boot-config.txt.j2"), hv))
    add("install.env", _install_env(hv, package, offline))
    add("firstboot.sh", resources.firstboot_script.read_bytes(), executable=True)
    add("hydro-gateway.service", resources.unit_file.read_bytes())
    add("journald-hydro-gateway.conf", resources.journald_dropin.read_bytes())
    add("README.txt", _README)
    for wheel in wheels:
        add(f"wheels/{wheel.name}", wheel.read_bytes())
    add("secrets/upstream_token", hv.text("hydro_gateway_upstream_token"), secret=True)
    add("secrets/admin_token", hv.text("hydro_gateway_admin_token"), secret=True)
    add("secrets/mqtt_passwords", render_password_file(hv.string_map("hydro_gateway_node_passwords")), secret=True)

    firstboot = f"{hv['hydro_gateway_boot_dir']}/{BUNDLE_DIR}/firstboot.sh"
    instance_id = f"{hv['hydro_gateway_id']}-{_digest(files)}"
    files["user-data"] = BundleFile(cloudinit.user_data(hv, firstboot).encode())
    files["network-config"] = BundleFile(
        cloudinit.network_config(hv).encode(), secret=bool(hv["hydro_gateway_wifi_ssid"])
    )
    files["meta-data"] = BundleFile(cloudinit.meta_data(hv, instance_id).encode())
    return files


def write_bundle(bundle: Bundle, out: Path) -> None:
    """Write the bundle under ``out`` (a directory or a mounted boot partition), replacing an older one."""
    shutil.rmtree(out / BUNDLE_DIR, ignore_errors=True)
    for name, item in bundle.items():
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(item.content)
        path.chmod(0o600 if item.secret else 0o755 if item.executable else 0o644)


def _package(hv: HostVars, wheels: Sequence[Path], offline: bool) -> str:
    """What firstboot.sh installs: the bundled gateway wheel's file name, or the index requirement."""
    for wheel in wheels:
        if not wheel.is_file() or wheel.suffix != ".whl":
            raise ProvisionError(f"{wheel} is not a wheel file")
    gateway = [w for w in wheels if w.name.startswith(GATEWAY_WHEEL_PREFIX)]
    if len(gateway) > 1:
        raise ProvisionError(f"more than one gateway wheel given: {', '.join(w.name for w in gateway)}")
    if gateway:
        return gateway[0].name
    if wheels or offline:
        raise ProvisionError(
            "no hydro_gateway-*.whl among --wheel: build it with `pip wheel --no-deps -w dist .`"
        )
    return str(hv["hydro_gateway_package_spec"])


def _install_env(hv: HostVars, package: str, offline: bool) -> str:
    """Shell assignments for firstboot.sh (which lets HG_* variables from its environment win)."""

    def flag(name: str) -> str:
        return "1" if hv[name] else "0"

    values = {
        "HG_GATEWAY_ID": str(hv["hydro_gateway_id"]),
        "HG_PACKAGE": package,
        "HG_PIP_INDEX_URL": str(hv["hydro_gateway_pip_index_url"]),
        "HG_PIP_EXTRA_ARGS": str(hv["hydro_gateway_pip_extra_args"]),
        "HG_OFFLINE": "1" if offline else "0",
        "HG_PYTHON": str(hv["hydro_gateway_python"]),
        "HG_IS_RASPBERRY_PI": flag("hydro_gateway_is_raspberry_pi"),
        "HG_ENABLE_I2C": flag("hydro_gateway_enable_i2c"),
        "HG_ENABLE_SERIAL": flag("hydro_gateway_enable_serial"),
        "HG_DISABLE_SWAP": flag("hydro_gateway_disable_swap"),
        "HG_NOATIME": flag("hydro_gateway_noatime"),
        "HG_BOOT_DIR": str(hv["hydro_gateway_boot_dir"]),
        "HG_USER": str(hv["hydro_gateway_user"]),
        "HG_GROUP": str(hv["hydro_gateway_group"]),
        "HG_SUPPLEMENTARY_GROUPS": " ".join(hv.strings("hydro_gateway_supplementary_groups")),
    }
    lines = [f"{key}={shlex.quote(value)}" for key, value in values.items()]
    return "# Settings for firstboot.sh, generated by `hydro-gateway provision`.\n" + "\n".join(lines) + "\n"


def _digest(files: Mapping[str, BundleFile]) -> str:
    """A short hash of the non-secret files: same inputs, same instance id (secrets stay out of it)."""
    digest = hashlib.sha256()
    for name in sorted(files):
        if not files[name].secret:
            digest.update(name.encode() + b"\0" + files[name].content + b"\0")
    return digest.hexdigest()[:12]


_README = """\
hydro-gateway first-boot bundle (generated by `hydro-gateway provision`).

cloud-init (user-data beside this directory) runs firstboot.sh once on the first boot. It installs the
gateway, moves secrets/ to /etc/hydro-gateway (0640 root:hydro-gateway) and deletes them here, and
enables hydro-gateway.service. Log: /var/log/cloud-init-output.log. See docs/deploy.md.
"""
