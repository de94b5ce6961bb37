"""Read one host's variables from an Ansible YAML inventory, layered the way Ansible layers them.

Lowest to highest: role defaults, inventory group vars (``all`` first, then by depth), group_vars/,
inventory host vars, host_vars/, role vars, extra vars files. Values stay unresolved here (see
hostvars.py); vault-encrypted files and ``!vault`` values are decrypted with ansible-vault.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gateway.provision.errors import ProvisionError
from gateway.provision.vault import Vault, is_encrypted

_YAML_SUFFIXES = ("", ".yml", ".yaml", ".json")


@dataclass(frozen=True)
class Encrypted:
    """An inline ``!vault`` value, decrypted only when a template needs it."""

    ciphertext: str


@dataclass
class _Group:
    """One inventory group: its own vars and hosts, and the names of its parents."""

    vars: dict[str, object] = field(default_factory=dict)
    hosts: dict[str, dict[str, object]] = field(default_factory=dict)
    parents: set[str] = field(default_factory=set)


class _Loader(yaml.SafeLoader):
    """SafeLoader that keeps ``!vault`` scalars as Encrypted values."""


def _construct_vault(loader: yaml.SafeLoader, node: yaml.Node) -> Encrypted:
    """``!vault |`` ciphertext -> Encrypted."""
    if not isinstance(node, yaml.ScalarNode):
        raise yaml.constructor.ConstructorError(None, None, "!vault must tag a string", node.start_mark)
    return Encrypted(str(loader.construct_scalar(node)))


_Loader.add_constructor("!vault", _construct_vault)


def load_yaml(path: Path, vault: Vault) -> dict[str, object]:
    """Parse a vars/inventory YAML file (decrypting a vault-encrypted one); empty files give {}."""
    text = path.read_text(encoding="utf-8")
    if is_encrypted(text):
        text = vault.decrypt(text, str(path))
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as exc:
        raise ProvisionError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ProvisionError(f"{path}: expected a mapping at the top level")
    return data


def host_layers(
    inventory: Path,
    host: str,
    vault: Vault,
    role_dir: Path,
    playbook_dir: Path,
    extra_vars: Iterable[Path] = (),
) -> dict[str, object]:
    """Return ``host``'s variables, higher layers replacing lower ones key by key (hash_behaviour=replace)."""
    groups = _parse_inventory(load_yaml(inventory, vault), inventory)
    member_of = _groups_of(host, groups)
    if not member_of:
        known = sorted({h for g in groups.values() for h in g.hosts})
        raise ProvisionError(f"host {host!r} is not in {inventory} (hosts: {', '.join(known) or 'none'})")
    ordered = sorted(member_of, key=lambda g: (_depth(g, groups), g))  # "all" (depth 0) first
    var_dirs = list(dict.fromkeys([inventory.parent.resolve(), playbook_dir.resolve()]))

    merged: dict[str, object] = {}
    merged.update(_load_optional(role_dir / "defaults" / "main.yml", vault))
    for name in ordered:
        merged.update(groups[name].vars)
    # Ansible: inventory group_vars/all, playbook group_vars/all, inventory group_vars/*, playbook ...
    for names in (["all"], [g for g in ordered if g != "all"]):
        for directory in var_dirs:
            for name in names:
                for path in _var_files(directory / "group_vars", name):
                    merged.update(load_yaml(path, vault))
    for name in ordered:
        merged.update(groups[name].hosts.get(host) or {})
    for directory in var_dirs:
        for path in _var_files(directory / "host_vars", host):
            merged.update(load_yaml(path, vault))
    merged.update(_load_optional(role_dir / "vars" / "main.yml", vault))
    for path in extra_vars:
        merged.update(load_yaml(path, vault))
    merged["inventory_hostname"] = host
    merged["group_names"] = sorted(g for g in member_of if g != "all")
    return merged


def _parse_inventory(data: dict[str, object], source: Path) -> dict[str, _Group]:
    """Flatten the YAML inventory tree into groups with parent links."""
    groups: dict[str, _Group] = {"all": _Group()}

    def walk(name: str, node: object, parent: str | None) -> None:
        group = groups.setdefault(name, _Group())
        if parent is not None and name != "all":
            group.parents.add(parent)
        if node is None:
            return
        if not isinstance(node, dict):
            raise ProvisionError(f"{source}: group {name!r} must be a mapping")
        group.vars.update(node.get("vars") or {})
        for host, host_vars in (node.get("hosts") or {}).items():
            group.hosts.setdefault(str(host), {}).update(host_vars or {})
        for child, child_node in (node.get("children") or {}).items():
            walk(str(child), child_node, name)

    for name, node in data.items():
        walk(str(name), node, None if name == "all" else "all")
    return groups


def _groups_of(host: str, groups: dict[str, _Group]) -> set[str]:
    """Every group ``host`` belongs to, directly or through child groups (empty if unknown)."""
    direct = [name for name, group in groups.items() if host in group.hosts]
    found: set[str] = set()
    stack = list(direct)
    while stack:
        name = stack.pop()
        if name not in found:
            found.add(name)
            stack.extend(groups[name].parents)
    if found:
        found.add("all")
    return found


def _depth(name: str, groups: dict[str, _Group]) -> int:
    """Distance from ``all`` along the longest parent chain (Ansible sorts group vars by it)."""
    parents = groups[name].parents - {name}
    return 0 if name == "all" or not parents else 1 + max(_depth(p, groups) for p in parents)


def _var_files(base: Path, name: str) -> Iterator[Path]:
    """group_vars/<name>{,.yml,.yaml,.json} files, or every such file in a group_vars/<name>/ directory."""
    directory = base / name
    if directory.is_dir():
        yield from sorted(p for p in directory.iterdir() if p.is_file() and p.suffix in _YAML_SUFFIXES[1:])
        return
    for suffix in _YAML_SUFFIXES:
        path = base / f"{name}{suffix}"
        if path.is_file():
            yield path
            return


def _load_optional(path: Path, vault: Vault) -> dict[str, object]:
    """load_yaml for a file that may be absent."""
    return load_yaml(path, vault) if path.is_file() else {}
