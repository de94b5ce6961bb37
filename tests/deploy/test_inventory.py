"""Provisioning reads a host's variables from the Ansible inventory with Ansible's precedence and vault."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.provision.errors import ProvisionError
from gateway.provision.hostvars import HostVars
from gateway.provision.inventory import host_layers
from gateway.provision.vault import Vault
from tests.deploy.conftest import tool, tool_env


def write(path: Path, data: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


@pytest.fixture
def layout(tmp_path: Path) -> dict[str, Path]:
    """An inventory dir, a playbook dir and a role, each setting the variable ``level`` and its own marker."""
    inv_dir, play_dir, role = tmp_path / "inv", tmp_path / "play", tmp_path / "role"
    write(role / "defaults/main.yml", {"level": "role defaults", "only_default": 1, "port": 8080})
    write(role / "vars/main.yml", {"fixed": "role vars"})
    inventory = write(inv_dir / "inventory.yml", {
        "all": {
            "vars": {"level": "inventory all", "from_all": True},
            "children": {
                "greenhouses": {
                    "vars": {"level": "inventory greenhouses", "fixed": "inventory"},
                    "children": {"north": {"vars": {"level": "inventory north"}, "hosts": {"gh-1": None}}},
                    "hosts": {"gh-2": {"level": "inventory host gh-2"}},
                }
            },
        }
    })
    return {"inventory": inventory, "inv_dir": inv_dir, "play_dir": play_dir, "role": role}


def load(layout: dict[str, Path], host: str, extra: tuple[Path, ...] = (), vault: Vault | None = None) -> HostVars:
    vault = vault or Vault(None)
    raw = host_layers(layout["inventory"], host, vault, layout["role"], layout["play_dir"], extra)
    return HostVars(host, raw, vault)


def test_deeper_inventory_groups_override_shallower_ones(layout: dict[str, Path]) -> None:
    hv = load(layout, "gh-1")
    assert hv["level"] == "inventory north"
    assert hv["from_all"] is True
    assert hv["only_default"] == 1
    assert hv["group_names"] == ["greenhouses", "north"]
    assert hv["inventory_hostname"] == "gh-1"


def test_layers_apply_in_ansible_precedence_order(layout: dict[str, Path]) -> None:
    assert load(layout, "gh-2")["level"] == "inventory host gh-2"
    write(layout["inv_dir"] / "group_vars/greenhouses.yml", {"level": "inventory group_vars"})
    assert load(layout, "gh-1")["level"] == "inventory group_vars"  # group_vars/ beat the inventory file
    write(layout["play_dir"] / "group_vars/greenhouses/main.yml", {"level": "playbook group_vars"})
    assert load(layout, "gh-1")["level"] == "playbook group_vars"
    write(layout["inv_dir"] / "host_vars/gh-1.yml", {"level": "inventory host_vars"})
    assert load(layout, "gh-1")["level"] == "inventory host_vars"
    extra = write(layout["inv_dir"] / "extra.yml", {"level": "extra vars", "fixed": "extra"})
    hv = load(layout, "gh-1", (extra,))
    assert hv["level"] == "extra vars"
    assert hv["fixed"] == "extra"
    # Role vars beat everything from the inventory, as in Ansible.
    assert load(layout, "gh-1")["fixed"] == "role vars"


def test_unknown_host_is_an_error_listing_the_known_ones(layout: dict[str, Path]) -> None:
    with pytest.raises(ProvisionError, match=r"'gh-9' is not in .*gh-1, gh-2"):
        load(layout, "gh-9")


def test_references_resolve_with_their_type_or_as_text(layout: dict[str, Path]) -> None:
    write(layout["inv_dir"] / "host_vars/gh-1.yml", {
        "uid": "gh-0001",
        "gw_id": "gw-{{ uid }}",
        "url": "http://127.0.0.1:{{port}}/healthz",
        "passwords": "{{ vault_passwords }}",
        "vault_passwords": {"nd-1": "{{ uid }}-pw"},
    })
    hv = load(layout, "gh-1")
    assert hv["gw_id"] == "gw-gh-0001"
    assert hv["url"] == "http://127.0.0.1:8080/healthz"
    assert hv["passwords"] == {"nd-1": "gh-0001-pw"}


def test_templates_provisioning_cannot_evaluate_are_errors_not_guesses(layout: dict[str, Path]) -> None:
    write(layout["inv_dir"] / "host_vars/gh-1.yml", {"a": "{{ b | upper }}", "b": "x", "c": "{{ d }}", "d": "{{ c }}"})
    hv = load(layout, "gh-1")
    with pytest.raises(ProvisionError, match="only plain"):
        hv["a"]
    with pytest.raises(ProvisionError, match=r"loop.*c -> d -> c"):
        hv["c"]
    with pytest.raises(ProvisionError, match="'missing' is not defined for host 'gh-1'"):
        hv["missing"]


def encrypt(path: Path, password_file: Path) -> None:
    subprocess.run(
        [tool("ansible-vault"), "encrypt", "--vault-password-file", str(password_file), str(path)],
        check=True, capture_output=True, env=tool_env(),
    )


def test_vault_encrypted_files_and_inline_values_are_decrypted(layout: dict[str, Path], tmp_path: Path) -> None:
    password_file = write(tmp_path / "vault-pass", "s3cret\n")
    secrets = write(layout["inv_dir"] / "host_vars/gh-1/vault.yml", {"vault_token": "tok-from-file"})
    encrypt(secrets, password_file)
    inline = subprocess.run(
        [tool("ansible-vault"), "encrypt_string", "--vault-password-file", str(password_file),
         "inline-secret", "--name", "vault_inline"],
        check=True, capture_output=True, text=True, env=tool_env(),
    ).stdout
    write(layout["inv_dir"] / "host_vars/gh-1/plain.yml", inline + "token: '{{ vault_token }}'\n")

    hv = load(layout, "gh-1", vault=Vault(password_file))
    assert hv["token"] == "tok-from-file"
    assert hv["vault_inline"] == "inline-secret"

    with pytest.raises(ProvisionError, match="encrypted with ansible-vault: pass --vault-password-file"):
        load(layout, "gh-1")
    with pytest.raises(ProvisionError, match="cannot decrypt"):
        load(layout, "gh-1", vault=Vault(write(tmp_path / "wrong", "nope\n")))
