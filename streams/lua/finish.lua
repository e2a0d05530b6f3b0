-- finish: record what a worker's jobs did since its last flush (complete, fail/retry,
-- progress, canceled, handback), fenced.
-- KEYS[1] queue prefix. ARGV: now_ms, consumer, dead_ttl_s, ops, dedup_ttl_s; ops is a JSON array of
--   [op, job_id, entry_id, priority, attempt, a1, a2, a3, a4] (one argument, so a batch
--   costs the client one string to pack, not nine per op)
--   complete:  a1 result JSON, a2 duration_ms
--   fail:      a1 error type, a2 message, a3 duration_ms, a4 retry delay ms (-1: no retry)
--   progress:  a1 fraction, a2 message
--   canceled:  a1 by, a2 reason
--   handback:  (none) the job goes back to its ready stream, same attempt
-- Fence: an op applies only while the job is running (or being canceled) on THIS
-- consumer, for THIS entry and attempt; a worker whose lease was taken over writes
-- nothing. A job an operator asked to cancel ends canceled when its attempt fails or
-- is handed back (the operator was told "cancelling"); a completion still completes.
-- Returns one integer per op: 1 applied, 0 fenced.
local consumer, dead_ttl, dedup_ttl = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[5])
local out = {}

local function retry(id, h, delay)
  local nxt = h.attempt + 1
  redis.call('HSET', kjob(id), 'attempt', nxt, 'why', 'retry')
  if delay <= 0 then
    make_ready(id, h.prio)
    emit('job.queued', id, h.kind, nxt, queued_body(h, NOW, 'retry'))
  else
    redis.call('HSET', kjob(id), 'state', 'scheduled', 'run_at', NOW + delay)
    redis.call('HDEL', kjob(id), 'worker', 'entry', 'started')
    redis.call('ZADD', P .. ':delayed', NOW + delay, id)
    emit('job.retry_scheduled', id, h.kind, nxt,
      '"run_at":' .. num(NOW + delay) .. ',"delay_ms":' .. num(delay))
  end
end

local function apply(op, id, h, a1, a2, a3, a4)
  if op == 'progress' then
    redis.call('HSET', kjob(id), 'progress', a1)
    emit('job.progress', id, h.kind, h.attempt, '"fraction":' .. a1 .. ',"message":' .. q(a2))
    return
  end
  ack(h.prio, h.entry)
  if op == 'complete' then
    redis.call('DEL', kjob(id))
    redis.call('SREM', P .. ':cancel', id)
    if h.xid == '1' then redis.call('SET', P .. ':done:' .. id, '1', 'EX', dedup_ttl) end
    emit('job.completed', id, h.kind, h.attempt, '"result":' .. a1 .. ',"duration_ms":' .. a2)
  elseif op == 'canceled' or (h.state == 'cancel' and (op == 'fail' or op == 'handback')) then
    local reason = a2
    if op ~= 'canceled' then a1, reason = 'operator', 'canceled while running' end
    cancel_now(id, h, a1, reason, dead_ttl)
  elseif op == 'fail' then
    local delay = tonumber(a4)
    local again = delay >= 0 and h.attempt < tonumber(h.maxa)
    emit('job.failed', id, h.kind, h.attempt, failed_body(a1, a2, again, a3))
    if again then retry(id, h, delay) else bury(id, 'dead', dead_ttl) end
  elseif op == 'handback' then
    make_ready(id, h.prio)
    emit('job.queued', id, h.kind, h.attempt, queued_body(h, NOW, 'handback'))
  end
end

for _, o in ipairs(cjson.decode(ARGV[4])) do
  local op, id, entry, attempt = o[1], o[2], o[3], tonumber(o[5])
  local h = load(id)
  if h and (h.state == 'running' or h.state == 'cancel') and h.worker == consumer
      and h.entry == entry and h.attempt == attempt then
    apply(op, id, h, o[6], o[7], o[8], o[9])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
