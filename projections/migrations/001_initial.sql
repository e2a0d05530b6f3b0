-- 001: the projection tables. Runs with search_path set to the projection schema,
-- so no name here is schema-qualified. Idempotent (IF NOT EXISTS / OR REPLACE).

-- Milliseconds since the epoch (Redis TIME) <-> timestamptz; 0 or NULL means "no time".
CREATE OR REPLACE FUNCTION ms_ts(ms bigint) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT CASE WHEN ms IS NULL OR ms <= 0 THEN NULL
                      ELSE timestamptz 'epoch' + ms * interval '1 millisecond' END $$;

CREATE OR REPLACE FUNCTION ts_ms(ts timestamptz) RETURNS bigint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT (extract(epoch FROM ts) * 1000)::bigint $$;

-- Append-only history: one row per events-stream entry. (queue, entry_ms, entry_seq)
-- is the stream entry id "<entry_ms>-<entry_seq>" of the stream <ns>:{<queue>}:events.
CREATE TABLE IF NOT EXISTS job_events (
    queue      text        NOT NULL,
    entry_ms   bigint      NOT NULL,
    entry_seq  bigint      NOT NULL,
    job_id     text        NOT NULL,
    type       text        NOT NULL,
    kind       text        NOT NULL,
    attempt    integer     NOT NULL,
    at         timestamptz,
    data       jsonb       NOT NULL,
    PRIMARY KEY (queue, entry_ms, entry_seq)
);
CREATE INDEX IF NOT EXISTS job_events_job_idx ON job_events (job_id, queue, entry_ms, entry_seq);
CREATE INDEX IF NOT EXISTS job_events_type_at_idx ON job_events (type, at);

-- Current state per job: the fold of its job_events with streams.state.evolve.
CREATE TABLE IF NOT EXISTS jobs (
    job_id           text PRIMARY KEY,
    queue            text             NOT NULL,
    kind             text             NOT NULL,
    status           text             NOT NULL CHECK (status IN
        ('queued', 'scheduled', 'running', 'completed', 'failed', 'canceled')),
    attempt          integer          NOT NULL,
    max_attempts     integer          NOT NULL,
    priority         text             NOT NULL,
    progress         double precision NOT NULL,
    progress_message text             NOT NULL,
    payload          jsonb            NOT NULL,
    result           jsonb,
    error_type       text,
    error            text,
    worker           text,
    enqueued_at      timestamptz,
    run_at           timestamptz,
    started_at       timestamptz,
    finished_at      timestamptz,
    updated_at       timestamptz,
    -- Stream position of the newest event folded in: an older event arriving later
    -- (a claimed batch of a dead projector) makes the projector refold the job.
    last_entry_ms    bigint           NOT NULL,
    last_entry_seq   bigint           NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_status_idx ON jobs (status, enqueued_at);
CREATE INDEX IF NOT EXISTS jobs_queue_status_idx ON jobs (queue, status);
CREATE INDEX IF NOT EXISTS jobs_kind_idx ON jobs (kind, enqueued_at);
CREATE INDEX IF NOT EXISTS jobs_enqueued_idx ON jobs (enqueued_at);
CREATE INDEX IF NOT EXISTS jobs_finished_terminal_idx ON jobs (finished_at)
    WHERE status IN ('completed', 'failed', 'canceled');

-- Entries the projector could not decode (or not store), kept with the raw bytes.
CREATE TABLE IF NOT EXISTS dead_letters (
    queue       text        NOT NULL,
    entry_ms    bigint      NOT NULL,
    entry_seq   bigint      NOT NULL,
    raw         bytea       NOT NULL,
    error       text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, entry_ms, entry_seq)
);
