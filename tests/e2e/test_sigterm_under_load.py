"""SIGTERM (``systemctl stop``) of the real gateway process while a node floods it with QoS 1 telemetry.

It used to hang about one stop in four (the writer stuck while being cancelled), until systemd's
``TimeoutStopSec`` ran out and it SIGKILLed the process; and ``/api/status`` answered 500 while the broker
was closing. Each stop here happens once the running gateway has committed new samples (observed, not
guessed); the process must exit 0 within the unit's TimeoutStopSec, and the status page must never fail.
"""

from __future__ import annotations

import configparser
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.e2e import gateway_proc
from tests.e2e.gateway_proc import ROOT

STOPS = 6


def _timeout_stop_s() -> float:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.read(ROOT / "systemd" / "hydro-gateway.service")
    return float(unit["Service"]["TimeoutStopSec"])


def _committed(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2) as resp:
            return int(json.loads(resp.read())["ingest"]["committed"])
    except OSError:
        return -1


class StatusPoller:
    """Asks /api/status without pause; remembers every answer that was not 200 (refused connections are fine)."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/api/status"
        self.failures: list[str] = []
        self.answers = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=2) as resp:
                    resp.read()
                self.answers += 1
            except urllib.error.HTTPError as exc:
                self.failures.append(f"{exc.code}: {exc.read()[:300]!r}")
            except OSError:
                time.sleep(0.01)  # not listening (yet / any more)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigterm_under_ingest_load_exits_cleanly_within_timeout_stop_sec(tmp_path: Path) -> None:
    limit = _timeout_stop_s()
    mqtt_port, http_port = free_port(), free_port()
    config = gateway_proc.write_config(tmp_path, gateway_id="gw-sigterm", mqtt_port=mqtt_port, http_port=http_port)
    log = tmp_path / "gateway.log"
    poller = StatusPoller(http_port)
    gw: subprocess.Popen[str] | None = None
    node: subprocess.Popen[bytes] | None = None
    took: list[float] = []
    try:
        for _ in range(STOPS):
            gw = gateway_proc.start(config, log)
            gateway_proc.wait_healthy(http_port, gw)
            if node is None:  # once the port listens (a client retrying a closed port can connect to itself)
                node = subprocess.Popen([sys.executable, str(ROOT / "tests/e2e/load_publisher.py"), str(mqtt_port),
                                         "3000"])
            first = _committed(http_port)
            deadline = time.monotonic() + 60
            while _committed(http_port) < first + 500:  # the node's flood is being committed
                assert time.monotonic() < deadline, "no telemetry committed under load"
                assert gw.poll() is None, "gateway exited"
                time.sleep(0.05)
            stopped_at = time.monotonic()
            code = gateway_proc.stop(gw, timeout=limit)
            took.append(time.monotonic() - stopped_at)
            assert code == 0, f"stop {len(took)}: not stopped within TimeoutStopSec={limit:.0f} s (SIGKILLed)" \
                if code is None else f"stop {len(took)}: exit code {code}"
        print(f"SIGTERM under load: exits after {', '.join(f'{t:.2f}' for t in took)} s")
        assert poller.answers > 0
        assert poller.failures == [], poller.failures[:3]
    finally:
        poller.close()
        if node is not None:
            node.terminate()
            node.wait()
        if gw is not None:
            gateway_proc.stop(gw)
        if any(t > 5 for t in took):
            print(log.read_text()[-3000:])
