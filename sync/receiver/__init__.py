"""Reference central-side receiver of the upstream contract, on PostgreSQL (for tests and benchmarks)."""
