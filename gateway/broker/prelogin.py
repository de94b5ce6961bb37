"""Bounds on pre-login connections (TCP accepted, CONNECT not yet received), so that half-open sockets
cannot crowd real nodes out of the broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(eq=False, slots=True)
class PendingConnection:
    """One connection waiting for its CONNECT; ``deadline`` is the ``asyncio.timeout`` its reader runs under."""

    ip: str
    since: float
    deadline: asyncio.Timeout
    # True while bytes it sent wait unread: it is about to be served, so it is not closed to make room.
    has_unread: Callable[[], bool]
    # Counted when the connection is closed before its CONNECT: why (see PreLoginGate).
    reason: str = "connect_timeout"


class PreLoginGate:
    """Tracks pre-login connections and closes the ones that would crowd out a newcomer.

    - At most ``max_per_ip`` per IP: a new connection from an IP at its cap closes that IP's oldest
      idle pending connection (``prelogin_ip_limit``).
    - At most ``max_total`` overall: a new connection over the cap closes the oldest idle pending
      connection of the IP holding the most (``prelogin_limit``), so one flooding address cannot evict
      the others.
    - Above ``pressure_at`` pending connections, each has at most ``pressure_timeout_s`` from its accept
      to send CONNECT (``connect_timeout_pressure``) instead of the normal connect timeout.

    A newcomer is never refused: a real node sends CONNECT right after its TCP handshake, so it leaves
    this stage long before it could become the oldest one of its IP. Idle means no unread bytes: a
    connection whose CONNECT has arrived but not been read yet (a burst of logins) is not closed; if
    every candidate has data waiting, the cap is exceeded for the moment instead.
    Closing means moving the connection's deadline to now: its reader then ends as a timeout.
    """

    def __init__(self, max_total: int, max_per_ip: int, pressure_at: int, pressure_timeout_s: float) -> None:
        self.max_total = max_total
        self.max_per_ip = max_per_ip
        self.pressure_at = pressure_at
        self.pressure_timeout_s = pressure_timeout_s
        # Per IP, its pending connections in arrival order (a dict used as an ordered set).
        self._by_ip: dict[str, dict[PendingConnection, None]] = {}
        self._count = 0
        self._pressure = False
        self.entered = 0  # monotonic: connections that went through this stage

    def __len__(self) -> int:
        return self._count

    def enter(self, ip: str, deadline: asyncio.Timeout, now: float,
              has_unread: Callable[[], bool]) -> PendingConnection:
        """Register a new pending connection, closing older idle ones first if a bound requires it."""
        mine = self._by_ip.get(ip)
        if mine is not None and len(mine) >= self.max_per_ip:
            self._close_oldest_idle(mine, "prelogin_ip_limit", now)
        if self._count >= self.max_total:
            for crowded in sorted(self._by_ip.values(), key=len, reverse=True):
                if self._close_oldest_idle(crowded, "prelogin_limit", now):
                    break
        entry = PendingConnection(ip, now, deadline, has_unread)
        self._by_ip.setdefault(ip, {})[entry] = None
        self._count += 1
        self.entered += 1
        if self._count > self.pressure_at:
            if not self._pressure:
                self._pressure = True
                for pending in self._by_ip.values():
                    for other in pending:
                        self._shorten(other)
            else:
                self._shorten(entry)
        return entry

    def leave(self, entry: PendingConnection) -> None:
        """The connection sent its CONNECT, failed or was closed: stop tracking it (idempotent)."""
        pending = self._by_ip.get(entry.ip)
        if pending is None or entry not in pending:
            return
        del pending[entry]
        if not pending:
            del self._by_ip[entry.ip]
        self._count -= 1
        if self._count <= self.pressure_at:
            self._pressure = False

    def _shorten(self, entry: PendingConnection) -> None:
        limit = entry.since + self.pressure_timeout_s
        when = entry.deadline.when()
        if not entry.deadline.expired() and (when is None or when > limit):
            entry.reason = "connect_timeout_pressure"
            entry.deadline.reschedule(limit)

    def _close_oldest_idle(self, pending: Iterable[PendingConnection], reason: str, now: float) -> bool:
        victim = next((entry for entry in pending if not entry.has_unread()), None)
        if victim is None:
            return False
        self._close_early(victim, reason, now)
        return True

    def _close_early(self, entry: PendingConnection, reason: str, now: float) -> None:
        self.leave(entry)
        entry.reason = reason
        if not entry.deadline.expired():
            entry.deadline.reschedule(now)
