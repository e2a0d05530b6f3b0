-- adopt: turn a foreign producer's ready entry (field job = job.queued JSON) into a job.
-- KEYS[1] queue prefix. ARGV: now_ms, dedup_ttl_s, priority, entry_id, then either
--   'ok', job_id, kind, max_attempts, timeout_s, dedup_key, payload JSON (validated and
--        normalised by the worker with msgspec; the payload bytes pass through untouched)
--   'bad', raw entry value, error
-- 'ok' enqueues the job (job.queued appended; an existing id or dedup hit is a no-op)
-- and acks the foreign entry; 'bad' moves the entry to the deadletter stream.
-- Returns 1 when a job was created, else 0.
local dedup_ttl, prio, entry = tonumber(ARGV[2]), ARGV[3], ARGV[4]
local created = 0
if ARGV[5] == 'ok' then
  local existing = enqueue_one(ARGV[6], ARGV[7], prio, NOW, ARGV[8], ARGV[9], ARGV[10],
    ARGV[11], '1', dedup_ttl)
  if not existing then created = 1 end
else
  redis.call('XADD', P .. ':deadletter', '*', 'stream', kready(prio), 'entry', entry,
    'field', 'job', 'raw', ARGV[6], 'error', ARGV[7], 'at', num(NOW))
end
ack(prio, entry)
return created
