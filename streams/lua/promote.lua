-- promote: move due delayed jobs and retries to their ready streams.
-- KEYS[1] queue prefix. ARGV: now_ms, limit.
-- Each due job is removed from the delayed set once (ZREM decides, so several
-- promoters never promote a job twice) and gets a job.queued event.
-- Returns {promoted_count, next_due_ms or -1, now_ms} (now_ms: the server's clock, so
-- callers compute waits without trusting their own).
local due = redis.call('ZRANGEBYSCORE', P .. ':delayed', '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[2]))
local n = 0
for _, id in ipairs(due) do
  if redis.call('ZREM', P .. ':delayed', id) == 1 then
    local h = load(id)
    if h and h.state == 'scheduled' then
      make_ready(id, h.prio)
      emit('job.queued', id, h.kind, h.attempt, queued_body(h, NOW, h.why or 'enqueue'))
      n = n + 1
    end
  end
end
local nxt = redis.call('ZRANGE', P .. ':delayed', 0, 0, 'WITHSCORES')
if #nxt == 0 then return {n, -1, NOW} end
return {n, tonumber(nxt[2]), NOW}
