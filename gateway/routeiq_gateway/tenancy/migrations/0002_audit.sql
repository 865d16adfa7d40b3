-- Audit records for search (the S3 objects stay the durable copy): one row per record, its fields as columns.
CREATE TABLE audit_log (
    id             text PRIMARY KEY,               -- the record's id: a record written twice is kept once
    schema_version integer NOT NULL,
    at             timestamptz NOT NULL,
    actor_subject  text NOT NULL,
    actor_how      text NOT NULL,
    action         text NOT NULL,
    target         text NOT NULL,
    before_digest  text,
    after_digest   text,
    result         text NOT NULL,
    trace_id       text
);

-- Newest first, paged by (at, id); each filter narrows by its own index, then by time.
CREATE INDEX audit_log_at ON audit_log (at DESC, id DESC);
CREATE INDEX audit_log_actor ON audit_log (actor_subject, at DESC);
CREATE INDEX audit_log_action ON audit_log (action, at DESC);
CREATE INDEX audit_log_target ON audit_log (target, at DESC);
