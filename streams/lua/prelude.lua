-- Shared prelude, prepended to every jobstream script (see streams/scripts.py).
-- KEYS[1] is always the queue prefix "ns:{queue}"; every key the script touches
-- is built from it, so all of them share the queue's hash-tag slot.
-- ARGV[1] is always now_ms: "0" means "take the time from the Redis server".
if redis.replicate_commands then pcall(redis.replicate_commands) end

local P = KEYS[1]
local GROUP = 'workers'
local QUEUE = string.match(P, '{(.*)}$')
local NOW
if ARGV[1] ~= '0' then
  NOW = tonumber(ARGV[1])
else
  local t = redis.call('TIME')
  NOW = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function q(s) return cjson.encode(s) end
local function num(n) return string.format('%d', n) end
local function kjob(id) return P .. ':job:' .. id end
local function kready(prio) return P .. ':ready:' .. prio end

-- Append one event: body is the JSON members after the common ones (may be '').
local function emit(tag, id, kind, attempt, body)
  local ev = '{"type":"' .. tag .. '","job_id":' .. q(id) .. ',"queue":' .. q(QUEUE)
    .. ',"kind":' .. q(kind) .. ',"attempt":' .. num(attempt) .. ',"at":' .. num(NOW)
  if body ~= '' then ev = ev .. ',' .. body end
  redis.call('XADD', P .. ':events', '*', 'e', ev .. '}')
end

local function queued_body(h, run_at, reason)
  local dk = 'null'
  if h.dk and h.dk ~= '' then dk = q(h.dk) end
  return '"payload":' .. h.payload .. ',"priority":"' .. h.prio .. '","run_at":' .. num(run_at)
    .. ',"max_attempts":' .. h.maxa .. ',"timeout_s":' .. h.timeout .. ',"dedup_key":' .. dk
    .. ',"reason":"' .. reason .. '"'
end

-- Put a job (hash already written) on its ready stream; returns the entry id.
local function make_ready(id, prio)
  local entry = redis.call('XADD', kready(prio), '*', 'id', id)
  redis.call('HSET', kjob(id), 'state', 'queued', 'entry', entry)
  redis.call('HDEL', kjob(id), 'worker', 'started')
  return entry
end

local function ack(prio, entry)
  redis.call('XACK', kready(prio), GROUP, entry)
  redis.call('XDEL', kready(prio), entry)
end

local JOB_FIELDS = {'state', 'kind', 'payload', 'prio', 'maxa', 'maxa0', 'timeout', 'dk',
  'attempt', 'entry', 'worker', 'started', 'enq', 'why', 'xid'}
local function load(id)
  local v = redis.call('HMGET', kjob(id), unpack(JOB_FIELDS))
  if not v[1] then return nil end
  local h = {}
  for i, f in ipairs(JOB_FIELDS) do h[f] = v[i] end
  h.attempt = tonumber(h.attempt)
  return h
end

-- A dead or canceled job keeps its spec for dead_ttl so an operator can retry it.
local function bury(id, state, dead_ttl_s)
  redis.call('HSET', kjob(id), 'state', state)
  redis.call('HDEL', kjob(id), 'worker', 'entry')
  redis.call('EXPIRE', kjob(id), dead_ttl_s)
  redis.call('ZADD', P .. ':dead', NOW, id)
  redis.call('SREM', P .. ':cancel', id)
end

local function failed_body(etype, msg, will_retry, duration)
  return '"error_type":' .. q(etype) .. ',"message":' .. q(msg) .. ',"will_retry":'
    .. (will_retry and 'true' or 'false') .. ',"duration_ms":' .. duration
end

-- Create one job unless it exists: an explicit id (xid '1') stays taken after the job
-- completed (done marker, dedup TTL), a dedup key while its key lives. Returns the
-- existing job's id, or nil when the job was created.
local function enqueue_one(id, kind, prio, run_at, maxa, timeout, dk, payload, xid, dedup_ttl)
  local existing = false
  if dk ~= '' then existing = redis.call('GET', P .. ':dedup:' .. dk) end
  -- a generated id (xid '0') is a fresh uuid4: only an explicit one can already exist
  if not existing and xid == '1' and (redis.call('EXISTS', kjob(id)) == 1
      or redis.call('EXISTS', P .. ':done:' .. id) == 1) then
    existing = id
  end
  if existing then return existing end
  local h = {kind = kind, prio = prio, maxa = maxa, timeout = timeout, dk = dk, payload = payload}
  redis.call('HSET', kjob(id), 'kind', kind, 'payload', payload, 'prio', prio, 'maxa', maxa,
    'maxa0', maxa, 'timeout', timeout, 'dk', dk, 'attempt', 1, 'enq', NOW, 'why', 'enqueue',
    'xid', xid)
  if dk ~= '' then redis.call('SET', P .. ':dedup:' .. dk, id, 'EX', dedup_ttl) end
  emit('job.queued', id, kind, 1, queued_body(h, run_at, 'enqueue'))
  if run_at > NOW then
    redis.call('HSET', kjob(id), 'state', 'scheduled', 'run_at', run_at)
    redis.call('ZADD', P .. ':delayed', run_at, id)
  else
    make_ready(id, prio)
  end
  return nil
end

local function cancel_now(id, h, by, reason, dead_ttl)
  bury(id, 'canceled', dead_ttl)
  emit('job.canceled', id, h.kind, h.attempt, '"by":' .. q(by) .. ',"reason":' .. q(reason))
end
