"""Load generator process: a share of the simulated nodes as real paho-mqtt clients, all driven by one
thread (select over their sockets, paho's external-loop API), publishing telemetry at QoS 1 on an
open-loop schedule.

Protocol with the parent (bench/ingest.py), one JSON object per line:
  stdout  {"event": "ready", "nodes": n}            after every client got CONNACK (and its hello a PUBACK)
  stdin   {"cmd": "step", "start_at": wall_s, "rate": msg_per_s, "seconds": s, "batch": k, "seq_base": b}
  stdout  {"event": "done", "sent_msgs": …, "sent_samples": …, "acked": …, "max_lag_s": …, …}
  stdin   {"cmd": "quit"}

Open loop: message i is due at start + i / rate whatever the broker does; its samples carry
``ts`` = that scheduled wall time, so a broker that pushes back shows up as latency, not as a lower
offered rate (no coordinated omission). ``max_lag_s`` says how far the generator itself fell behind.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import sys
import time
from typing import Any

import paho.mqtt.client as mqtt
from common import BenchNode, bench_nodes, send_json, telemetry_payload
from paho.mqtt.enums import CallbackAPIVersion

BURST_MAX = 256  # publishes issued before servicing sockets again when behind schedule


class Fleet:
    """Many paho clients serviced by one select() loop."""

    def __init__(self, nodes: list[BenchNode], host: str, port: int, inflight: int, identity: bool = False) -> None:
        self.nodes = nodes
        # The node message identity (boot, seq): one boot per generator process, one counter per node.
        self.boot = f"g{os.getpid():x}" if identity else None
        self.msg_seq = [0] * len(nodes)
        self._sent_at: dict[tuple[int, int], float] = {}
        self.ack_latencies: list[float] = []
        self.acked = 0
        self.connected = 0
        self.errors: list[str] = []
        self.clients: list[mqtt.Client] = []
        self._last_misc = time.monotonic()
        for node in nodes:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=node.uid, clean_session=True)
            client.max_inflight_messages_set(inflight)  # paho's default of 20 would throttle QoS 1
            client.max_queued_messages_set(0)  # unbounded: the open loop never drops a message locally
            client.on_connect = self._on_connect
            client.on_publish = self._on_publish
            client.on_disconnect = self._on_disconnect
            client.connect(host, port, keepalive=120)
            self.clients.append(client)

    def _on_connect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            self.errors.append(f"connect refused: {reason}")
        else:
            self.connected += 1

    def _on_publish(self, client: mqtt.Client, _u: Any, mid: int, _reason: Any, _p: Any) -> None:
        self.acked += 1
        sent = self._sent_at.pop((id(client), mid), None)
        if sent is not None:
            self.ack_latencies.append(time.monotonic() - sent)

    def _on_disconnect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        self.errors.append(f"{client._client_id.decode()} disconnected: {reason}")

    def pump(self, timeout: float, extra_fds: tuple[int, ...] = ()) -> list[int]:
        """Service every socket once (waiting up to ``timeout``); returns the ready ``extra_fds``."""
        socks: dict[Any, mqtt.Client] = {c.socket(): c for c in self.clients if c.socket() is not None}
        writers = [s for s, c in socks.items() if c.want_write()]
        rlist: list[Any] = [*socks, *extra_fds]
        readable, writable, _ = select.select(rlist, writers, [], max(0.0, timeout))
        ready_extra = []
        for s in readable:
            if isinstance(s, int):
                ready_extra.append(s)
            else:
                socks[s].loop_read()
        for s in writable:
            socks[s].loop_write()
        now = time.monotonic()
        if now - self._last_misc > 1.0:  # keepalive pings
            self._last_misc = now
            for c in self.clients:
                c.loop_misc()
        return ready_extra

    def pump_until(self, done: Any, timeout: float) -> bool:
        """Pump until ``done()`` is true; False on timeout."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline or self.errors:
                return False
            self.pump(0.02)
        return True

    def hello(self) -> bool:
        """Every node announces itself on hydro/node_hello (QoS 1) and waits for the PUBACKs."""
        target = self.acked + len(self.clients)
        for node, client in zip(self.nodes, self.clients, strict=True):
            client.publish("hydro/node_hello", node.hello(), qos=1)
        return self.pump_until(lambda: self.acked >= target, 30.0)

    def run_step(self, start_at: float, rate: float, seconds: float, batch: int, seq_base: int) -> dict[str, Any]:
        """Publish ``rate`` msg/s for ``seconds`` starting at wall time ``start_at``; wait for the PUBACKs."""
        total = max(1, round(rate * seconds))
        interval = 1.0 / rate
        seqs = [seq_base] * len(self.clients)
        acked_before = self.acked
        cpu_before = time.process_time()
        while time.time() < start_at:
            self.pump(min(0.02, start_at - time.time()))
        mono0 = time.monotonic()
        wall0 = start_at
        sent = 0
        max_lag = 0.0
        n = len(self.clients)
        while sent < total:
            now = time.monotonic() - mono0
            burst = 0
            while sent < total and sent * interval <= now and burst < BURST_MAX:
                due = sent * interval
                max_lag = max(max_lag, now - due)
                k = sent % n
                identity = None
                if self.boot is not None:
                    identity = (self.boot, self.msg_seq[k])
                    self.msg_seq[k] += 1
                payload = telemetry_payload(seqs[k], batch, wall0 + due, identity)
                seqs[k] += batch
                client = self.clients[k]
                info = client.publish(self.nodes[k].topic, payload, qos=1)
                self._sent_at[(id(client), info.mid)] = time.monotonic()
                sent += 1
                burst += 1
            next_due = sent * interval - (time.monotonic() - mono0)
            self.pump(min(0.005, next_due) if burst < BURST_MAX else 0.0)
        publish_end = time.time()
        all_acked = self.pump_until(lambda: self.acked - acked_before >= total, 120.0)
        lat = sorted(self.ack_latencies)
        self.ack_latencies = []
        self._sent_at.clear()
        return {
            # publish() → PUBACK, seconds (the PUBACK now waits for the SQLite commit)
            "ack_p50_s": lat[len(lat) // 2] if lat else None,
            "ack_p99_s": lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None,
            "event": "done",
            "sent_msgs": total,
            "sent_samples": total * batch,
            "acked": self.acked - acked_before,
            "all_acked": all_acked,
            "acked_at": time.time(),
            "publish_s": publish_end - wall0,
            "max_lag_s": max_lag,
            "cpu_s": time.process_time() - cpu_before,
            "errors": self.errors[:5],
        }

    def close(self) -> None:
        """Disconnect every client cleanly."""
        for c in self.clients:
            c.disconnect()
        self.pump(0.05)


def _commands(fleet: Fleet) -> Any:
    """Yield parent commands while keeping the MQTT sessions alive in between."""
    buf = b""
    while True:
        if b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            if line.strip():
                yield json.loads(line)
            continue
        if sys.stdin.fileno() in fleet.pump(0.2, (sys.stdin.fileno(),)):
            chunk = os.read(sys.stdin.fileno(), 65536)
            if not chunk:
                return
            buf += chunk


def main() -> int:
    """Connect this process's share of the nodes, then obey the parent's step commands."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--nodes", type=int, required=True, help="nodes in the whole run")
    p.add_argument("--procs", type=int, default=1, help="generator processes in the run")
    p.add_argument("--proc-index", type=int, default=0)
    p.add_argument("--inflight", type=int, default=1000, help="paho max_inflight_messages per client")
    p.add_argument("--no-hello", action="store_true", help="skip node_hello (the baseline ignores it anyway)")
    p.add_argument("--identity", action="store_true", help="send the node message identity (boot, seq)")
    args = p.parse_args()
    nodes = [n for n in bench_nodes(args.nodes) if n.index % args.procs == args.proc_index]
    fleet = Fleet(nodes, args.host, args.port, args.inflight, args.identity)
    if not fleet.pump_until(lambda: fleet.connected == len(nodes), 30.0):
        send_json(sys.stdout, {"event": "error", "error": f"connected {fleet.connected}/{len(nodes)}",
                               "errors": fleet.errors[:5]})
        return 1
    if not args.no_hello and not fleet.hello():
        send_json(sys.stdout, {"event": "error", "error": "node_hello not acknowledged", "errors": fleet.errors[:5]})
        return 1
    send_json(sys.stdout, {"event": "ready", "nodes": len(nodes)})
    for cmd in _commands(fleet):
        if cmd["cmd"] == "step":
            send_json(sys.stdout, fleet.run_step(cmd["start_at"], cmd["rate"], cmd["seconds"], cmd["batch"],
                                                 cmd["seq_base"]))
        elif cmd["cmd"] == "quit":
            break
    fleet.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
