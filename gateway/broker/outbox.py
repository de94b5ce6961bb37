"""What a session still has to receive: a bounded backlog in front of its window of QoS 1 messages in flight."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One message on its way to one subscriber, at the QoS that subscriber gets."""

    topic: str
    payload: bytes
    qos: int
    retain: bool = False


class Outbox:
    """A FIFO of at most ``limit`` messages that survives reconnects of a persistent session.

    When full, a new QoS 0 message is dropped; a new QoS 1 message pushes out the oldest one, so a node
    that was away for long gets the latest commands and configs rather than the stalest.
    """

    __slots__ = ("backlog", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.backlog: deque[Outgoing] = deque()

    def push(self, message: Outgoing) -> Outgoing | None:
        """Queue ``message``; returns the message dropped to make room (possibly ``message`` itself), if any."""
        if len(self.backlog) < self.limit:
            self.backlog.append(message)
            return None
        if message.qos == 0:
            return message
        dropped = self.backlog.popleft()
        self.backlog.append(message)
        return dropped

    def drop_qos0(self) -> int:
        """Forget the QoS 0 messages still waiting (the client went away); returns how many."""
        kept = deque(m for m in self.backlog if m.qos)
        dropped = len(self.backlog) - len(kept)
        self.backlog = kept
        return dropped

    def __len__(self) -> int:
        return len(self.backlog)
