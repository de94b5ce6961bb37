"""sd_notify through a real unix datagram socket standing in for systemd."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from drivers.sdnotify_client import SystemdNotifier


def test_messages_reach_the_notify_socket(notify_listener: Any) -> None:
    notifier = SystemdNotifier()
    try:
        assert notifier.enabled
        notifier.ready()
        notifier.status("3 zones, broker up")
        notifier.watchdog()
        notifier.stopping()
        assert notify_listener.messages() == [
            "READY=1",
            "STATUS=3 zones, broker up",
            "WATCHDOG=1",
            "STOPPING=1",
        ]
    finally:
        notifier.close()


def test_no_op_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = SystemdNotifier()
    assert not notifier.enabled
    notifier.ready()  # nothing to send to, nothing raised
    notifier.close()


def test_unreachable_socket_disables_notifications(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/nonexistent/notify")
    notifier = SystemdNotifier()
    assert not notifier.enabled
    notifier.watchdog()


def test_send_failure_is_logged_once_and_never_raised(notify_listener: Any, caplog: pytest.LogCaptureFixture) -> None:
    notifier = SystemdNotifier()
    try:
        notify_listener.sock.close()  # systemd went away
        with caplog.at_level(logging.WARNING):
            for _ in range(3):
                notifier.watchdog()
        assert len([r for r in caplog.records if "sd_notify" in r.getMessage()]) == 1
    finally:
        notifier.close()
