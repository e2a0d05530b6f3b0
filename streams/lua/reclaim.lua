-- reclaim: recover jobs whose worker died, or that ran past their hard timeout.
-- KEYS[1] queue prefix. ARGV: now_ms, min_idle_ms, count, dead_ttl_s, grace_ms.
-- Only entries pending at least min_idle_ms (the heartbeat TTL) are looked at, and
-- of those only the ones whose consumer's heartbeat has expired, or whose job has
-- run longer than its timeout + grace: a long job on a live worker is never taken.
-- A reclaimed attempt fails (job.failed "WorkerLost"/"HardTimeout"); it is re-queued
-- at once while attempts remain, else the job is dead; a job being canceled is
-- canceled. Consumers with expired heartbeats and nothing pending are removed.
-- Returns the number of jobs reclaimed.
local min_idle, count, dead_ttl, grace = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local workers = P .. ':workers'
local n = 0

local function alive(consumer)
  local exp = redis.call('ZSCORE', workers, consumer)
  return exp and tonumber(exp) > NOW
end

local function take(prio, entry, consumer)
  local rows = redis.call('XRANGE', kready(prio), entry, entry)
  local f = rows[1] and rows[1][2]
  local id = f and f[2]
  if f and f[1] == 'job' then
    local ok, j = pcall(cjson.decode, f[2])
    id = ok and type(j) == 'table' and type(j.job_id) == 'string' and j.job_id or nil
  end
  local h = id and load(id)
  if not h and f and f[1] == 'job' then
    -- a foreign job delivered to a consumer that died before adopting it
    if alive(consumer) then return end
    redis.call('XADD', kready(prio), '*', 'job', f[2])
    ack(prio, entry)
    n = n + 1
    return
  end
  if h and h.state == 'queued' and h.entry == entry then
    -- delivered to a consumer that died before starting it: deliver it afresh
    if alive(consumer) then return end
    ack(prio, entry)
    make_ready(id, h.prio)
    n = n + 1
    return
  end
  if not h or h.entry ~= entry or h.worker ~= consumer then
    ack(prio, entry)
    return
  end
  local overdue = h.started and NOW > tonumber(h.started) + tonumber(h.timeout) * 1000 + grace
  if alive(consumer) and not overdue then return end
  ack(prio, entry)
  n = n + 1
  if h.state == 'cancel' then return cancel_now(id, h, 'reaper', 'worker lost while canceling', dead_ttl) end
  local etype, msg = 'WorkerLost', 'worker ' .. consumer .. ' stopped heartbeating'
  if alive(consumer) then etype, msg = 'HardTimeout', 'ran past its timeout on ' .. consumer end
  local again = h.attempt < tonumber(h.maxa)
  emit('job.failed', id, h.kind, h.attempt, failed_body(etype, msg, again, '0'))
  if again then
    local nxt = h.attempt + 1
    redis.call('HSET', kjob(id), 'attempt', nxt)
    make_ready(id, h.prio)
    emit('job.queued', id, h.kind, nxt, queued_body(h, NOW, 'reclaim'))
  else
    bury(id, 'dead', dead_ttl)
  end
end

-- page through each pending list (at most 10 pages a call), so entries of live
-- workers' long jobs at its head never hide a dead worker's entries behind them
for _, prio in ipairs({'high', 'medium', 'low'}) do
  local start = '-'
  for _ = 1, 10 do
    local ok, rows = pcall(redis.call, 'XPENDING', kready(prio), GROUP, 'IDLE', min_idle, start,
      '+', count)
    if not ok then break end
    for _, r in ipairs(rows) do take(prio, r[1], r[2]) end
    if #rows < tonumber(count) then break end
    start = '(' .. rows[#rows][1]
  end
end

local expired = redis.call('ZRANGEBYSCORE', workers, '-inf', NOW)
for _, consumer in ipairs(expired) do
  local busy = false
  for _, prio in ipairs({'high', 'medium', 'low'}) do
    local ok, rows = pcall(redis.call, 'XPENDING', kready(prio), GROUP, '-', '+', 1, consumer)
    if ok and #rows > 0 then busy = true end
  end
  if not busy then
    redis.call('ZREM', workers, consumer)
    for _, prio in ipairs({'high', 'medium', 'low'}) do
      pcall(redis.call, 'XGROUP', 'DELCONSUMER', kready(prio), GROUP, consumer)
    end
  end
end
return n
