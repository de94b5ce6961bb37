"""The real gateway as a process, for the e2e tests: its TOML, start, wait for /healthz, stop, kill -9.

Every process test used to write its own copy of the config and of the health wait; they differ only in
the sections they add (``[ingest]``, ``[upstream]``, ``[storage]``, …) and the nodes they declare.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
NODE = ("nd-ph-1", "esp32-aa01")  # (uid, hardware id): the node tests/e2e/*_publisher.py publish as


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        text = str(value)
        assert '"' not in text and "\\" not in text, text  # kept simple: no escapes needed in test configs
        return f'"{text}"'
    raise TypeError(f"no TOML for {value!r}")


def _table(name: str, values: Mapping[str, Any]) -> str:
    return f"[{name}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in values.items())


def write_config(
    tmp: Path,
    *,
    mqtt_port: int,
    http_port: int,
    gateway_id: str = "gw-e2e",
    data_dir: Path | None = None,
    nodes: Sequence[tuple[str, str]] = (NODE,),
    **sections: Mapping[str, Any],
) -> Path:
    """Write ``tmp/gateway.toml`` and return its path.

    Demo mode (anonymous MQTT) on loopback, simulated hardware, one zone ``zone-a`` holding ``nodes``
    (uid, hardware id); ``sections`` add tables, e.g. ``ingest={"flush_interval_ms": 100}``. The data
    directory is ``tmp/data`` unless given.
    """
    parts = [
        _table("gateway", {"id": gateway_id, "greenhouse_uid": "gh1", "mode": "demo",
                           "data_dir": data_dir or tmp / "data"}),
        _table("broker", {"host": "127.0.0.1", "port": mqtt_port, "allow_anonymous": True}),
        _table("web", {"host": "127.0.0.1", "port": http_port, "admin_token": "x"}),
        _table("hardware", {"backend": "sim"}),
        *(_table(name, values) for name, values in sections.items()),
        '[[zones]]\nuid = "zone-a"\n',
        *(f'[[nodes]]\nhardware_id = "{hw}"\nuid = "{uid}"\nzone = "zone-a"\n' for uid, hw in nodes),
    ]
    path = tmp / "gateway.toml"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def upstream(url: str, token: str) -> dict[str, Any]:
    """An ``[upstream]`` table that uploads often and in small batches (a test sees progress quickly)."""
    return {"url": url, "token": token, "interval_s": 0.1, "telemetry_batch": 300}


def start(config: Path, log: Path | None = None, *, capture_stderr: bool = False) -> subprocess.Popen[str]:
    """``python -m gateway run --config CONFIG``; output appended to ``log`` (else dropped), or stderr piped."""
    cmd = [sys.executable, "-m", "gateway", "run", "--config", str(config)]
    if capture_stderr:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if log is None:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    with open(log, "ab") as out:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, text=True)


def healthy(port: int) -> bool:
    """True if GET /healthz answers 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def wait_healthy(port: int, proc: subprocess.Popen[str] | None = None, timeout: float = 60.0) -> float:
    """Seconds until /healthz says ok; fails at once if ``proc`` exits, and if it hangs past ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if proc is not None and proc.poll() is not None:
            err = proc.communicate()[1] if proc.stderr is not None else ""
            raise AssertionError(f"gateway exited rc={proc.returncode}: {str(err)[-2000:]}")
        if healthy(port):
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"gateway neither healthy nor exited within {timeout:.0f} s: it hangs")


def kill9(proc: subprocess.Popen[str]) -> None:
    """SIGKILL (a power cut as far as the process knows) and reap."""
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def stop(proc: subprocess.Popen[str], timeout: float = 20.0) -> int | None:
    """SIGTERM and reap (SIGKILL if it outlives ``timeout``); the exit code, None if it had to be killed."""
    code: int | None = proc.poll()
    if code is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=timeout)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            code = None
    if proc.stderr is not None:
        proc.stderr.close()  # a process that exited by itself still holds our end of the pipe
    return code
