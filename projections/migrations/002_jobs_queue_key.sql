-- 002: a job is identified by (queue, job_id). Redis makes job ids unique per queue
-- only (an explicit id may be reused in another queue), so jobs' primary key becomes
-- (job_id, queue): the same key, in the column order that also serves lookups by id
-- alone (`jobs show ID`), so no further index is needed. Idempotent: the key is
-- changed only if it is not already that.
-- Rows that 001's key merged stay merged until `jobstream projections rebuild`.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conrelid = 'jobs'::regclass AND contype = 'p'
          AND pg_get_constraintdef(oid) = 'PRIMARY KEY (job_id, queue)'
    ) THEN
        ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_pkey;
        ALTER TABLE jobs ADD CONSTRAINT jobs_pkey PRIMARY KEY (job_id, queue);
    END IF;
END
$$;

