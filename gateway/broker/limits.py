"""Admission limits of the embedded broker: what one client may cost the gateway in memory, CPU and time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.settings import BrokerSection


@dataclass(frozen=True, slots=True)
class BrokerLimits:
    """Bounds on connections, queues, rates and timers; defaults match ``BrokerSection``'s."""

    max_connections: int = 200
    # A client silent for keepalive × grace is disconnected and its will published [MQTT-3.1.2-24].
    keepalive_grace: float = 1.5
    max_payload_bytes: int = 65536
    # Per client: messages waiting to be sent to it (its in-flight window is on top of this).
    client_queue_max: int = 1000
    # Per client (service accounts exempt): QoS 0 beyond the rate is dropped, QoS 1 is slowed down.
    rate_limit_msgs_per_s: float = 500.0
    rate_limit_burst: int = 1000
    # An unacknowledged QoS 1 message is re-sent (DUP) this often while connected, and on every reconnect.
    inflight_retry_s: float = 20.0
    inflight_window: int = 20
    # Per client: received QoS 1/2 messages whose PUBACK/PUBREC waits for their commit; at the limit the
    # client's next packet is not read until the oldest is acknowledged (back-pressure, nothing dropped).
    # Large enough that a client's share of a slow commit never stalls it: the memory bound is the shared
    # broker, router and writer queues behind it.
    ack_window: int = 1000
    connect_timeout_s: float = 10.0
    # Pre-login connections (TCP open, no CONNECT yet): bounded so half-open sockets cannot keep nodes out.
    # Over a bound the oldest pending one (of that IP / of the most crowded IP) is closed; above
    # ``prelogin_pressure_at`` each has ``connect_timeout_pressure_s`` instead of ``connect_timeout_s``.
    prelogin_max: int = 256
    prelogin_max_per_ip: int = 64
    prelogin_pressure_at: int = 64
    connect_timeout_pressure_s: float = 2.0
    session_expiry_s: float = 7 * 86400.0
    max_retained: int = 10_000
    # Bytes queued in a client's socket before we stop writing to it (a client that does not read).
    write_buffer_max: int = 256 * 1024
    # Bytes read ahead from a client's socket before asyncio stops reading it (StreamReader limit; it pauses
    # at twice this). asyncio's 64 KiB held 128 KiB per flooding client once back-pressure stopped us
    # reading: 6 MB of a 50-node overload's peak RSS. A packet larger than this is still read whole.
    read_buffer_bytes: int = 16 * 1024

    @property
    def max_packet_bytes(self) -> int:
        """Larger packets close the connection; oversize payloads below this reach the router to be counted."""
        return 4 * self.max_payload_bytes + 1024

    @classmethod
    def from_settings(cls, section: BrokerSection) -> BrokerLimits:
        """The limits configured in ``[broker]``."""
        return cls(
            max_connections=section.max_connections,
            keepalive_grace=section.keepalive_grace,
            max_payload_bytes=section.max_payload_bytes,
            client_queue_max=section.client_queue_max,
            rate_limit_msgs_per_s=section.rate_limit_msgs_per_s,
            rate_limit_burst=section.rate_limit_burst,
            inflight_retry_s=section.inflight_retry_s,
            session_expiry_s=section.session_expiry_s,
            connect_timeout_s=section.connect_timeout_s,
            prelogin_max=section.prelogin_max,
            prelogin_max_per_ip=section.prelogin_max_per_ip,
            prelogin_pressure_at=section.prelogin_pressure_at,
            connect_timeout_pressure_s=section.connect_timeout_pressure_s,
        )
