"""Teams and virtual keys: PostgreSQL as the system of record, an in-memory key cache on the hot path."""
