-- 004: fewer indexes on jobs. Every projected event rewrites its job's row, and the
-- status changes on most of them, so no update is HOT: each index costs a new
-- entry per event. The list/stats queries filter with "($n IS NULL OR col = $n)",
-- which a generic plan cannot serve from these indexes anyway; what remains is the
-- primary key (lookup by id), enqueued_at (newest first, --since) and the partial
-- index of terminal jobs by finished_at (prune). Idempotent.
DROP INDEX IF EXISTS jobs_status_idx;
DROP INDEX IF EXISTS jobs_queue_status_idx;
DROP INDEX IF EXISTS jobs_kind_idx;
