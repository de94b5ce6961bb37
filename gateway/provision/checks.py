"""Refuse to build a bundle from incomplete, mistyped or placeholder host variables (as validate.yml does)."""

from __future__ import annotations

import re

from gateway.provision.errors import ProvisionError
from gateway.provision.hostvars import HostVars

_PLACEHOLDER = re.compile(r"CHANGE-?ME", re.IGNORECASE)
_BOOLEANS = (
    "hydro_gateway_broker_allow_anonymous",
    "hydro_gateway_enable_i2c",
    "hydro_gateway_enable_serial",
    "hydro_gateway_is_raspberry_pi",
    "hydro_gateway_disable_swap",
    "hydro_gateway_noatime",
)
_CHOICES = {
    "hydro_gateway_mode": ("production", "demo"),
    "hydro_gateway_hardware_backend": ("real", "sim"),
}


def check_host(hv: HostVars) -> None:
    """Raise ProvisionError naming the first variable that is missing or wrong."""
    where = f"host {hv.host!r}"
    for name in ("hydro_gateway_greenhouse_uid", "hydro_gateway_id", "hydro_gateway_upstream_url"):
        if not isinstance(hv[name], str) or not hv[name]:
            raise ProvisionError(f"{name} is empty for {where}: set it in the inventory")
    if not re.match(r"https?://", hv.text("hydro_gateway_upstream_url")):
        raise ProvisionError(f"hydro_gateway_upstream_url of {where} must be an http(s) URL")
    for name, choices in _CHOICES.items():
        if hv[name] not in choices:
            raise ProvisionError(f"{name} of {where} must be one of {', '.join(choices)}, not {hv[name]!r}")
    for name in _BOOLEANS:
        if not isinstance(hv[name], bool):
            raise ProvisionError(f"{name} of {where} must be a YAML boolean (true/false), not {hv[name]!r}")
    if hv["hydro_gateway_broker_allow_anonymous"] and hv["hydro_gateway_mode"] == "production":
        raise ProvisionError(f"anonymous broker access is only allowed in demo mode ({where})")
    _check_secrets(hv, where)
    keys = hv["hydro_gateway_admin_ssh_keys"]
    if not isinstance(keys, list) or not keys:
        raise ProvisionError(
            f"hydro_gateway_admin_ssh_keys is empty for {where}: without a key nobody can log in to the Pi"
        )


def _check_secrets(hv: HostVars, where: str) -> None:
    """Tokens and node passwords are set and none is a vault.example.yml placeholder."""
    secrets: dict[str, object] = {
        "hydro_gateway_upstream_token": hv["hydro_gateway_upstream_token"],
        "hydro_gateway_admin_token": hv["hydro_gateway_admin_token"],
    }
    passwords = hv["hydro_gateway_node_passwords"]
    if not isinstance(passwords, dict):
        raise ProvisionError(f"hydro_gateway_node_passwords of {where} must map node uid -> password")
    secrets.update({f"hydro_gateway_node_passwords[{k!r}]": v for k, v in passwords.items()})
    if hv["hydro_gateway_wifi_ssid"]:
        secrets["hydro_gateway_wifi_password"] = hv["hydro_gateway_wifi_password"]
    for name, value in secrets.items():
        if not isinstance(value, str) or not value:
            raise ProvisionError(f"secret {name} is empty for {where}: set it in the host's vault file")
        if _PLACEHOLDER.search(value):
            raise ProvisionError(
                f"secret {name} of {where} is still the CHANGE-ME placeholder from vault.example.yml"
            )
