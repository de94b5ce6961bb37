"""Resolve ``{{ name }}`` references between host variables, lazily, like Ansible's templating.

Only plain references are understood (``"{{ vault_token }}"``, ``"gw-{{ uid }}"``); anything richer
(filters, expressions) is an error naming the variable, never a silently wrong value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from gateway.provision.errors import ProvisionError
from gateway.provision.inventory import Encrypted
from gateway.provision.vault import Vault

_REFERENCE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


class HostVars:
    """One host's variables with references resolved on first use."""

    def __init__(self, host: str, raw: Mapping[str, object], vault: Vault) -> None:
        self.host = host
        self._raw = dict(raw)
        self._vault = vault
        self._resolved: dict[str, object] = {}
        self._resolving: list[str] = []

    def __contains__(self, name: object) -> bool:
        return name in self._raw

    def __getitem__(self, name: str) -> object:
        if name in self._resolved:
            return self._resolved[name]
        if name not in self._raw:
            raise ProvisionError(f"variable {name!r} is not defined for host {self.host!r}")
        if name in self._resolving:
            chain = " -> ".join([*self._resolving, name])
            raise ProvisionError(f"variables refer to each other in a loop for host {self.host!r}: {chain}")
        self._resolving.append(name)
        try:
            value = self._resolve(self._raw[name], name)
        finally:
            self._resolving.pop()
        self._resolved[name] = value
        return value

    def text(self, name: str) -> str:
        """A variable that must be a string; ProvisionError naming it otherwise."""
        value = self[name]
        if not isinstance(value, str):
            raise ProvisionError(f"{name} of host {self.host!r} must be a string, not {value!r}")
        return value

    def strings(self, name: str) -> list[str]:
        """A variable that must be a list of strings (a copy); ProvisionError naming it otherwise."""
        value = self[name]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ProvisionError(f"{name} of host {self.host!r} must be a list of strings, not {value!r}")
        return [str(item) for item in value]

    def string_map(self, name: str) -> dict[str, str]:
        """A variable that must map names to strings; ProvisionError naming it otherwise."""
        value = self[name]
        if not isinstance(value, dict) or not all(isinstance(item, str) for item in value.values()):
            raise ProvisionError(f"{name} of host {self.host!r} must map names to strings, not {value!r}")
        return {str(key): str(item) for key, item in value.items()}

    def _resolve(self, value: object, name: str) -> object:
        """Resolve references inside ``value`` (a string, list, mapping or scalar) of variable ``name``."""
        if isinstance(value, Encrypted):
            return self._vault.decrypt(value.ciphertext, f"the !vault value of {name!r}")
        if isinstance(value, str):
            return self._resolve_string(value, name)
        if isinstance(value, list):
            return [self._resolve(item, name) for item in value]
        if isinstance(value, dict):
            return {key: self._resolve(item, name) for key, item in value.items()}
        return value

    def _resolve_string(self, value: str, name: str) -> object:
        """A whole-string reference keeps the referenced type; embedded ones are interpolated as text."""
        whole = _REFERENCE.fullmatch(value.strip())
        if whole:
            return self[whole.group(1)]
        text = _REFERENCE.sub(lambda m: str(self[m.group(1)]), value)
        if "{{" in text or "{%" in text:
            raise ProvisionError(
                f"variable {name!r} of host {self.host!r} uses a template provisioning cannot evaluate "
                f"({value!r}); only plain '{{{{ name }}}}' references are supported"
            )
        return text
