-- Per-node message identity (firmware_contracts/README.md, "Message identity"): the newest committed
-- (boot, seq) of each node that sends one, written in the same transaction as the rows of that message,
-- so a message re-sent after a lost PUBACK (or a gateway kill -9) is recognised and stored only once.
CREATE TABLE node_sequences (
    node_id INTEGER PRIMARY KEY REFERENCES nodes(id) ON DELETE CASCADE,
    boot TEXT NOT NULL,                 -- the node's current boot id
    seq INTEGER NOT NULL,               -- highest sequence number committed in that boot
    seen_mask INTEGER NOT NULL,         -- bit i set: seq - i was committed (i < 63), for late arrivals
    gaps INTEGER NOT NULL DEFAULT 0,    -- sequence numbers never received (all boots)
    duplicates INTEGER NOT NULL DEFAULT 0,  -- re-sent messages dropped (all boots)
    updated_at REAL NOT NULL
);
