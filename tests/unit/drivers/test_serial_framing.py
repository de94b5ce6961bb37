"""Line splitting and JSON framing for serial nodes (pure parts of the serial link)."""

from __future__ import annotations

import json

import pytest

from drivers.line_framing import LineSplitter
from drivers.serial_frame import FrameError, decode_frame, encode_frame


def test_lines_split_across_chunks_are_reassembled() -> None:
    splitter = LineSplitter(max_line_bytes=100)
    assert splitter.feed(b'{"a":') == []
    assert splitter.pending == 5
    assert splitter.feed(b'1}\r\n{"b":2}\n{"c"') == [b'{"a":1}', b'{"b":2}']
    assert splitter.feed(b":3}\n") == [b'{"c":3}']


def test_oversize_line_is_dropped_up_to_its_newline_and_counted() -> None:
    splitter = LineSplitter(max_line_bytes=10)
    assert splitter.feed(b"x" * 8) == []
    assert splitter.feed(b"y" * 8) == []  # 16 bytes > 10: dropped, discarding until newline
    assert splitter.pending == 0  # memory stays bounded
    assert splitter.feed(b"zzzzzzzzzzzzzzzz\nok\n") == [b"ok"]
    assert splitter.oversize == 1
    assert splitter.feed(b"1234567890\n") == [b"1234567890"]  # exactly the limit is fine


def test_reset_drops_the_unfinished_line() -> None:
    splitter = LineSplitter(max_line_bytes=100)
    splitter.feed(b'{"topic"')
    assert splitter.reset() == 8
    assert splitter.feed(b'{"x":1}\n') == [b'{"x":1}']


def test_decode_valid_frame() -> None:
    line = b'{"topic":"hydro/gh1/z1/n1/telemetry","payload":{"metric_type":"ph","value":6.1,"ts":1}}'
    topic, payload = decode_frame(line)
    assert topic == "hydro/gh1/z1/n1/telemetry"
    assert json.loads(payload) == {"metric_type": "ph", "value": 6.1, "ts": 1}


def test_decode_accepts_array_payload() -> None:
    _, payload = decode_frame(b'{"topic":"hydro/gh1/z1/n1/telemetry","payload":[{"v":1},{"v":2}]}')
    assert json.loads(payload) == [{"v": 1}, {"v": 2}]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"\xff\xfe\x00garbage", "garbage"),
        (b"ets Jun  8 2016 00:22:57 rst:0x1 (POWERON_RESET)", "not_json"),
        (b'{"topic":"hydro/a","payload":{"value":NaN}}', "not_json"),
        (b'{"topic":"hydro/a","payload":', "not_json"),
        (b"[1,2,3]", "bad_frame"),
        (b'{"payload":{}}', "bad_frame"),
        (b'{"topic":"other/a","payload":{}}', "bad_frame"),
        (b'{"topic":"hydro/a/+/b","payload":{}}', "bad_frame"),
        (b'{"topic":"hydro/a","payload":5}', "bad_frame"),
    ],
)
def test_bad_lines_are_classified(line: bytes, reason: str) -> None:
    with pytest.raises(FrameError) as info:
        decode_frame(line)
    assert info.value.reason == reason


def test_encode_round_trips_and_ends_with_newline() -> None:
    line = encode_frame("hydro/gh1/z1/n1/pump/command", b'{"cmd":"run_pump","cmd_id":"c1","params":{"s":5}}')
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    topic, payload = decode_frame(line.rstrip(b"\n"))
    assert topic == "hydro/gh1/z1/n1/pump/command"
    assert json.loads(payload) == {"cmd": "run_pump", "cmd_id": "c1", "params": {"s": 5}}


@pytest.mark.parametrize(
    ("topic", "payload"),
    [("hydro/x", b"not json"), ("hydro/x", b"42"), ("bad topic", b"{}"), ("hydro/x", b'{"v": NaN}')],
)
def test_encode_rejects_invalid_frames(topic: str, payload: bytes) -> None:
    with pytest.raises(ValueError):
        encode_frame(topic, payload)
