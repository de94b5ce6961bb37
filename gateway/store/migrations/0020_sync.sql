-- Upstream sync state (owned by sync/). Forward-only; timestamps are unix seconds (REAL, UTC).

-- One cursor per stream: the highest sequence the upstream has confirmed (or that was quarantined).
CREATE TABLE sync_cursors (
    stream TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL DEFAULT 0,
    last_success_at REAL,
    batches_sent INTEGER NOT NULL DEFAULT 0,
    rows_sent INTEGER NOT NULL DEFAULT 0,
    duplicate_batches INTEGER NOT NULL DEFAULT 0,
    quarantined_rows INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);

-- Batches the upstream rejected permanently (4xx after N attempts); the stream moved past them.
-- payload is the exact gzip body that was sent, so an operator can inspect or re-drive it.
CREATE TABLE sync_dead_letters (
    id INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    count INTEGER NOT NULL,
    idempotency_key TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    status_code INTEGER NOT NULL,
    response TEXT NOT NULL,
    payload BLOB NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX sync_dead_letters_stream ON sync_dead_letters (stream, id);

-- Unsynced telemetry dropped as a last resort when the byte budget was exceeded.
CREATE TABLE sync_gaps (
    id INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    count INTEGER NOT NULL,
    first_ts REAL,
    last_ts REAL,
    reason TEXT NOT NULL,
    created_at REAL NOT NULL
);

-- Commands pulled from upstream: written before the claim so a crash or a lost claim response never
-- runs a command twice (state: claiming -> submitted | expired | rejected).
CREATE TABLE sync_pulled_commands (
    cmd_id TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('claiming', 'submitted', 'expired', 'rejected')),
    body TEXT NOT NULL,
    submit_status TEXT,
    pulled_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX sync_pulled_commands_open ON sync_pulled_commands (state) WHERE state = 'claiming';
