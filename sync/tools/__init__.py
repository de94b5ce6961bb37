"""Small command-line drivers around the sync code (chaos tests, benchmarks)."""
