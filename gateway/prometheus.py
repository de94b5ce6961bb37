"""Prometheus metrics, declared once with units in their names; code gets handles, never strings."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    """All gateway metrics on one registry per gateway instance (tests run several in one process)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.messages_received = Counter(
            "hydro_mqtt_messages_received_total", "Inbound node messages by topic kind", ["kind"], registry=r
        )
        self.messages_rejected = Counter(
            "hydro_messages_rejected_total", "Inbound messages dropped, by reason", ["reason"], registry=r
        )
        self.router_queue_depth = Gauge("hydro_router_queue_depth", "Messages waiting for the router", registry=r)
        self.ingest_samples = Counter(
            "hydro_ingest_samples_total", "Telemetry samples by result and reason", ["result", "reason"], registry=r
        )
        self.ingest_queue_depth = Gauge("hydro_ingest_queue_depth", "Samples waiting for the writer", registry=r)
        self.ingest_commit_seconds = Histogram(
            "hydro_ingest_commit_seconds",
            "SQLite commit latency of one telemetry batch",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.ingest_batch_rows = Histogram(
            "hydro_ingest_batch_rows",
            "Rows per committed batch",
            buckets=(1, 10, 50, 100, 200, 500, 1000, 2000, 5000),
            registry=r,
        )
        self.ingest_duplicates = Counter(
            "hydro_ingest_duplicates_total",
            "Messages re-sent with an identity already committed: acknowledged, not stored", ["reason"], registry=r
        )
        self.ingest_sequence_gaps = Counter(
            "hydro_ingest_sequence_gaps_total", "Sequence numbers never received (lost on the node's side)",
            registry=r
        )
        self.node_sequence_gaps = Gauge(
            "hydro_node_sequence_gaps", "Sequence numbers missing per node (all boots)", ["node"], registry=r
        )
        self.broker_clients = Gauge("hydro_broker_clients", "Connected MQTT clients", registry=r)
        self.broker_refusals = Counter(
            "hydro_broker_refusals_total", "Refused connects/publishes/subscribes", ["reason"], registry=r
        )
        self.nodes_online = Gauge("hydro_nodes_online", "Nodes currently online", registry=r)
        self.commands = Counter("hydro_commands_total", "Command status transitions", ["status"], registry=r)
        self.alerts_raised = Counter(
            "hydro_alerts_raised_total", "Alerts raised (new or repeated)", ["code"], registry=r
        )
        self.safety_trips = Counter("hydro_safety_trips_total", "Safety loop stops by reason", ["reason"], registry=r)
        self.interlock_refusals = Counter(
            "hydro_interlock_refusals_total", "Pump starts refused by the interlock, by reason", ["reason"], registry=r
        )
        self.nc_restores = Counter(
            "hydro_nc_pump_restores_total", "NC pumps returned to ON by the max-OFF backstop", ["pump"], registry=r
        )
        self.safety_tick_seconds = Histogram(
            "hydro_safety_tick_seconds",
            "Duration of one safety loop tick",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1),
            registry=r,
        )
        self.pump_runtime_seconds = Counter(
            "hydro_pump_runtime_seconds_total", "Time pumps were commanded ON", ["zone", "channel"], registry=r
        )
        self.process_rss_bytes = Gauge("hydro_process_resident_memory_bytes", "Gateway RSS", registry=r)
        self.db_size_bytes = Gauge("hydro_db_size_bytes", "SQLite file size incl. WAL", registry=r)
        self.sync_backlog_rows = Gauge(
            "hydro_sync_backlog_rows", "Rows not yet acknowledged upstream", ["stream"], registry=r
        )
        self.sync_lag_seconds = Gauge(
            "hydro_sync_lag_seconds", "Age of the oldest unsynced row", ["stream"], registry=r
        )
        self.sync_sent_rows = Counter(
            "hydro_sync_sent_rows_total", "Rows acknowledged upstream", ["stream"], registry=r
        )
        self.dosing_doses = Counter(
            "hydro_dosing_doses_total", "Doses commanded by automation", ["zone", "reagent"], registry=r
        )
        self.dosing_volume_ml = Counter(
            "hydro_dosing_volume_millilitres_total", "Reagent volume commanded by automation", ["zone", "reagent"],
            registry=r,
        )
        self.dosing_refused = Counter(
            "hydro_dosing_refused_total", "Doses the interlocks refused", ["zone", "parameter"], registry=r
        )
        self.dosing_capped = Counter(
            "hydro_dosing_capped_total", "Doses cut or withheld by the hourly/daily caps", ["zone", "parameter"],
            registry=r,
        )
        self.schedule_runs = Counter(
            "hydro_schedule_runs_total", "Scheduled zone jobs run (catch-up runs included)", ["job"], registry=r
        )
        self.schedule_skipped = Counter(
            "hydro_schedule_skipped_runs_total", "Scheduled runs missed beyond their grace time and skipped", ["job"],
            registry=r,
        )
        self.storage_full = Gauge(
            "hydro_storage_full", "1 while telemetry commits fail because the disk is full", registry=r
        )
        self.storage_used_ratio = Gauge(
            "hydro_storage_disk_used_ratio", "Used fraction of the data directory's filesystem", registry=r
        )
        self.service_storage_restarts = Counter(
            "hydro_service_storage_restarts_total", "Services restarted in place after a SQLite error", ["service"],
            registry=r,
        )
        self.web_auth_failures = Counter(
            "hydro_web_auth_failures_total", "Wrong admin credentials (bearer token or login form)", ["via"],
            registry=r,
        )
        self.web_lockouts = Counter(
            "hydro_web_lockouts_total", "Credential + client IP pairs locked out after repeated failures", registry=r
        )
        self.web_locked_refusals = Counter(
            "hydro_web_locked_out_refusals_total", "Requests refused with 429 because their credential is locked out",
            registry=r,
        )
        self.web_locked_out = Gauge(
            "hydro_web_locked_out", "Credential + client IP pairs locked out right now", registry=r
        )
        self.aggregation_samples = Counter(
            "hydro_aggregation_samples_total", "Samples folded into the 1 m/1 h/daily aggregates", registry=r
        )
        self.aggregation_late = Counter(
            "hydro_aggregation_late_samples_total", "Samples that arrived after the lateness window", registry=r
        )
        self.aggregation_last_run = Gauge(
            "hydro_aggregation_last_run_timestamp_seconds", "Wall time of the last completed aggregation", registry=r
        )
