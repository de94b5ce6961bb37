"""The per-node message identity: exact under any re-send order, however late; gaps counted."""

from __future__ import annotations

import random

from gateway.clock import ManualClock
from gateway.prometheus import Metrics
from gateway.sequences import MAX_HOLES, NodeSequences


def _tracker() -> tuple[NodeSequences, Metrics]:
    metrics = Metrics()
    return NodeSequences(None, ManualClock(), metrics), metrics  # type: ignore[arg-type]  # no load() here


def test_resends_in_any_order_are_recognised_and_new_numbers_are_not() -> None:
    seqs, _ = _tracker()
    # A client library re-sending after reconnects: runs of old unacknowledged numbers interleaved with new ones.
    runs = [list(range(start, start + 25)) for start in range(0, 1500, 25)]
    random.Random(19).shuffle(runs)
    order = [n for run in runs for n in run]
    assert all(seqs.check(1, "nd", "b", n, False)[0] is None for n in order)
    again = order[:700]
    random.Random(20).shuffle(again)
    assert [seqs.check(1, "nd", "b", n, True)[0] for n in again] == ["dup_flag"] * 700
    stats = seqs.stats(1)
    assert stats == {"boot": "b", "seq": 1499, "gaps": 0, "duplicates": 700}
    _, mark = seqs.check(1, "nd", "b", 1500, False)
    assert mark.high == 1500 and mark.holes == ""  # contiguous: nothing kept but the highest number


def test_a_resend_held_back_for_thousands_of_messages_is_still_new() -> None:
    seqs, _ = _tracker()
    for n in range(100_000):
        if n != 17:
            seqs.check(1, "nd", "b", n, False)
    assert seqs.check(1, "nd", "b", 17, True)[0] is None  # a client re-sent it after the next reconnect
    assert seqs.check(1, "nd", "b", 17, True)[0] == "dup_flag"


def test_a_missing_number_is_a_gap_and_is_given_up_on_only_past_the_window() -> None:
    seqs, metrics = _tracker()
    for n in (0, 1, 3):
        seqs.check(7, "nd", "b", n, False)
    assert seqs.stats(7)["gaps"] == 1  # type: ignore[index]
    assert metrics.registry.get_sample_value("hydro_node_sequence_gaps", {"node": "nd"}) == 1
    assert seqs.check(7, "nd", "b", 2, False)[0] is None  # late, but new: stored, the gap closes
    assert seqs.stats(7)["gaps"] == 0  # type: ignore[index]
    seqs.check(7, "nd", "b", 5, False)  # 4 missing
    for k in range(MAX_HOLES):  # a node losing every other message: the oldest hole (4) is given up on
        seqs.check(7, "nd", "b", 7 + 2 * k, False)
    assert metrics.registry.get_sample_value("hydro_ingest_sequence_gaps_total") == 1
    assert seqs.check(7, "nd", "b", 4, False)[0] == "resent"  # given up on: never stored twice either
    assert seqs.check(7, "nd", "b", 6, False)[0] is None  # still remembered as missing


def test_a_new_boot_starts_a_new_numbering() -> None:
    seqs, _ = _tracker()
    assert seqs.check(3, "nd", "boot-1", 0, False)[0] is None
    assert seqs.check(3, "nd", "boot-1", 0, False)[0] == "resent"
    assert seqs.check(3, "nd", "boot-2", 0, False)[0] is None
    assert seqs.stats(3) == {"boot": "boot-2", "seq": 0, "gaps": 0, "duplicates": 1}
