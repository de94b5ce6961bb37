"""Per-node message identity (boot id + sequence number): recognise re-sent messages, count gaps.

A node that sends ``"boot"`` and ``"seq"`` (firmware_contracts/README.md, "Message identity") numbers every
data message of a boot 0, 1, 2, … The gateway keeps, per node, the boot, the highest sequence number and a
63-bit mask of which of the numbers just below it it has seen. The state is updated here when a message is
accepted and reaches SQLite (``node_sequences``) in the same transaction as the message's rows, so after a
``kill -9`` the database knows exactly the messages it holds: a re-sent one is dropped (and acknowledged),
one that was never committed is stored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from gateway.clock import Clock
from gateway.metrics import Metrics
from gateway.store.db import Database
from gateway.writer import SeqMark

log = logging.getLogger(__name__)

MASK_BITS = 63  # fits SQLite's signed 64-bit INTEGER
_MASK = (1 << MASK_BITS) - 1
MAX_SEQ = 4_294_967_295  # uint32, as in the contract


@dataclass(slots=True)
class _State:
    boot: str
    seq: int
    seen_mask: int
    gaps: int
    duplicates: int


def message_identity(payload: Any) -> tuple[str, int] | None:
    """(boot, seq) of a schema-valid payload object that carries them, else None (older firmware)."""
    if not isinstance(payload, dict):
        return None
    return identity_of(payload.get("boot"), payload.get("seq"))


def identity_of(boot: Any, seq: Any) -> tuple[str, int] | None:
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
        rows = await self._db.fetchall("SELECT node_id, boot, seq, seen_mask, gaps, duplicates FROM node_sequences")
        self._states = {int(r[0]): _State(str(r[1]), int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in rows}

    def check(self, node_id: int, node_uid: str, boot: str, seq: int, dup_flag: bool) -> tuple[str | None, SeqMark]:
        """Record (node, boot, seq); returns (duplicate reason or None, the node's state to commit with it).

        Reasons: ``dup_flag`` (a re-send the MQTT client marked DUP), ``resent`` (the same identity again
        without DUP, e.g. firmware re-publishing from its own buffer) and ``stale`` (older than the
        63-message window: treated as already seen rather than risk storing it twice).
        """
        st = self._states.get(node_id)
        reason: str | None = None
        if st is None or st.boot != boot:
            # A new boot (or a node never seen with an identity): its numbering starts over. Numbers before the
            # first one we see are not counted as gaps: they may predate this gateway's knowledge of the node.
            if st is None:
                st = self._states[node_id] = _State(boot, seq, 1, 0, 0)
            else:
                st.boot, st.seq, st.seen_mask = boot, seq, 1
        else:
            ahead = seq - st.seq
            if ahead > 0:
                if ahead > 1:
                    st.gaps += ahead - 1
                    self._metrics.ingest_sequence_gaps.inc(ahead - 1)
                st.seen_mask = ((st.seen_mask << ahead) | 1) & _MASK if ahead < MASK_BITS else 1
                st.seq = seq
            else:
                back = -ahead
                if back < MASK_BITS and not (st.seen_mask >> back) & 1:
                    # Late but new (it was counted as a gap when a later number arrived).
                    st.seen_mask |= 1 << back
                    st.gaps = max(0, st.gaps - 1)
                else:
                    reason = "dup_flag" if dup_flag else ("resent" if back < MASK_BITS else "stale")
                    st.duplicates += 1
                    self._metrics.ingest_duplicates.labels(reason=reason).inc()
        self._metrics.node_sequence_gaps.labels(node=node_uid).set(st.gaps)
        return reason, SeqMark(node_id, st.boot, st.seq, st.seen_mask, st.gaps, st.duplicates, self._clock.time())

    def stats(self, node_id: int) -> dict[str, Any] | None:
        """The node's boot, last sequence number, gaps and duplicates (None: it sends no identity)."""
        st = self._states.get(node_id)
        if st is None:
            return None
        return {"boot": st.boot, "seq": st.seq, "gaps": st.gaps, "duplicates": st.duplicates}
