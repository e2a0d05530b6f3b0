-- enqueue: a batch of jobs into one queue.
-- KEYS[1] queue prefix. ARGV: now_ms, dedup_ttl_s, then 8 per job:
--   job_id, kind, priority, run_at_ms (0 = now; may be relative if delay_ms given as
--   negative: -delay), max_attempts, timeout_s, dedup_key ('' = none), payload JSON.
-- Returns a flat array: job_id, created (1) or 0 (existing job / dedup hit), per job.
-- Idempotent: an existing job id or a live dedup key returns the existing job.
local dedup_ttl = tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV, 8 do
  local id, kind, prio, run_at = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local dk = ARGV[i + 6]
  if run_at < 0 then run_at = NOW - run_at elseif run_at == 0 then run_at = NOW end
  local existing = false
  if dk ~= '' then existing = redis.call('GET', P .. ':dedup:' .. dk) end
  if not existing and redis.call('EXISTS', kjob(id)) == 1 then existing = id end
  if existing then
    out[#out + 1] = existing
    out[#out + 1] = 0
  else
    local h = {kind = kind, prio = prio, maxa = ARGV[i + 4], timeout = ARGV[i + 5], dk = dk,
      payload = ARGV[i + 7]}
    redis.call('HSET', kjob(id), 'kind', kind, 'payload', h.payload, 'prio', prio,
      'maxa', h.maxa, 'maxa0', h.maxa, 'timeout', h.timeout, 'dk', dk, 'attempt', 1,
      'enq', NOW, 'why', 'enqueue')
    if dk ~= '' then redis.call('SET', P .. ':dedup:' .. dk, id, 'EX', dedup_ttl) end
    emit('job.queued', id, kind, 1, queued_body(h, run_at, 'enqueue'))
    if run_at > NOW then
      redis.call('HSET', kjob(id), 'state', 'scheduled', 'run_at', run_at)
      redis.call('ZADD', P .. ':delayed', run_at, id)
    else
      make_ready(id, prio)
    end
    out[#out + 1] = id
    out[#out + 1] = 1
  end
end
return out
