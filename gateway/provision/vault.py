"""Ansible Vault decryption through the ``ansible-vault`` command, so provisioning reads the same secrets."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from gateway.provision.errors import ProvisionError

VAULT_HEADER = "$ANSIBLE_VAULT;"


def is_encrypted(text: str) -> bool:
    """True for Ansible Vault ciphertext (a whole file or one ``!vault`` value)."""
    return text.lstrip().startswith(VAULT_HEADER)


class Vault:
    """Decrypts with one vault password file."""

    def __init__(self, password_file: Path | None) -> None:
        self._password_file = password_file

    def decrypt(self, ciphertext: str, source: str) -> str:
        """Return the plaintext of ``ciphertext`` read from ``source`` (named in errors)."""
        if self._password_file is None:
            raise ProvisionError(f"{source} is encrypted with ansible-vault: pass --vault-password-file")
        result = subprocess.run(
            [_ansible_vault(), "decrypt", "--vault-password-file", str(self._password_file), "--output", "-"],
            input=ciphertext,
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ProvisionError(f"cannot decrypt {source}: {result.stderr.strip()}")
        return result.stdout


def _ansible_vault() -> str:
    """The ansible-vault next to this interpreter (the project venv), else the one on PATH."""
    beside = Path(sys.executable).parent / "ansible-vault"
    if beside.exists():
        return str(beside)
    found = shutil.which("ansible-vault")
    if found is None:
        raise ProvisionError("ansible-vault not found: install ansible-core to read encrypted vault files")
    return found
