"""SerialLink over a real pseudo-terminal pair: the test plays the node on the master side.

The link opens a symlink to the pty slave; re-targeting the symlink at a new pty simulates a USB
adapter that vanished and came back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tty
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from drivers.errors import LinkDownError
from drivers.serial_link import SerialLink, SerialMessage, build_serial
from gateway.clock import SystemClock

HEARTBEAT = b'{"topic":"hydro/gh1/z1/n1/heartbeat","payload":{"uptime_s":1,"rssi":-50,"free_heap":1000}}\n'
TELEMETRY = b'{"topic":"hydro/gh1/z1/n1/telemetry","payload":{"metric_type":"ph","value":6.2,"ts":1}}\n'


class PtyNode:
    """The node end of a pty; ``link_path`` is (re)pointed at the slave."""

    def __init__(self, link_path: Path) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)
        self.slave_name = os.ttyname(slave)
        os.close(slave)
        os.set_blocking(self.master, False)
        tmp = link_path.with_name(link_path.name + ".new")
        os.symlink(self.slave_name, tmp)
        os.replace(tmp, link_path)
        self.closed = False

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    async def read_line(self, timeout: float = 5.0) -> bytes:
        loop = asyncio.get_running_loop()
        buffer = b""
        async with asyncio.timeout(timeout):
            while not buffer.endswith(b"\n"):
                ready = loop.create_future()
                loop.add_reader(self.master, ready.set_result, None)
                try:
                    await ready
                finally:
                    loop.remove_reader(self.master)
                buffer += os.read(self.master, 4096)
        return buffer

    def close(self) -> None:
        if not self.closed:
            os.close(self.master)
            self.closed = True


async def eventually(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (polling the loop) until ``condition()`` holds."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.link_path = tmp_path / "ttyNODE"
        self.node = PtyNode(self.link_path)
        self.messages: asyncio.Queue[SerialMessage] = asyncio.Queue()
        self.link = SerialLink(
            str(self.link_path),
            115200,
            self.messages.put,
            SystemClock(),
            "rs485-test",
            max_line_bytes=256,
            reconnect_min_s=0.01,
            reconnect_max_s=0.05,
        )

    async def next_message(self) -> SerialMessage:
        return await asyncio.wait_for(self.messages.get(), 5.0)


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    h = Harness(tmp_path)
    task = asyncio.create_task(h.link.run())
    try:
        await asyncio.wait_for(h.link.wait_connected(), 5.0)
        yield h
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        h.node.close()


async def test_whole_and_split_lines_become_messages(harness: Harness) -> None:
    harness.node.write(HEARTBEAT)
    message = await harness.next_message()
    assert message.topic == "hydro/gh1/z1/n1/heartbeat"
    assert json.loads(message.payload) == {"uptime_s": 1, "rssi": -50, "free_heap": 1000}
    assert message.port == str(harness.link_path)
    harness.node.write(TELEMETRY[:20])
    await asyncio.sleep(0.01)  # let the first half arrive on its own
    harness.node.write(TELEMETRY[20:])
    message = await harness.next_message()
    assert message.topic == "hydro/gh1/z1/n1/telemetry"
    assert json.loads(message.payload)["value"] == 6.2


async def test_garbage_non_json_and_oversize_lines_are_counted_and_skipped(harness: Harness) -> None:
    harness.node.write(
        b"\xff\xfe\x00\x81boot noise\n"  # not UTF-8
        + b"ets Jun  8 2016 00:22:57\r\n"  # ESP32 ROM banner: not JSON
        + b'{"topic":"elsewhere","payload":{}}\n'  # not a frame for us
        + b'{"topic":"hydro/x","payload":'
        + b'"x"' * 200
        + b"}\n"  # 600+ bytes > 256
        + b"\n"  # blank lines are ignored
        + HEARTBEAT
    )
    message = await harness.next_message()
    assert message.topic == "hydro/gh1/z1/n1/heartbeat"
    stats = harness.link.stats
    assert (stats["garbage"], stats["not_json"], stats["bad_frame"], stats["oversize"]) == (1, 1, 1, 1)
    assert stats["frames"] == 1
    assert harness.messages.empty()


async def test_send_writes_one_framed_line(harness: Harness) -> None:
    await harness.link.send("hydro/gh1/z1/n1/pump/command", b'{"cmd":"run_pump","cmd_id":"c-1","params":{}}')
    line = await harness.node.read_line()
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line) == {
        "topic": "hydro/gh1/z1/n1/pump/command",
        "payload": {"cmd": "run_pump", "cmd_id": "c-1", "params": {}},
    }
    assert harness.link.stats["sent"] == 1


async def test_send_while_down_raises_link_down(tmp_path: Path) -> None:
    link = SerialLink(str(tmp_path / "absent"), 9600, _ignore, SystemClock(), "down")
    with pytest.raises(LinkDownError):
        await link.send("hydro/gh1/z1/n1/config", b"{}")


async def test_reconnects_after_the_port_vanishes_and_returns(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="drivers.serial_link"):
        harness.node.write(b'{"topic":"hydro/gh1/z1/n1/heart')  # half a line, then the cable is pulled
        await asyncio.sleep(0.01)
        harness.node.close()
        await eventually(lambda: not harness.link.connected)
        assert harness.link.stats["disconnects"] == 1
        await asyncio.sleep(0.1)  # several failed attempts against the dead pty (logged only once)
        harness.node = PtyNode(harness.link_path)  # the adapter is back under the same name
        await asyncio.wait_for(harness.link.wait_connected(), 5.0)
        harness.node.write(HEARTBEAT)
        message = await harness.next_message()
    assert message.topic == "hydro/gh1/z1/n1/heartbeat"  # the dropped half-line did not corrupt it
    assert harness.link.stats["connects"] == 2
    assert harness.link.stats["partial_dropped"] == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "retrying" in r.getMessage()]
    recoveries = [r for r in caplog.records if "connected again" in r.getMessage()]
    assert len(warnings) == 1 and len(recoveries) == 1


def test_port_is_opened_with_dtr_and_rts_deasserted(tmp_path: Path) -> None:
    node = PtyNode(tmp_path / "ttyESP")
    try:
        ser = build_serial(str(tmp_path / "ttyESP"), 115200)
        assert not ser.is_open  # levels are set BEFORE open, so open() applies them
        assert (ser.dtr, ser.rts, ser.dsrdtr, ser.rtscts) == (False, False, False, False)
        ser.open()
        try:
            assert ser.is_open and ser.dtr is False and ser.rts is False
        finally:
            ser.close()
    finally:
        node.close()


async def _ignore(message: SerialMessage) -> None:
    return None
