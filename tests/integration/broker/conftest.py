"""Fixtures for broker tests: the embedded broker on a free port, feeding a recording sink."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from functools import cache
from typing import Any

import pytest

from gateway.broker.acl import TopicACL
from gateway.broker.auth import Account, Authenticator, hash_password
from gateway.broker.limits import BrokerLimits
from gateway.broker.messages import InboundMessage
from gateway.broker.server import EmbeddedBroker

PASSWORD = "node-secret"


@cache
def password_hash() -> str:
    """One argon2 hash (Pi parameters) shared by the test accounts."""
    return hash_password(PASSWORD)


def accounts(*names: str, role: str = "node") -> list[Account]:
    """Accounts with the test password."""
    return [Account(name, password_hash(), role) for name in names]


class RecordingSink:
    """Stands where the router is: records what the broker hands over, when."""

    def __init__(self) -> None:
        self.messages: list[InboundMessage] = []
        self.arrived_at: list[float] = []

    async def put(self, message: InboundMessage) -> None:
        self.messages.append(message)
        self.arrived_at.append(asyncio.get_running_loop().time())
        if message.ack is not None:  # recorded is as durable as it gets here: the broker may acknowledge
            message.ack.set()

    def offer(self, message: InboundMessage) -> bool:
        """Record a QoS 0 message (never full)."""
        self.messages.append(message)
        self.arrived_at.append(asyncio.get_running_loop().time())
        return True

    @property
    def depth(self) -> int:
        """Messages waiting: none, each is recorded as it arrives."""
        return 0

    def on(self, topic: str) -> list[InboundMessage]:
        """Messages received on ``topic``."""
        return [m for m in self.messages if m.topic == topic]


BrokerFactory = Callable[..., Awaitable[tuple[EmbeddedBroker, RecordingSink]]]


@pytest.fixture
async def broker_factory() -> AsyncIterator[BrokerFactory]:
    """``await make(anonymous=True, users=[...], sink=None, **limits)`` → (broker, sink); stopped after the test."""
    started: list[EmbeddedBroker] = []

    async def make(*, anonymous: bool = True, users: Iterable[Account] = (), sink: Any = None,
                   **limits: Any) -> tuple[EmbeddedBroker, Any]:
        sink = sink if sink is not None else RecordingSink()
        broker = EmbeddedBroker("127.0.0.1", 0, sink, Authenticator(users, anonymous), TopicACL(anonymous),
                                limits=BrokerLimits(**limits))
        await broker.start()
        started.append(broker)
        return broker, sink

    yield make
    for broker in started:
        await broker.stop()
