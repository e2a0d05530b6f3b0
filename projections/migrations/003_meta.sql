-- 003: facts about the projection itself, e.g. ('namespace', <JOBSTREAM_NAMESPACE>):
-- job_events rows carry no namespace, so a schema serves ONE namespace; the
-- projector (and migrate) refuse a schema recorded for another one.
CREATE TABLE IF NOT EXISTS projection_meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);
