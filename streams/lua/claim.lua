-- claim: start jobs for one consumer (the "start" transition).
-- KEYS[1] queue prefix. ARGV: now_ms, consumer, count, aging_medium_ms, aging_low_ms,
--   then entries already delivered to this consumer by a blocking XREADGROUP, 4 each:
--   priority, entry_id, field ('id' | 'job'), value.
-- With no such entries, reads up to `count` new entries itself (XREADGROUP, strict
-- priority high > medium > low, except that a medium/low head older than its aging
-- bound is served first).
-- Per entry: a queued job becomes running (job.started appended); a canceled or
-- stale entry is acked and deleted; an unreadable entry goes to the deadletter
-- stream. A `job` field is a foreign producer's job.queued JSON: it is returned for
-- the worker to validate and adopt (adopt.lua), not started.
-- A job already running on this consumer for this entry (a retried claim whose
-- reply was lost) is handed out again without a second job.started.
-- Returns {jobs, foreign}: jobs is a flat array, 9 per started job:
--   entry_id, priority, job_id, kind, payload, attempt, max_attempts, timeout_s, enqueued_ms;
-- foreign a flat array, 3 per foreign entry: priority, entry_id, raw JSON.
local consumer, count = ARGV[2], tonumber(ARGV[3])
local aging = {medium = tonumber(ARGV[4]), low = tonumber(ARGV[5])}
local out, foreign = {}, {}

local function deadletter(prio, entry, field, value, err)
  redis.call('XADD', P .. ':deadletter', '*', 'stream', kready(prio), 'entry', entry,
    'field', field or '', 'raw', value or '', 'error', err, 'at', num(NOW))
  ack(prio, entry)
end

local function start(prio, entry, field, value)
  if field == 'job' then  -- a foreign producer's job: the worker validates it, then adopts it
    for _, v in ipairs({prio, entry, value}) do foreign[#foreign + 1] = v end
    return
  elseif field ~= 'id' then
    return deadletter(prio, entry, field, value, 'entry has neither an id nor a job field')
  end
  local id = value
  local h = load(id)
  if not h then return deadletter(prio, entry, field, value, 'no such job: ' .. id) end
  -- again: a retried claim whose first reply was lost hands the job out once more
  local again = (h.state == 'running' or h.state == 'cancel') and h.worker == consumer
    and h.entry == entry
  if not again then
    if h.state ~= 'queued' or h.entry ~= entry then return ack(prio, entry) end
    redis.call('HSET', kjob(id), 'state', 'running', 'worker', consumer, 'started', NOW)
    emit('job.started', id, h.kind, h.attempt, '"worker":' .. q(consumer))
  end
  for _, v in ipairs({entry, prio, id, h.kind, h.payload, h.attempt, h.maxa, h.timeout, h.enq}) do
    out[#out + 1] = v
  end
end

local function head_age(prio)
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', kready(prio))
  if not ok then return -1 end
  local last = '0-0'
  for _, g in ipairs(groups) do
    local name, ld
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then ld = g[i + 1] end
    end
    if name == GROUP then last = ld end
  end
  local nxt = redis.call('XRANGE', kready(prio), '(' .. last, '+', 'COUNT', 1)
  if #nxt == 0 then return -1 end
  local ms = tonumber(string.match(nxt[1][1], '^(%d+)'))
  return NOW - ms
end

local function read(prio, n)
  local ok, res = pcall(redis.call, 'XREADGROUP', 'GROUP', GROUP, consumer, 'COUNT', n,
    'STREAMS', kready(prio), '>')
  if not ok then
    redis.call('XGROUP', 'CREATE', kready(prio), GROUP, '0', 'MKSTREAM')
    res = redis.call('XREADGROUP', 'GROUP', GROUP, consumer, 'COUNT', n, 'STREAMS', kready(prio), '>')
  end
  if not res then return 0 end
  local entries = res[1][2]
  for _, e in ipairs(entries) do
    local f = e[2]
    start(prio, e[1], f[1], f[2])
  end
  return #entries
end

if #ARGV > 5 then
  for i = 6, #ARGV, 4 do start(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]) end
  return {out, foreign}
end

local order = {'high', 'medium', 'low'}
local low_age, med_age = head_age('low'), head_age('medium')
if low_age >= aging.low then
  order = {'low', 'high', 'medium'}
  if med_age >= aging.medium then order = {'low', 'medium', 'high'} end
elseif med_age >= aging.medium then
  order = {'medium', 'high', 'low'}
end
local taken = 0
for _, prio in ipairs(order) do
  if taken >= count then break end
  taken = taken + read(prio, count - taken)
end
return {out, foreign}
