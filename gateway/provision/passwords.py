"""The broker's password file: one ``node_uid:<argon2 hash>`` line per node."""

from __future__ import annotations

import re
from collections.abc import Mapping

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from gateway.provision.errors import ProvisionError

# Usernames are node uids; ':' and whitespace would break the line format.
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class PasswordFileError(ProvisionError):
    """A username or password cannot go into the password file."""


def parse_password_file(text: str) -> dict[str, str]:
    """Map username -> hash for every ``user:hash`` line; blank lines and comments are skipped."""
    entries: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if sep:
            entries[user] = hashed
    return entries


def render_password_file(
    passwords: Mapping[str, str], existing: str = "", hasher: PasswordHasher | None = None
) -> str:
    """Return the file text for ``passwords``, keeping each existing hash that still matches.

    Argon2 salts are random, so rehashing on every run would change the file, and with it restart
    the gateway, on every rollout. An unchanged password therefore keeps its old line.
    """
    hasher = hasher or PasswordHasher()
    old = parse_password_file(existing)
    lines = []
    for user in sorted(passwords):
        password = passwords[user]
        if not isinstance(user, str) or not _USERNAME.match(user):
            raise PasswordFileError(f"invalid broker username {user!r}: use letters, digits, '_', '.', '-'")
        if not isinstance(password, str) or not password:
            raise PasswordFileError(f"empty or non-string password for broker user {user!r}")
        hashed = old.get(user)
        if hashed is None or not _still_matches(hasher, hashed, password):
            hashed = hasher.hash(password)
        lines.append(f"{user}:{hashed}\n")
    return "".join(lines)


def _still_matches(hasher: PasswordHasher, hashed: str, password: str) -> bool:
    """True if ``hashed`` verifies ``password`` with the current argon2 parameters."""
    try:
        hasher.verify(hashed, password)
    except (VerificationError, InvalidHashError):
        return False
    return not hasher.check_needs_rehash(hashed)
