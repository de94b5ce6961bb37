"""Broker authentication: per-node argon2 password hashes, verified off the event loop and cached."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Account:
    """A broker account; role ``node`` is confined to its own topics, ``service`` is not."""

    username: str
    password_hash: str
    role: str = "node"


def hash_password(password: str) -> str:
    """Hash a password with argon2id parameters sized for a Raspberry Pi (19 MiB, 2 passes)."""
    return PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1).hash(password)


class Authenticator:
    """Checks username/password; anonymous only when allowed (demo).

    One argon2 verification costs 20–130 ms of CPU (0.13 s with argon2's default 64 MiB parameters), so it
    runs in a one-thread executor, never on the loop (argon2-cffi releases the GIL). The digest of the last
    verified password of each account is kept, so a reconnect burst costs no argon2 at all. At most
    ``max_pending`` verifications wait for the thread; beyond that a login is refused as "busy" (CONNACK 3)
    instead of queueing CPU work without bound.
    """

    def __init__(self, accounts: Iterable[Account], allow_anonymous: bool, max_pending: int = 64) -> None:
        self._accounts = {a.username: a for a in accounts}
        self.allow_anonymous = allow_anonymous
        self.max_pending = max_pending
        self._hasher = PasswordHasher()
        self._verified: dict[str, str] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="argon2")
        self._pending: dict[tuple[str, str], asyncio.Future[bool]] = {}
        self.verifications = 0

    def role_of(self, username: str | None) -> str | None:
        """The role of a known account, else None."""
        account = self._accounts.get(username or "")
        return account.role if account else None

    async def authenticate(self, username: str | None, password: str | None) -> tuple[bool, str]:
        """Return (accepted, reason)."""
        if not username:
            return (True, "anonymous") if self.allow_anonymous else (False, "anonymous_refused")
        account = self._accounts.get(username)
        if account is None:
            if self.allow_anonymous:
                return True, "anonymous_unknown_user"
            return False, "unknown_user"
        if password is None:
            return False, "no_password"
        digest = hashlib.sha256(password.encode()).hexdigest()
        if self._verified.get(username) == digest:
            return True, "cached"
        key = (username, digest)
        pending = self._pending.get(key)
        if pending is None:
            if len(self._pending) >= self.max_pending:
                return False, "busy"
            pending = asyncio.ensure_future(
                asyncio.get_running_loop().run_in_executor(self._executor, self._verify, account.password_hash,
                                                           password)
            )
            self._pending[key] = pending
            pending.add_done_callback(lambda _f: self._pending.pop(key, None))
        ok = await asyncio.shield(pending)
        if ok:
            self._verified[username] = digest
            return True, "password"
        return False, "bad_password"

    def _verify(self, password_hash: str, password: str) -> bool:
        self.verifications += 1
        try:
            return self._hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    def close(self) -> None:
        """Stop the verification thread."""
        self._executor.shutdown(wait=False, cancel_futures=True)
