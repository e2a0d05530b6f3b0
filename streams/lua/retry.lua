-- retry: an operator re-queues a dead or canceled job with a fresh attempt budget.
-- KEYS[1] queue prefix. ARGV: now_ms, job_id.
-- Appends job.queued (reason "operator", attempt + 1, max_attempts = attempt + the
-- original max). Returns 'queued', 'missing' (unknown or expired), or the job's
-- current state when it is not dead/canceled.
local id = ARGV[2]
local h = load(id)
if not h then return 'missing' end
if h.state ~= 'dead' and h.state ~= 'canceled' then return h.state end
local nxt = h.attempt + 1
h.maxa = num(h.attempt + tonumber(h.maxa0 or h.maxa))
redis.call('PERSIST', kjob(id))
redis.call('ZREM', P .. ':dead', id)
redis.call('HSET', kjob(id), 'attempt', nxt, 'maxa', h.maxa, 'why', 'enqueue')
make_ready(id, h.prio)
emit('job.queued', id, h.kind, nxt, queued_body(h, NOW, 'operator'))
return 'queued'
