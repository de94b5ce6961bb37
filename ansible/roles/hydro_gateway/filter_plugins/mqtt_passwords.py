"""Ansible filter ``hydro_gateway_password_file``: the broker password file, hashed on the controller.

The controller runs Ansible from a checkout of this repository (it builds the wheel there), so the
same code as ``hydro-gateway provision`` is used: gateway/provision/passwords.py.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

try:
    from gateway.provision.passwords import render_password_file
except ImportError:  # Ansible not run from the project's virtualenv: use the checkout itself.
    sys.path.insert(0, str(Path(__file__).resolve().parents[4]))
    from gateway.provision.passwords import render_password_file


def hydro_gateway_password_file(passwords: Mapping[str, str], existing: str = "") -> str:
    """Return the password file for ``passwords``, keeping the hashes in ``existing`` that still match."""
    return render_password_file(dict(passwords), existing)


class FilterModule:
    """Ansible entry point."""

    def filters(self) -> dict[str, Callable[..., Any]]:
        """Filters provided by this plugin."""
        return {"hydro_gateway_password_file": hydro_gateway_password_file}
