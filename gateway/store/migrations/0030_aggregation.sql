-- Automation state (owned by gateway/automation/). Timestamps are unix seconds (REAL, UTC).

-- Telemetry aggregates (seed 003 §17): min/max/avg/count (+ sum, so coarser levels are exact) per
-- zone, node and metric. 1m and 1h buckets start at UTC multiples of 60 s / 3600 s; daily buckets
-- are the greenhouse's local dates ('YYYY-MM-DD'). The bucket leads the key so a time range is one
-- index range; readers looking up one series use the *_series indexes.
CREATE TABLE telemetry_agg_1m (
    bucket_start INTEGER NOT NULL,
    zone_id INTEGER NOT NULL,
    node_id INTEGER NOT NULL,
    metric_type TEXT NOT NULL,
    min REAL NOT NULL,
    max REAL NOT NULL,
    avg REAL NOT NULL,
    sum REAL NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (bucket_start, zone_id, node_id, metric_type)
) WITHOUT ROWID;
CREATE INDEX telemetry_agg_1m_series ON telemetry_agg_1m (zone_id, metric_type, bucket_start);

CREATE TABLE telemetry_agg_1h (
    bucket_start INTEGER NOT NULL,
    zone_id INTEGER NOT NULL,
    node_id INTEGER NOT NULL,
    metric_type TEXT NOT NULL,
    min REAL NOT NULL,
    max REAL NOT NULL,
    avg REAL NOT NULL,
    sum REAL NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (bucket_start, zone_id, node_id, metric_type)
) WITHOUT ROWID;
CREATE INDEX telemetry_agg_1h_series ON telemetry_agg_1h (zone_id, metric_type, bucket_start);

CREATE TABLE telemetry_daily (
    date TEXT NOT NULL,
    zone_id INTEGER NOT NULL,
    node_id INTEGER NOT NULL,
    metric_type TEXT NOT NULL,
    min REAL NOT NULL,
    max REAL NOT NULL,
    avg REAL NOT NULL,
    sum REAL NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (date, zone_id, node_id, metric_type)
) WITHOUT ROWID;
CREATE INDEX telemetry_daily_series ON telemetry_daily (zone_id, metric_type, date);

-- One row per incremental job ('telemetry', 'water_usage'): the last source row id processed and the
-- data watermark (newest sample ts seen, never ahead of the wall clock); late rows older than
-- watermark - lateness are counted in late_dropped instead of rewriting settled buckets.
CREATE TABLE aggregator_state (
    name TEXT PRIMARY KEY,
    last_id INTEGER NOT NULL DEFAULT 0,
    watermark_ts REAL,
    last_ts_1m REAL,
    last_ts_1h REAL,
    last_ts_daily TEXT,
    late_dropped INTEGER NOT NULL DEFAULT 0,
    runs INTEGER NOT NULL DEFAULT 0,
    updated_at REAL NOT NULL
);

-- Every dose the controller sent (caps per hour/day survive a restart; the DOSE zone event is the
-- operator-facing record).
CREATE TABLE dosing_log (
    id INTEGER PRIMARY KEY,
    zone_id INTEGER NOT NULL,
    parameter TEXT NOT NULL,
    reagent TEXT NOT NULL,
    ml REAL NOT NULL,
    cmd_id TEXT,
    value_before REAL NOT NULL,
    target REAL NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX dosing_log_zone ON dosing_log (zone_id, created_at);

-- The daily water usage rollup looks runs up by zone and start time.
CREATE INDEX water_usage_logs_zone_start ON water_usage_logs (zone_id, started_at)
