"""MQTT 3.1.1 packet bodies the broker's hot path encodes and decodes itself (pure functions).

amqtt's packet classes decode field by field through awaited reads and build several objects per
PUBLISH; the broker reads a whole packet body once and slices it here instead.
"""

from __future__ import annotations

import struct

PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 3, 4, 5, 6, 7
SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT = 8, 10, 12, 14
PINGRESP = b"\xd0\x00"
# CONNACK return codes [MQTT-3.2.2.3]
ACCEPTED, IDENTIFIER_REJECTED, SERVER_UNAVAILABLE, BAD_USERNAME_PASSWORD, NOT_AUTHORIZED = 0, 2, 3, 4, 5
_PID = struct.Struct("!H")


class MalformedPacket(ValueError):
    """A packet that breaks the MQTT 3.1.1 wire format; the connection must be closed."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, byte = divmod(n, 128)
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(body: bytes, offset: int) -> tuple[str, int]:
    if offset + 2 > len(body):
        raise MalformedPacket("truncated string")
    end = offset + 2 + _PID.unpack_from(body, offset)[0]
    if end > len(body):
        raise MalformedPacket("truncated string")
    try:
        text = body[offset + 2:end].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedPacket("string is not UTF-8 [MQTT-1.5.3-1]") from exc
    if "\x00" in text:
        raise MalformedPacket("string contains U+0000 [MQTT-1.5.3-2]")
    return text, end


def packet_id(body: bytes) -> int:
    """The packet identifier of PUBACK/PUBREC/PUBREL/PUBCOMP/SUBSCRIBE/UNSUBSCRIBE."""
    if len(body) < 2:
        raise MalformedPacket("missing packet identifier")
    pid: int = _PID.unpack_from(body, 0)[0]
    if pid == 0:
        raise MalformedPacket("packet identifier 0 [MQTT-2.3.1-1]")
    return pid


def decode_publish(qos: int, body: bytes) -> tuple[str, int | None, bytes]:
    """(topic, packet id or None for QoS 0, payload) of a PUBLISH body."""
    topic, offset = _string(body, 0)
    pid = None
    if qos:
        pid = packet_id(body[offset:offset + 2])
        offset += 2
    return topic, pid, body[offset:]


def decode_subscribe(body: bytes) -> tuple[int, list[tuple[str, int]]]:
    """(packet id, [(filter, requested QoS)]) of a SUBSCRIBE body."""
    pid, offset, topics = packet_id(body), 2, []
    while offset < len(body):
        topic, offset = _string(body, offset)
        if offset >= len(body) or body[offset] > 2:
            raise MalformedPacket("bad requested QoS [MQTT-3-8.3-4]")
        topics.append((topic, body[offset]))
        offset += 1
    if not topics:
        raise MalformedPacket("SUBSCRIBE without topic filters [MQTT-3.8.3-3]")
    return pid, topics


def decode_unsubscribe(body: bytes) -> tuple[int, list[str]]:
    """(packet id, [filter]) of an UNSUBSCRIBE body."""
    pid, offset, topics = packet_id(body), 2, []
    while offset < len(body):
        topic, offset = _string(body, offset)
        topics.append(topic)
    if not topics:
        raise MalformedPacket("UNSUBSCRIBE without topic filters [MQTT-3.10.3-2]")
    return pid, topics


def encode_publish(topic: str, payload: bytes, qos: int, pid: int | None, retain: bool, dup: bool) -> bytes:
    """A complete PUBLISH packet."""
    name = topic.encode("utf-8")
    head = _PID.pack(len(name)) + name + (_PID.pack(pid) if qos and pid is not None else b"")
    first = 0x30 | (qos << 1) | (0x08 if dup and qos else 0) | (0x01 if retain else 0)
    return bytes((first,)) + _varint(len(head) + len(payload)) + head + payload


def encode_ack(kind: int, pid: int) -> bytes:
    """PUBACK, PUBREC or PUBCOMP for ``pid``."""
    return bytes((kind << 4, 2)) + _PID.pack(pid)


def encode_connack(session_present: bool, return_code: int) -> bytes:
    """CONNACK; session present is only ever set on an accepted connection [MQTT-3.2.2-4]."""
    return bytes((0x20, 2, 1 if session_present and return_code == 0 else 0, return_code))
