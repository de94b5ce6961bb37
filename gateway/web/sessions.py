"""Login sessions of the local web: random ids, a CSRF token per session, idle and absolute expiry.

Sessions live in memory only: a gateway restart logs the operator out, which is acceptable on a LAN
page and keeps secrets off the SD card.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Session:
    """One logged-in browser."""

    sid: str
    user: str
    csrf_token: str
    created: float
    last_seen: float
    flash: str | None = None  # one message for the next page (the outcome of an action)


class SessionStore:
    """Creates, looks up and expires sessions on a monotonic clock."""

    def __init__(
        self,
        now: Callable[[], float],
        idle_s: float = 2 * 3600.0,
        max_age_s: float = 24 * 3600.0,
        max_sessions: int = 64,
    ) -> None:
        self._now = now
        self._idle_s = idle_s
        self._max_age_s = max_age_s
        self._max_sessions = max_sessions
        self._by_sid: dict[str, Session] = {}

    def create(self, user: str) -> Session:
        """A fresh session (a new id on every login prevents session fixation)."""
        now = self._now()
        self._expire(now)
        while len(self._by_sid) >= self._max_sessions:
            oldest = min(self._by_sid.values(), key=lambda s: s.last_seen)
            del self._by_sid[oldest.sid]
        session = Session(secrets.token_urlsafe(32), user, secrets.token_urlsafe(32), now, now)
        self._by_sid[session.sid] = session
        return session

    def get(self, sid: str | None) -> Session | None:
        """The live session for a cookie value (refreshing its idle timer), or None."""
        if not sid:
            return None
        session = self._by_sid.get(sid)
        if session is None:
            return None
        now = self._now()
        if self._expired(session, now):
            del self._by_sid[sid]
            return None
        session.last_seen = now
        return session

    def drop(self, sid: str | None) -> None:
        """Forget a session (logout)."""
        if sid:
            self._by_sid.pop(sid, None)

    def __len__(self) -> int:
        return len(self._by_sid)

    def _expired(self, session: Session, now: float) -> bool:
        return now - session.last_seen > self._idle_s or now - session.created > self._max_age_s

    def _expire(self, now: float) -> None:
        for sid in [s.sid for s in self._by_sid.values() if self._expired(s, now)]:
            del self._by_sid[sid]
