-- Facts about this database file itself (owned by gateway/store/db.py).
-- 'generation': random id made when the file is created (or when its sequences can no longer be
-- trusted: rolled back, or upstream reported a content conflict). Every uplink batch carries it, so
-- a recreated, restored or rolled-back database never reuses a (generation, stream, seq) it sent before.
CREATE TABLE db_meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at REAL NOT NULL
);
