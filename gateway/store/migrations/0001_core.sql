-- Core tables of the gateway. Timestamps are unix seconds (REAL, UTC). JSON columns hold text.

CREATE TABLE zones (
    id INTEGER PRIMARY KEY,
    uid TEXT NOT NULL UNIQUE,
    name TEXT NOT NULL DEFAULT '',
    settings TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
);

CREATE TABLE nodes (
    id INTEGER PRIMARY KEY,
    uid TEXT NOT NULL UNIQUE,
    hardware_id TEXT NOT NULL UNIQUE,
    node_type TEXT NOT NULL DEFAULT '',
    firmware_version TEXT,
    hardware_revision TEXT,
    zone_id INTEGER REFERENCES zones(id),
    lifecycle_state TEXT NOT NULL,
    validated INTEGER NOT NULL DEFAULT 0,
    first_seen_at REAL,
    last_seen_at REAL,
    online INTEGER NOT NULL DEFAULT 0,
    rssi INTEGER,
    uptime_s INTEGER,
    free_heap INTEGER,
    transport TEXT NOT NULL DEFAULT 'mqtt',
    hello TEXT NOT NULL DEFAULT '{}',
    updated_at REAL NOT NULL
);

CREATE TABLE alerts (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL CHECK (source IN ('biz', 'infra')),
    code TEXT NOT NULL,
    type TEXT NOT NULL,
    severity TEXT NOT NULL DEFAULT 'warning',
    zone_id INTEGER REFERENCES zones(id),
    scope TEXT NOT NULL DEFAULT '',
    details TEXT NOT NULL DEFAULT '{}',
    status TEXT NOT NULL CHECK (status IN ('ACTIVE', 'RESOLVED')),
    count INTEGER NOT NULL DEFAULT 1,
    created_at REAL NOT NULL,
    last_seen_at REAL NOT NULL,
    resolved_at REAL,
    resolved_by TEXT
);
-- One ACTIVE alert per (zone, code, scope); repeats bump count and last_seen_at.
CREATE UNIQUE INDEX alerts_one_active ON alerts (IFNULL(zone_id, -1), code, scope) WHERE status = 'ACTIVE';
CREATE INDEX alerts_status ON alerts (status, zone_id);

CREATE TABLE zone_events (
    id INTEGER PRIMARY KEY,
    zone_id INTEGER REFERENCES zones(id),
    type TEXT NOT NULL,
    details TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL
);
CREATE INDEX zone_events_zone ON zone_events (zone_id, id);

CREATE TABLE commands (
    id INTEGER PRIMARY KEY,
    cmd_id TEXT NOT NULL UNIQUE,
    zone_id INTEGER REFERENCES zones(id),
    node_id INTEGER REFERENCES nodes(id),
    channel TEXT NOT NULL,
    target TEXT NOT NULL CHECK (target IN ('node', 'local')),
    cmd TEXT NOT NULL,
    params TEXT NOT NULL DEFAULT '{}',
    source TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('QUEUED', 'SENT', 'ACK', 'DONE', 'FAILED', 'TIMEOUT')),
    error_code TEXT,
    details TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    sent_at REAL,
    ack_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL
);
CREATE INDEX commands_open ON commands (status) WHERE status IN ('QUEUED', 'SENT', 'ACK');

CREATE TABLE telemetry_samples (
    id INTEGER PRIMARY KEY,
    zone_id INTEGER NOT NULL,
    node_id INTEGER NOT NULL,
    metric_type TEXT NOT NULL,
    channel TEXT,
    value REAL NOT NULL,
    ts REAL NOT NULL,
    received_at REAL NOT NULL,
    ts_source TEXT NOT NULL,
    clock_synced INTEGER NOT NULL,
    raw TEXT
);
CREATE INDEX telemetry_samples_ts ON telemetry_samples (ts);

CREATE TABLE telemetry_last (
    zone_id INTEGER NOT NULL,
    node_id INTEGER NOT NULL,
    metric_type TEXT NOT NULL,
    channel TEXT,
    value REAL NOT NULL,
    ts REAL NOT NULL,
    received_at REAL NOT NULL,
    raw TEXT,
    UNIQUE (zone_id, node_id, metric_type)
);

-- Append-only log of changes to send upstream for the small streams (alerts, events, command
-- statuses, node registrations); telemetry is streamed straight from telemetry_samples.
CREATE TABLE sync_outbox (
    id INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX sync_outbox_stream ON sync_outbox (stream, id);

-- Small persisted state documents (water-cycle machine per zone, recirc state, downlink config).
CREATE TABLE kv_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL
);

CREATE TABLE water_usage_logs (
    id INTEGER PRIMARY KEY,
    zone_id INTEGER NOT NULL,
    node_id INTEGER,
    pump_channel TEXT NOT NULL,
    cmd_id TEXT,
    volume_l REAL NOT NULL,
    duration_ms INTEGER NOT NULL,
    avg_flow_l_min REAL,
    details TEXT NOT NULL DEFAULT '{}',
    started_at REAL NOT NULL,
    finished_at REAL NOT NULL
);

CREATE TABLE water_usage_daily (
    date TEXT NOT NULL,
    zone_id INTEGER NOT NULL,
    total_volume_l REAL NOT NULL,
    irrigation_count INTEGER NOT NULL,
    PRIMARY KEY (date, zone_id)
);
