-- enqueue: a batch of jobs into one queue.
-- KEYS[1] queue prefix. ARGV: now_ms, dedup_ttl_s, jobs: a JSON array with, per job,
--   an array of strings: job_id, kind, priority, run_at_ms (0 = now; negative =
--   -delay_ms from now), max_attempts, timeout_s, dedup_key ('' = none), payload JSON
--   (as a string, appended to the event verbatim), explicit id ('1'/'0').
-- Returns a flat array: job_id, created (1) or 0 (existing job / dedup hit), per job.
-- Idempotent: a live dedup key, an existing job id, or an explicit id whose job
-- completed less than dedup_ttl ago returns the existing job.
local dedup_ttl = tonumber(ARGV[2])
local out = {}
for _, j in ipairs(cjson.decode(ARGV[3])) do
  local run_at = tonumber(j[4])
  if run_at < 0 then run_at = NOW - run_at elseif run_at == 0 then run_at = NOW end
  local existing = enqueue_one(j[1], j[2], j[3], run_at, j[5], j[6], j[7], j[8], j[9], dedup_ttl)
  out[#out + 1] = existing or j[1]
  out[#out + 1] = existing and 0 or 1
end
return out
