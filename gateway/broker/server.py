"""amqtt's Broker inside the gateway's loop: our authentication, ACL, admission control and delivery.

Patched amqtt 0.12.1 defects (the per-connection ones are listed in handler.py):
- clients over ``max_connections`` wait on a semaphore and never get a CONNACK → CONNACK 3 "server
  unavailable", counted; a client that never sends CONNECT held its slot forever → connect timeout, and
  pre-login connections are bounded per IP and overall (``prelogin.py``) and not counted against
  ``max_connections``, so half-open sockets cannot keep nodes out;
- on CONNECT, retained messages are pushed for every filter any client subscribed to, bypassing the ACL and
  duplicating the offline queue (broker.py ~599–602 and 1134–1158; upstream #14) → retained messages go out
  only for the client's own accepted SUBSCRIBE [MQTT-3.3.1-6], and a resumed session gets its queue once;
- anonymous sessions keep no offline queue (~365–366, 1034–1040; upstream #27) → every session is treated as
  identified: demo nodes have persistent sessions too;
- a QoS 0 publish is delivered at the subscription's QoS (line 1023) → min(publish, granted) [MQTT-3.8.4-6];
- unbounded broadcast queue, one task per delivery, 5 s PUBACK timeouts → admission straight into the
  router's bounded queue (the sink; no second queue), a bounded outbox per session, and a topic →
  subscribers cache so a topic nobody subscribes to (telemetry) costs one dict lookup;
- a failed login still took over (closed) the connected client with that id, and a client with another
  username took over or resumed the session (subscriptions, queued commands) of a client id → credentials
  first; a client id held by another account's live or persistent session is refused (CONNACK 2);
- a takeover attached the new connection before the old one wound down, whose disconnect handling then
  marked the new session disconnected → the old connection finishes first;
- the will topic is not checked against the ACL → a will the client may not publish refuses the connection;
- the session monitor removes sessions by client id after awaits, so a client reconnecting meanwhile could
  lose its new session → each is re-checked right before removal.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import Counter
from typing import Any

from amqtt.adapters import ReaderAdapter, StreamReaderAdapter, StreamWriterAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action, ListenerType
from amqtt.errors import AMQTTError, BrokerError, MQTTError, NoDataError
from amqtt.events import BrokerEvents
from amqtt.session import Session

from gateway.broker import wire
from gateway.broker.acl import TopicACL
from gateway.broker.admission import TokenBucket
from gateway.broker.auth import Authenticator
from gateway.broker.handler import GatewayProtocolHandler, ProtocolViolation
from gateway.broker.limits import BrokerLimits
from gateway.broker.messages import Ack, InboundMessage, MessageSink
from gateway.broker.outbox import Outbox, Outgoing
from gateway.broker.pacing import Turnstile
from gateway.broker.prelogin import PreLoginGate
from gateway.broker.wire import (
    ACCEPTED,
    BAD_USERNAME_PASSWORD,
    IDENTIFIER_REJECTED,
    NOT_AUTHORIZED,
    SERVER_UNAVAILABLE,
)
from gateway.clock import Clock, SystemClock
from gateway.ratelog import RateLimitedLog

log = logging.getLogger(__name__)

MAX_QOS = 1  # subscriptions are granted at most QoS 1: nothing the gateway sends needs QoS 2
_OUTBOX = "hydro.outbox"  # our key in Session.attributes (amqtt's place for extension state)
_ROUTE_CACHE_MAX = 4096
_SESSION_FIELDS = ("will_flag", "will_message", "will_topic", "will_qos", "will_retain", "keep_alive",
                   "password", "remote_address", "remote_port", "ssl_object")


def _well_formed_topic(topic: str) -> bool:
    # [MQTT-4.7.3-1] non-empty, [MQTT-3.3.2-2] no wildcards: anything else is a protocol violation.
    return bool(topic) and "#" not in topic and "+" not in topic


def _valid_publish_topic(topic: str) -> bool:
    # Well formed, and not a $-topic: those belong to the server [MQTT-4.7.2-1].
    return _well_formed_topic(topic) and not topic.startswith("$")


def _has_unread(reader: ReaderAdapter) -> bool:
    # Bytes received but not read yet. asyncio.StreamReader has no public accessor; its _buffer has been
    # there since 3.4, and if it ever goes away every connection simply counts as idle.
    buffer = getattr(getattr(reader, "_reader", None), "_buffer", None)
    return bool(buffer)


async def _close(writer: WriterAdapter, transport: asyncio.WriteTransport | None) -> None:
    try:
        await asyncio.wait_for(writer.close(), 1.0)
    except (TimeoutError, OSError):
        if transport is not None:
            transport.abort()


class GatewayBroker(Broker):  # type: ignore[misc]  # amqtt ships no type information
    """amqtt's Broker with the gateway's login, ACL, bounded admission and delivery.

    Every accepted PUBLISH (and will) is put straight into the sink (the router's bounded queue, the only
    queue it waits in), in arrival order, then delivered to MQTT subscribers. Overridden rather than done in
    amqtt plugins: plugin events run as fire-and-forget tasks, which would lose ordering and back-pressure.
    """

    def __init__(self, config: dict[str, Any], sink: MessageSink, authenticator: Authenticator, acl: TopicACL,
                 limits: BrokerLimits | None = None, clock: Clock | None = None) -> None:
        super().__init__(config)
        self.sink = sink
        self.authenticator = authenticator
        self.acl = acl
        self.limits = limits or BrokerLimits()
        self.clock: Clock = clock or SystemClock()
        self.refusals: Counter[str] = Counter()  # drained into Prometheus by the app
        self.last_refused: dict[str, tuple[str, str]] = {}  # reason → (client, detail) of its latest
        self.counters: Counter[str] = Counter()  # monotonic totals, for stats()
        self._routes: dict[str, tuple[tuple[Session, int], ...]] = {}
        self._connections = 0  # TCP connections, pre-login ones included
        self._established = 0  # connections past CONNECT: what max_connections bounds
        self._prelogin = PreLoginGate(self.limits.prelogin_max, self.limits.prelogin_max_per_ip,
                                      self.limits.prelogin_pressure_at, self.limits.connect_timeout_pressure_s)
        self._closing = False
        self._turnstile = Turnstile()
        self._ratelog = RateLimitedLog(log, 60.0, self.clock.monotonic)

    # ------------------------------------------------------------------ start / stop
    async def start(self) -> None:
        """Open the listener."""
        self._closing = False
        await super().start()

    async def shutdown(self) -> None:
        """Stop accepting, close every session (no wills: the gateway is going, not the nodes).

        What was accepted already waits in the sink; the router handles it (``Router.dispatch_pending``).
        """
        self._closing = True
        for server in self._servers.values():
            if server.instance is not None:
                server.instance.close()
        # All connections at once (amqtt closes them one by one, each waiting for its socket to drain).
        await asyncio.gather(*(handler.stop() for _, handler in list(self._sessions.values())),
                             return_exceptions=True)
        await super().shutdown()

    async def _broadcast_loop(self) -> None:
        # amqtt's broadcast queue and loop are replaced by admit → sink and the outboxes; this keeps the
        # task amqtt's shutdown expects.
        await self._broadcast_shutdown_waiter

    async def _session_monitor(self) -> None:
        # Each candidate is re-checked right before removal (see module docstring). amqtt stamps
        # last_disconnect_time with time.time(), so expiry compares against that clock.
        while True:
            expire_before = time.time() - self.limits.session_expiry_s
            for client_id in list(self._sessions):
                entry = self._sessions.get(client_id)
                if entry is None or entry[0].transitions.state != "disconnected":
                    continue
                session = entry[0]
                if session.clean_session or (session.last_disconnect_time or 0) < expire_before:
                    await self._cleanup_session(client_id)
            await self.clock.sleep(1.0)

    # ------------------------------------------------------------------ connections
    async def _create_server_instance(self, listener_name: str, listener_type: ListenerType, address: str | None,
                                      port: int, ssl_context: Any) -> Any:
        """amqtt's TCP listener, with a smaller read-ahead per connection (``limits.read_buffer_bytes``)."""
        if listener_type != ListenerType.TCP:
            return await super()._create_server_instance(listener_name, listener_type, address, port, ssl_context)
        return await asyncio.start_server(functools.partial(self.stream_connected, listener_name=listener_name),
                                          address, port, reuse_address=True, ssl=ssl_context,
                                          limit=self.limits.read_buffer_bytes)

    async def stream_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                               listener_name: str) -> None:
        """A TCP client connected: serve it (the transport lets us bound and abort its writes)."""
        await self._client_connected(listener_name, StreamReaderAdapter(reader), StreamWriterAdapter(writer),
                                     writer.transport)

    async def _client_connected(self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter,
                                transport: asyncio.WriteTransport | None = None) -> None:
        if listener_name not in self._servers:
            raise BrokerError(f"Invalid listener name '{listener_name}'")
        self._connections += 1
        try:
            await self._serve(reader, writer, transport)
        finally:
            self._connections -= 1

    async def _serve(self, reader: ReaderAdapter, writer: WriterAdapter,
                     transport: asyncio.WriteTransport | None) -> None:
        peer = writer.get_peer_info()
        ip = str(peer[0]) if peer else "?"
        who = f"{ip}:{peer[1]}" if peer else "?"
        loop = asyncio.get_running_loop()
        pending = None
        try:
            async with asyncio.timeout(self.limits.connect_timeout_s) as deadline:
                # Bounded per IP and overall, so half-open sockets cannot keep a node from connecting.
                pending = self._prelogin.enter(ip, deadline, loop.time(), lambda: _has_unread(reader))
                try:
                    handler, session = await GatewayProtocolHandler.init_from_connect(reader, writer,
                                                                                     self.plugins_manager)
                finally:
                    self._prelogin.leave(pending)
        except TimeoutError:
            self.note(pending.reason if pending is not None else "connect_timeout", ip)
            await _close(writer, transport)
            return
        except (AMQTTError, MQTTError, NoDataError, ValueError, asyncio.IncompleteReadError, OSError) as exc:
            self.note("bad_connect", who, repr(exc))
            await _close(writer, transport)
            return
        # Only connections past CONNECT count against max_connections: the pre-login ones have their own
        # bounds, and counting them here let 200 silent sockets refuse every node (CONNACK 3).
        over_limit = self._established >= self.limits.max_connections
        self._established += 1
        try:
            await self._serve_session(handler, session, reader, writer, transport, over_limit)
        finally:
            self._established -= 1

    async def _serve_session(self, handler: GatewayProtocolHandler, session: Session, reader: ReaderAdapter,
                             writer: WriterAdapter, transport: asyncio.WriteTransport | None,
                             over_limit: bool) -> None:
        who = str(session.username or session.client_id)
        await self._turnstile.wait()  # one session set up per loop iteration, however many CONNECTs arrive
        if over_limit:
            self.note("max_connections", who, f"limit {self.limits.max_connections}")
            await self._refuse(writer, transport, SERVER_UNAVAILABLE)
            return
        code = await self._login(session, who)
        if code != ACCEPTED:
            await self._refuse(writer, transport, code)
            return
        attached = await self._attach_session(session, who)
        if attached is None:
            await self._refuse(writer, transport, IDENTIFIER_REJECTED)
            return
        session = attached
        # From here to registration nothing awaits, so no other connection can claim this client id.
        unlimited = self.authenticator.role_of(session.username) == "service"
        bucket = None if unlimited else TokenBucket(self.limits.rate_limit_msgs_per_s, self.limits.rate_limit_burst,
                                                    self.clock.monotonic())
        handler.bind(self, transport, bucket)
        handler.attach(session, reader, writer)
        session.transitions.connect()
        self._sessions[session.client_id] = (session, handler)
        writer.write(wire.encode_connack(bool(session.parent), ACCEPTED))
        try:
            await self.plugins_manager.fire_event(BrokerEvents.CLIENT_CONNECTED, client_id=session.client_id,
                                                  client_session=session)
            await handler.start()
            await self._client_message_loop(session, handler)
        finally:
            handler.finished.set()

    async def _refuse(self, writer: WriterAdapter, transport: asyncio.WriteTransport | None, code: int) -> None:
        writer.write(wire.encode_connack(False, code))
        await _close(writer, transport)

    async def _login(self, session: Session, who: str) -> int:
        """CONNACK return code for this CONNECT: credentials, then the will topic's ACL."""
        ok, reason = await self.authenticator.authenticate(session.username, session.password)
        # Persistent sessions for every client, demo's anonymous nodes included (see module docstring).
        session.is_anonymous = False
        if not ok:
            self.note(f"auth_{reason}", who)
            if reason == "busy":
                return SERVER_UNAVAILABLE
            return NOT_AUTHORIZED if reason == "anonymous_refused" else BAD_USERNAME_PASSWORD
        if session.will_flag:
            topic = session.will_topic or ""
            if not _valid_publish_topic(topic) or not self._allowed(session, topic, Action.PUBLISH):
                self.note("acl_will", who, topic)
                return NOT_AUTHORIZED
        return ACCEPTED

    async def _attach_session(self, incoming: Session, who: str) -> Session | None:
        """The session this connection continues (same id and username, clean_session=0), a fresh one, or
        None when the client id is held by another account's connected or persistent session."""
        client_id = incoming.client_id
        existing = self._sessions.get(client_id)
        if existing is not None and existing[0].username != incoming.username and \
                (existing[0].transitions.state == "connected" or not existing[0].clean_session):
            # Neither kick that client off nor hand its subscriptions and queued commands to another account.
            self.note("client_id_in_use", who, client_id)
            return None
        while True:
            existing = self._sessions.get(client_id)
            if existing is None or existing[0].transitions.state != "connected":
                break
            await self._take_over(existing)
        if existing is not None:
            old = existing[0]
            # A clean session is never resumed, even while it waits for the monitor to remove it.
            if not incoming.clean_session and not old.clean_session and old.username == incoming.username:
                for name in _SESSION_FIELDS:
                    setattr(old, name, getattr(incoming, name))
                old.parent = 1
                return old
            await self._delete_session(client_id)
        incoming.parent = 0
        return incoming

    async def _take_over(self, existing: tuple[Session, Any]) -> None:
        # [MQTT-3.1.4-2] the connected client with this id is disconnected (as a lost connection: its will
        # is published) and wound down before the new connection is attached.
        session, handler = existing
        self.counters["takeover"] += 1
        await handler.handle_connection_closed()
        finished = getattr(handler, "finished", None)
        if finished is not None:
            try:
                await asyncio.wait_for(finished.wait(), 5.0)
            except TimeoutError:
                log.warning("take-over of %s: the old connection did not finish", session.client_id)
        if session.transitions.state == "connected":
            session.transitions.disconnect()

    # ------------------------------------------------------------------ inbound
    async def admit(self, handler: GatewayProtocolHandler, topic: str, payload: bytes, qos: int,
                    retain: bool, ack: Ack | None = None, dup: bool = False) -> bool:
        """Accept one PUBLISH: ACL, rate limit (QoS 0 dropped, QoS 1/2 delayed), the sink's bounded queue, retain.

        Returning False drops the message (not routed, not retained, and ``ack`` is not the router's to
        complete); the handler then acknowledges it at once, as MQTT 3.1.1 has no negative PUBACK and an
        unacknowledged QoS 1 message would be re-sent forever. Only a malformed topic (empty, wildcards) ends
        the connection.
        """
        if not _well_formed_topic(topic):
            raise ProtocolViolation("invalid_topic", repr(topic))
        if topic.startswith("$"):
            # $-topics belong to the server [MQTT-4.7.2-1]: a client's is dropped, not routed to "$SYS/#".
            self.note("dollar_topic", handler.who, topic)
            return False
        session = handler.session
        allowed = handler.acl_cache.get(topic)
        if allowed is None:
            allowed = self._allowed(session, topic, Action.PUBLISH)
            if len(handler.acl_cache) >= 256:
                handler.acl_cache.clear()
            handler.acl_cache[topic] = allowed
        if not allowed:
            # A client trying to command a node (or rewrite its config) gets its own reason: an operator
            # should see that someone bypasses the HTTP API, not one more denied publish.
            self.note("acl_gateway_topic" if self.acl.gateway_only(topic) else "acl_publish", handler.who, topic)
            return False
        bucket = handler.bucket
        if bucket is not None:
            wait = bucket.take(self.clock.monotonic())
            if wait:
                if not qos:
                    self.note("dropped_qos0_rate", handler.who, f"over {self.limits.rate_limit_msgs_per_s:g} msg/s")
                    return False
                # Not reading the next packet until then is the back-pressure on a QoS 1 publisher.
                self.counters["throttled_qos1"] += 1
                while wait:
                    await self.clock.sleep(wait)
                    wait = bucket.take(self.clock.monotonic())
        message = InboundMessage(topic, payload, session.client_id or "", session.username, qos, self.clock.time(),
                                 ack=ack, dup=dup)
        if qos:
            # Waiting for room here (not reading the client's next packet) is the back-pressure on QoS 1/2.
            await self.sink.put(message)
        elif not self.sink.offer(message):
            self.note("dropped_qos0_queue_full", handler.who, f"{self.sink.depth} waiting")
            return False
        self._to_subscribers(message)
        if retain:
            await self.retain_message(session, topic, payload, qos)
        return True

    def _to_subscribers(self, message: InboundMessage) -> None:
        """Hand an accepted message (already in the sink) to the MQTT subscribers of its topic."""
        if not self._subscriptions:
            return
        try:
            self._fan_out(message.topic, message.payload, message.qos)
        except Exception:
            # A delivery bug must not end the publisher's connection; the router has the message already.
            log.exception("delivering %s from %s failed", message.topic, message.client_id)

    async def _handle_message_delivery(self, client_session: Session, handler: Any, wait_deliver: Any) -> bool:
        # Our handler admits PUBLISHes as it reads them and never fills amqtt's per-session delivery queue;
        # anything that does arrive there is admitted the same way.
        message = wait_deliver.result()
        if message is None:
            return True
        try:
            await self.admit(handler, message.topic, bytes(message.data), message.qos or 0, bool(message.retain))
        except ProtocolViolation as exc:
            # amqtt returned False here, which only left the message loop and kept the connection open.
            self.note(exc.reason, handler.who, exc.detail)
            handler.abort()
        return True

    async def _broadcast_message(self, session: Session | None, topic: str | None, data: bytes | bytearray | None,
                                 force_qos: int | None = None) -> None:
        # amqtt calls this for a client's will (session set) and for internal_message_broadcast (None).
        if topic is None or data is None:
            return
        payload = bytes(data)
        if session is None:
            if self._subscriptions:
                self._fan_out(topic, payload, force_qos)
            return
        if self._closing:
            return  # the gateway shutting down is not the node going offline
        message = InboundMessage(topic, payload, session.client_id or "", session.username, force_qos or 0,
                                 self.clock.time())
        await self.sink.put(message)
        self._to_subscribers(message)

    async def retain_message(self, source_session: Session | None, topic_name: str | None,
                             data: bytes | bytearray | None, qos: int | None = None) -> None:
        """Store (or with an empty payload, clear) the retained message of a topic; the store is bounded."""
        if data and topic_name is not None and topic_name not in self._retained_messages \
                and len(self._retained_messages) >= self.limits.max_retained:
            who = str(source_session.username or source_session.client_id) if source_session else "gateway"
            self.note("retained_store_full", who, topic_name)
            return
        await super().retain_message(source_session, topic_name, data, qos)

    # ------------------------------------------------------------------ ACL
    def _allowed(self, session: Session, topic: str, action: Action) -> bool:
        role = self.authenticator.role_of(session.username)
        if action is Action.PUBLISH:
            return self.acl.can_publish(session.username, role, topic)
        if action is Action.SUBSCRIBE:
            return self.acl.can_subscribe(session.username, role, topic)
        return True

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        allowed = self._allowed(session, topic, action)
        if not allowed:
            self.note(f"acl_{action.value}", str(session.username or session.client_id), topic)
        return allowed

    # ------------------------------------------------------------------ subscriptions and delivery
    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        """Subscribe (ACL-checked), granting at most QoS 1; a repeated filter replaces the old QoS [MQTT-3.8.4-3]."""
        topic_filter, requested = subscription
        granted: int = await super().add_subscription((topic_filter, min(requested, MAX_QOS)), session)
        if granted != 0x80:
            entries = self._subscriptions[topic_filter]
            for index, (subscriber, _) in enumerate(entries):
                if subscriber.client_id == session.client_id:
                    entries[index] = (session, granted)
        self._routes.clear()
        return granted

    def _del_subscription(self, a_filter: str, session: Session) -> int:
        self._routes.clear()
        deleted: int = super()._del_subscription(a_filter, session)
        return deleted

    async def _publish_retained_messages_for_subscription(self, subscription: tuple[str, int],
                                                          session: Session) -> None:
        # Called by amqtt only for an accepted (ACL-checked) SUBSCRIBE of this session.
        topic_filter = subscription[0]
        granted = next((q for s, q in self._subscriptions.get(topic_filter, ()) if s.client_id == session.client_id),
                       None)
        if granted is None:
            return
        for topic, retained in list(self._retained_messages.items()):
            if self._matches(topic, topic_filter):
                qos = min(granted, retained.qos or 0)
                self._deliver(session, Outgoing(topic, bytes(retained.data), qos, retain=True))

    def _fan_out(self, topic: str, payload: bytes, qos: int | None) -> None:
        routes = self._routes.get(topic)
        if routes is None:
            routes = self._route(topic)
        for session, granted in routes:
            self._deliver(session, Outgoing(topic, payload, granted if qos is None else min(qos, granted)))

    def _route(self, topic: str) -> tuple[tuple[Session, int], ...]:
        # One copy per session, at the highest QoS any of its matching subscriptions was granted.
        best: dict[str, tuple[Session, int]] = {}
        for topic_filter, subscriptions in self._subscriptions.items():
            if subscriptions and self._matches(topic, topic_filter):
                for session, granted in subscriptions:
                    known = best.get(session.client_id)
                    if known is None or granted > known[1]:
                        best[session.client_id] = (session, granted)
        routes = tuple(best.values())
        if len(self._routes) >= _ROUTE_CACHE_MAX:
            self._routes.clear()
        self._routes[topic] = routes
        return routes

    def _deliver(self, session: Session, message: Outgoing) -> None:
        entry = self._sessions.get(session.client_id)
        handler = entry[1] if entry is not None and entry[0] is session else None
        # A connection being closed counts as gone already: its outbox has just dropped its QoS 0 messages.
        connected = session.transitions.state == "connected" and not (handler is not None and handler.closing)
        if not connected and (message.qos == 0 or session.clean_session):
            return  # QoS 0 is not kept for an absent client, and a clean session will not be resumed
        dropped = self.outbox(session).push(message)
        if dropped is not None:
            self.note(f"dropped_outbound_qos{dropped.qos}", str(session.username or session.client_id), dropped.topic)
        if connected and handler is not None:
            handler.pump()

    def outbox(self, session: Session) -> Outbox:
        """The session's queue of messages still to be sent (kept across reconnects of a persistent session)."""
        box = session.attributes.get(_OUTBOX)
        if not isinstance(box, Outbox):
            box = session.attributes[_OUTBOX] = Outbox(self.limits.client_queue_max)
        return box

    # ------------------------------------------------------------------ accounting
    def note(self, event: str, who: str, detail: str = "") -> None:
        """Count a refusal, drop or forced disconnection, and log it (at most once a minute per client and kind)."""
        self.refusals[event] += 1
        self.counters[event] += 1
        self.last_refused[event] = (who, detail)
        self._ratelog.warn(f"{who}:{event}", "MQTT %s: %s %s", event, who, detail)

    def stats(self) -> dict[str, int]:
        """Connections, sessions, queue depths and every counter since start."""
        sessions = [session for session, _ in self._sessions.values()]
        return {
            "connections": self._connections,
            "prelogin": len(self._prelogin),
            "prelogin_seen": self._prelogin.entered,
            "clients_connected": sum(1 for s in sessions if s.transitions.state == "connected"),
            "sessions": len(sessions),
            "subscriptions": sum(len(v) for v in self._subscriptions.values()),
            "retained": len(self._retained_messages),
            "inbound_queue": self.sink.depth,
            "outbound_backlog": sum(len(self.outbox(s)) for s in sessions),
            "inflight_out": sum(len(s.inflight_out) for s in sessions),
            **self.counters,
        }


class EmbeddedBroker:
    """Starts/stops the broker on the gateway's loop and publishes on the gateway's behalf."""

    def __init__(self, host: str, port: int, sink: MessageSink, authenticator: Authenticator, acl: TopicACL,
                 max_connections: int = 200, *, limits: BrokerLimits | None = None,
                 clock: Clock | None = None) -> None:
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}"}},
            "plugins": {},
            "timeout_disconnect_delay": 0,
        }
        limits = limits or BrokerLimits(max_connections=max_connections)
        self.broker = GatewayBroker(config, sink, authenticator, acl, limits, clock)
        self.authenticator = authenticator
        self._port = port

    async def start(self) -> None:
        """Open the listener; returns once the port accepts connections."""
        await self.broker.start()
        server = self.broker._servers["default"].instance
        sockets: tuple[Any, ...] = tuple(getattr(server, "sockets", None) or ())
        if sockets:
            self._port = int(sockets[0].getsockname()[1])

    @property
    def port(self) -> int:
        """The bound TCP port (useful when configured as 0); still known while and after the listener closes
        (the status page is asked during shutdown too)."""
        return self._port

    def is_serving(self) -> bool:
        """Whether the listener accepts connections (False before ``start`` and once its server closed)."""
        servers = getattr(self.broker, "_servers", {})
        instance = getattr(servers.get("default"), "instance", None)
        return instance is not None and bool(instance.is_serving())

    async def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        """Publish from the gateway itself (commands, node configs)."""
        if retain:
            await self.broker.retain_message(None, topic, payload, qos)
        await self.broker.internal_message_broadcast(topic, payload, qos)

    def clients(self) -> list[dict[str, Any]]:
        """Currently connected clients."""
        out = []
        for client_id, (session, _handler) in self.broker.sessions.items():
            if session.transitions.state == "connected":
                out.append({"client_id": client_id, "username": session.username})
        return out

    def stats(self) -> dict[str, int]:
        """Broker statistics (see ``GatewayBroker.stats``)."""
        return self.broker.stats()

    async def stop(self) -> None:
        """Close every session and the listener."""
        try:
            await self.broker.shutdown()
        finally:
            self.authenticator.close()
