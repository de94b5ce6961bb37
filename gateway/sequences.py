"""Per-node message identity (boot id + sequence number): recognise re-sent messages, count gaps.

A node that sends ``"boot"`` and ``"seq"`` (firmware_contracts/README.md, "Message identity") numbers every
data message of a boot 0, 1, 2, … The gateway keeps, per node, the boot, the highest number committed and
the *holes* below it: ranges of numbers not (yet) received. Re-sent messages may come back in any order and
arbitrarily late (a client library re-sending after a reconnect interleaves old and new messages, and may
hold some back until the next reconnect), so nothing is judged by distance: a number is a duplicate exactly
when it is at most the highest and in no hole. A hole that is never filled is a gap (lost on the node's
side); only when a node has more than ``MAX_HOLES`` separate holes is the oldest given up on.

The state is updated here when a message is accepted and reaches SQLite (``node_sequences``) in the same
transaction as the message's rows, so after a ``kill -9`` the database knows exactly the messages it holds:
a re-sent one is dropped (and acknowledged), one that was never committed is stored.
"""

from __future__ import annotations

import bisect
import json
import logging
from dataclasses import dataclass, field

from gateway.clock import Clock
from gateway.prometheus import Metrics
from gateway.store import nodes
from gateway.store.db import Database
from gateway.store.nodes import SeqMark

log = logging.getLogger(__name__)

MAX_HOLES = 256  # separate missing ranges remembered per node (a few bytes each in node_sequences)
# A node first seen this far into a boot (identity newly enabled, or a replaced database): the numbers before
# are unknown rather than missing.
UNKNOWN_PREFIX = 4096
MAX_SEQ = 4_294_967_295  # uint32, as in the contract


@dataclass(slots=True)
class _State:
    boot: str
    high: int  # highest number committed in this boot (-1: none yet)
    # Missing ranges [lo, hi] below ``high``, sorted, disjoint: starts in ``lows``, ends in ``highs``.
    lows: list[int] = field(default_factory=list)
    highs: list[int] = field(default_factory=list)
    gaps: int = 0  # numbers given up on (all boots)
    duplicates: int = 0

    def missing(self) -> int:
        """Numbers below the highest that have not arrived (yet)."""
        return sum(hi - lo + 1 for lo, hi in zip(self.lows, self.highs, strict=True))

    def holes_text(self) -> str:
        return json.dumps([[lo, hi] for lo, hi in zip(self.lows, self.highs, strict=True)],
                          separators=(",", ":")) if self.lows else ""


def message_identity(payload: object) -> tuple[str, int] | None:
    """(boot, seq) of a schema-valid payload object that carries them, else None (older firmware)."""
    if not isinstance(payload, dict):
        return None
    return identity_of(payload.get("boot"), payload.get("seq"))


def identity_of(boot: object, seq: object) -> tuple[str, int] | None:
    """Normalise a boot id (string or counter) and a sequence number; None unless both are usable."""
    if boot is None or seq is None or isinstance(seq, bool) or not isinstance(seq, int):
        return None
    if isinstance(boot, bool) or not isinstance(boot, str | int) or not 0 <= seq <= MAX_SEQ:
        return None
    return str(boot), seq


class NodeSequences:
    """The in-memory mirror of ``node_sequences``: ``check()`` decides new or duplicate and returns the state."""

    def __init__(self, db: Database, clock: Clock, metrics: Metrics) -> None:
        self._db = db
        self._clock = clock
        self._metrics = metrics
        self._states: dict[int, _State] = {}

    async def load(self) -> None:
        """Read the committed state (at start, before any message is routed)."""
        self._states = {}
        for r in await nodes.sequences(self._db):
            holes = json.loads(r.holes) if r.holes else []
            self._states[r.node_id] = _State(r.boot, r.high, [h[0] for h in holes], [h[1] for h in holes], r.gaps,
                                             r.duplicates)

    def check(self, node_id: int, node_uid: str, boot: str, seq: int, dup_flag: bool) -> tuple[str | None, SeqMark]:
        """Record (node, boot, seq); returns (duplicate reason or None, the node's state to commit with it).

        Reasons: ``dup_flag`` (a re-send the MQTT client marked DUP) and ``resent`` (the same identity again
        without DUP, e.g. firmware re-publishing from its own buffer after a reconnect).
        """
        st = self._states.get(node_id)
        if st is None or st.boot != boot:
            high = -1 if seq < UNKNOWN_PREFIX else seq - 1
            if st is None:
                st = self._states[node_id] = _State(boot, high)
            else:
                self._give_up(st.missing(), st)  # the old boot's missing numbers will not come any more
                st.boot, st.high, st.lows, st.highs = boot, high, [], []
        reason: str | None = None
        if seq > st.high:
            if seq > st.high + 1:
                st.lows.append(st.high + 1)
                st.highs.append(seq - 1)
                if len(st.lows) > MAX_HOLES:
                    self._give_up(st.highs[0] - st.lows[0] + 1, st)
                    del st.lows[0], st.highs[0]
            st.high = seq
        else:
            i = bisect.bisect_right(st.lows, seq) - 1
            if i >= 0 and seq <= st.highs[i]:
                # Late but new: it fills (part of) a hole.
                lo, hi = st.lows[i], st.highs[i]
                if lo == hi:
                    del st.lows[i], st.highs[i]
                elif seq == lo:
                    st.lows[i] = seq + 1
                elif seq == hi:
                    st.highs[i] = seq - 1
                else:
                    st.highs[i] = seq - 1
                    st.lows.insert(i + 1, seq + 1)
                    st.highs.insert(i + 1, hi)
            else:
                reason = "dup_flag" if dup_flag else "resent"
                st.duplicates += 1
                self._metrics.ingest_duplicates.labels(reason=reason).inc()
        self._metrics.node_sequence_gaps.labels(node=node_uid).set(st.gaps + st.missing())
        return reason, SeqMark(node_id, st.boot, st.high, st.holes_text(), st.gaps, st.duplicates, self._clock.time())

    def _give_up(self, missing: int, st: _State) -> None:
        if missing > 0:
            st.gaps += missing
            self._metrics.ingest_sequence_gaps.inc(missing)

    def snapshot(self, node_id: int) -> _State | None:
        """A copy of the node's state, for ``restore`` if the message it is about to judge is not stored."""
        st = self._states.get(node_id)
        return None if st is None else _State(st.boot, st.high, list(st.lows), list(st.highs), st.gaps, st.duplicates)

    def restore(self, node_id: int, state: _State | None) -> None:
        """Undo ``check`` of a message that was not stored after all (its re-send must be new)."""
        if state is None:
            self._states.pop(node_id, None)
        else:
            self._states[node_id] = state

    def stats(self, node_id: int) -> dict[str, str | int] | None:
        """The node's boot, highest sequence number, gaps (given up on + still missing) and duplicates."""
        st = self._states.get(node_id)
        if st is None:
            return None
        return {"boot": st.boot, "seq": st.high, "gaps": st.gaps + st.missing(), "duplicates": st.duplicates}
