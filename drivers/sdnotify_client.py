"""systemd ``sd_notify``: READY=1, WATCHDOG=1, STOPPING=1, STATUS=… as datagrams on ``NOTIFY_SOCKET``.

A no-op when ``NOTIFY_SOCKET`` is unset (not started by systemd). That variable is systemd's transport
for this protocol, not a gateway setting, so it is read here rather than in ``settings.py``.
A failing send is logged once and never raised: the watchdog must not crash the safety loop that feeds it.
The protocol is one ``connect`` and a ``send`` per state; it is written here rather than taken from the
``sdnotify`` package because that one leaks its socket when the connect fails.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def _connect(address: str) -> socket.socket:
    """A datagram socket connected to systemd's notify socket ('@' = Linux abstract namespace)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.connect("\0" + address[1:] if address.startswith("@") else address)
    except OSError:
        sock.close()
        raise
    return sock


class SystemdNotifier:
    """Sends sd_notify states to systemd; never raises."""

    def __init__(self) -> None:
        self._socket: socket.socket | None = None
        self._failing = False
        address = os.environ.get("NOTIFY_SOCKET")
        if address:
            try:
                self._socket = _connect(address)
            except OSError as exc:
                log.warning("systemd notify socket unusable (%s); notifications disabled", exc)

    @property
    def enabled(self) -> bool:
        """Whether notifications actually go to systemd."""
        return self._socket is not None

    def notify(self, state: str) -> None:
        """Send one raw state string, e.g. ``"READY=1"``."""
        if self._socket is None:
            return
        try:
            self._socket.sendall(state.encode())
        except OSError as exc:
            if not self._failing:
                log.warning("sd_notify(%s) failed: %s", state.split("=", 1)[0], exc)
            self._failing = True
            return
        if self._failing:
            log.info("sd_notify works again")
            self._failing = False

    def ready(self) -> None:
        """Tell systemd start-up is complete (``Type=notify``)."""
        self.notify("READY=1")

    def watchdog(self) -> None:
        """Pet systemd's ``WatchdogSec`` timer."""
        self.notify("WATCHDOG=1")

    def stopping(self) -> None:
        """Tell systemd a clean shutdown has begun."""
        self.notify("STOPPING=1")

    def status(self, text: str) -> None:
        """One-line status shown by ``systemctl status``."""
        self.notify(f"STATUS={text.splitlines()[0] if text else ''}")

    def close(self) -> None:
        """Close the notification socket."""
        if self._socket is not None:
            self._socket.close()
        self._socket = None
