"""Render the Ansible role's templates outside Ansible: the SD bundle and a rollout write the same files."""

from __future__ import annotations

from pathlib import Path

import jinja2
import jinja2.meta

from gateway.provision.hostvars import HostVars

# The template module's settings (trim_blocks on, the final newline kept), so the output is identical.
_ENV = jinja2.Environment(
    undefined=jinja2.StrictUndefined, trim_blocks=True, keep_trailing_newline=True, autoescape=False
)


def render_template(path: Path, hostvars: HostVars) -> str:
    """Render ``path`` with the variables it uses taken from ``hostvars``."""
    source = path.read_text(encoding="utf-8")
    needed = jinja2.meta.find_undeclared_variables(_ENV.parse(source))
    return _ENV.from_string(source).render({name: hostvars[name] for name in sorted(needed)})
