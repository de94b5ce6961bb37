"""SQLite store: connection, numbered migrations and small query modules per table family."""
