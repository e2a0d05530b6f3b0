-- cancel: cancel a job that is queued, delayed, waiting for a retry, or running.
-- KEYS[1] queue prefix. ARGV: now_ms, job_id, by, reason, dead_ttl_s, control channel.
-- Returns 'canceled' (done, job.canceled appended), 'cancelling' (running: the
-- worker is told over the control channel and through the cancel set, and writes
-- job.canceled itself), 'terminal' (already dead/canceled) or 'missing' (unknown or
-- finished).
local id, by, reason, dead_ttl = ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local h = load(id)
if not h then return 'missing' end
if h.state == 'dead' or h.state == 'canceled' then return 'terminal' end
if h.state == 'running' or h.state == 'cancel' then
  redis.call('HSET', kjob(id), 'state', 'cancel')
  redis.call('SADD', P .. ':cancel', id)
  redis.call('PUBLISH', ARGV[6], 'cancel ' .. QUEUE .. ' ' .. id)
  return 'cancelling'
end
if h.state == 'queued' and h.entry then ack(h.prio, h.entry) end
redis.call('ZREM', P .. ':delayed', id)
cancel_now(id, h, by, reason, dead_ttl)
return 'canceled'
