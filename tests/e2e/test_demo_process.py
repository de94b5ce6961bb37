"""The demo as a real process: systemd notifications, a working status API, SIGTERM within 5 s."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def _get(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as resp:
        return json.loads(resp.read())


def test_demo_notifies_systemd_registers_nodes_and_stops_on_sigterm(tmp_path):
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock_path = str(tmp_path / "notify.sock")
    notify.bind(sock_path)
    notify.settimeout(0.2)
    http_port = free_port()
    env = {**os.environ, "NOTIFY_SOCKET": sock_path}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "demo", "--data-dir", str(tmp_path / "d"), "--mqtt-port",
         str(free_port()), "--http-port", str(http_port)],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    messages: list[str] = []
    try:
        deadline = time.monotonic() + 40
        status: dict = {}
        while time.monotonic() < deadline:
            try:
                messages.append(notify.recv(4096).decode())
            except TimeoutError:
                pass
            try:
                status = _get(http_port, "/api/status")
            except OSError:
                continue
            if status["nodes"].get("online", 0) >= 8 and any("WATCHDOG=1" in m for m in messages):
                break
        assert status["nodes"]["online"] == 8, status
        assert any("READY=1" in m for m in messages), messages
        assert any("WATCHDOG=1" in m for m in messages), messages
        assert _get(http_port, "/healthz")["status"] == "ok"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
        took = time.monotonic() - started
        assert rc == 0, proc.stderr.read().decode()[-2000:] if proc.stderr else rc
        assert took < 5.0, took
        while True:
            try:
                messages.append(notify.recv(4096).decode())
            except (TimeoutError, OSError):
                break
        assert any("STOPPING=1" in m for m in messages), messages
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
        notify.close()
