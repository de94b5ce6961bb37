"""Gateway-side command-line tools over its SQLite file: seed it, drain its outbox with sync's Uplink."""
