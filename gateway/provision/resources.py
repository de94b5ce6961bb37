"""Where provisioning finds the files it shares with Ansible and systemd: a checkout of this repository."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gateway.provision.errors import ProvisionError


@dataclass(frozen=True)
class Resources:
    """Paths of the repository files one provisioning run reads."""

    repo: Path

    @property
    def ansible_dir(self) -> Path:
        """The playbook directory (its group_vars/ and host_vars/ apply as in Ansible)."""
        return self.repo / "ansible"

    @property
    def role_dir(self) -> Path:
        """The hydro_gateway role: defaults, vars and templates."""
        return self.ansible_dir / "roles" / "hydro_gateway"

    @property
    def unit_file(self) -> Path:
        """The systemd unit."""
        return self.repo / "systemd" / "hydro-gateway.service"

    @property
    def journald_dropin(self) -> Path:
        """The journald drop-in that keeps logs off the SD card."""
        return self.repo / "systemd" / "journald.conf.d" / "hydro-gateway.conf"

    @property
    def firstboot_script(self) -> Path:
        """The script cloud-init runs on the Pi's first boot."""
        return self.repo / "gateway" / "provision" / "firstboot.sh"

    def template(self, name: str) -> Path:
        """A template of the role (gateway.toml.j2, boot-config.txt.j2)."""
        return self.role_dir / "templates" / name


def find_resources(repo: Path | None = None) -> Resources:
    """Locate the checkout: ``repo`` if given, else the one this module was imported from."""
    candidate = repo if repo is not None else Path(__file__).resolve().parents[2]
    resources = Resources(candidate.resolve())
    needed = (resources.unit_file, resources.role_dir, resources.firstboot_script)
    missing = [p for p in needed if not p.exists()]
    if missing:
        raise ProvisionError(
            f"{candidate} is not a hydro-gateway checkout (missing {missing[0]}); provisioning reads "
            "systemd/ and ansible/ from the repository: run it from a checkout or pass --repo DIR"
        )
    return resources
