"""systemd ``sd_notify`` over the ``sdnotify`` package: READY=1, WATCHDOG=1, STOPPING=1, STATUS=…

A no-op when ``NOTIFY_SOCKET`` is unset (not started by systemd). That variable is systemd's transport
for this protocol, not a gateway setting, so it is read here rather than in ``settings.py``.
A failing send is logged once and never raised: the watchdog must not crash the safety loop that feeds it.
"""

from __future__ import annotations

import logging
import os

import sdnotify

log = logging.getLogger(__name__)


class SystemdNotifier:
    """Thin wrapper around ``sdnotify.SystemdNotifier``."""

    def __init__(self) -> None:
        self._notifier: sdnotify.SystemdNotifier | None = None
        self._failing = False
        if os.environ.get("NOTIFY_SOCKET"):
            try:
                self._notifier = sdnotify.SystemdNotifier(debug=True)
            except OSError as exc:
                log.warning("systemd notify socket unusable (%s); notifications disabled", exc)

    @property
    def enabled(self) -> bool:
        """Whether notifications actually go to systemd."""
        return self._notifier is not None

    def notify(self, state: str) -> None:
        """Send one raw state string, e.g. ``"READY=1"``."""
        if self._notifier is None:
            return
        try:
            self._notifier.notify(state)
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
        if self._notifier is not None and self._notifier.socket is not None:
            self._notifier.socket.close()
        self._notifier = None
