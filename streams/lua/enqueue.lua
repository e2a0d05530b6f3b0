-- enqueue: a batch of jobs into one queue.
-- KEYS[1] queue prefix. ARGV: now_ms, dedup_ttl_s, then 9 per job:
--   job_id, kind, priority, run_at_ms (0 = now; negative = -delay_ms from now),
--   max_attempts, timeout_s, dedup_key ('' = none), payload JSON, explicit id ('1'/'0').
-- Returns a flat array: job_id, created (1) or 0 (existing job / dedup hit), per job.
-- Idempotent: a live dedup key, an existing job id, or an explicit id whose job
-- completed less than dedup_ttl ago returns the existing job.
local dedup_ttl = tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV, 9 do
  local run_at = tonumber(ARGV[i + 3])
  if run_at < 0 then run_at = NOW - run_at elseif run_at == 0 then run_at = NOW end
  local existing = enqueue_one(ARGV[i], ARGV[i + 1], ARGV[i + 2], run_at, ARGV[i + 4],
    ARGV[i + 5], ARGV[i + 6], ARGV[i + 7], ARGV[i + 8], dedup_ttl)
  out[#out + 1] = existing or ARGV[i]
  out[#out + 1] = existing and 0 or 1
end
return out
