"""Fixtures for driver tests: gpiozero mock pins, a real systemd notify socket."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory


@pytest.fixture
def pin_factory() -> Iterator[MockFactory]:
    """A private MockFactory (never the global ``Device.pin_factory``)."""
    factory = MockFactory()
    yield factory
    factory.close()


class NotifyListener:
    """The receiving end of sd_notify: a bound unix datagram socket."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)

    def messages(self) -> list[str]:
        """Every datagram received since the last call."""
        received: list[str] = []
        while True:
            try:
                received.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return received


@pytest.fixture
def notify_listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifyListener]:
    """A socket like systemd's, set as NOTIFY_SOCKET."""
    with tempfile.TemporaryDirectory(prefix="sdn") as tmp:  # short path: AF_UNIX paths max 108 bytes
        path = Path(tmp) / "notify"
        listener = NotifyListener(path)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        try:
            yield listener
        finally:
            listener.sock.close()
