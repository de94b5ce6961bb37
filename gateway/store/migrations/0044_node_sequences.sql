-- Per-node message identity (firmware_contracts/README.md, "Message identity"): which (boot, seq) of each
-- node that sends one are committed, written in the same transaction as the rows of those messages, so a
-- message re-sent after a lost PUBACK (or a gateway kill -9) is recognised and stored only once.
CREATE TABLE node_sequences (
    node_id INTEGER PRIMARY KEY REFERENCES nodes(id) ON DELETE CASCADE,
    boot TEXT NOT NULL,                 -- the node's current boot id
    high INTEGER NOT NULL,              -- highest seq of this boot committed (-1: none yet)
    holes TEXT NOT NULL DEFAULT '',     -- JSON [[lo, hi], ...] of ranges below high not received (yet), empty: none
    gaps INTEGER NOT NULL DEFAULT 0,    -- numbers given up on (all boots)
    duplicates INTEGER NOT NULL DEFAULT 0,  -- re-sent messages dropped (all boots)
    updated_at REAL NOT NULL
);
