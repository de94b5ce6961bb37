"""SQLite store: the connection and migrations (``db``) and one module per table family, owning its SQL.

No other module of ``gateway/`` holds SQL (``tests/unit/core/test_sql_lives_in_store.py``), except the hot
telemetry write path in ``gateway/writer.py``. Functions take the ``Database`` (or, inside a caller's
transaction, its connection) and typed arguments and return typed rows.

- ``alerts``: ``alerts`` (one ACTIVE row per zone, code and scope)
- ``events``: ``zone_events`` (+ the full-disk ``sync_gaps`` record)
- ``commands``: ``commands`` (the one command-with-uids query)
- ``nodes``: ``zones``, ``nodes``, ``node_sequences``
- ``samples``: reads of ``telemetry_last`` / ``telemetry_samples`` outside the writer
- ``aggregates``: ``telemetry_agg_1m``, ``telemetry_agg_1h``, ``telemetry_daily``, ``aggregator_state``, chart queries
- ``water``: ``water_usage_logs``, ``water_usage_daily``
- ``dosing``: ``dosing_log``
- ``kv``: ``kv_state`` by prefix (single keys: ``Database.get_state`` / ``put_state``)

Every change that goes upstream is queued with ``sync.outbox.enqueue``, the one writer of ``sync_outbox``, in
the same transaction as the change.
"""
