-- heartbeat: a worker says it is alive on this queue and learns which of its
-- running jobs were asked to cancel.
-- KEYS[1] queue prefix. ARGV: now_ms, consumer, ttl_ms, then the job ids it runs.
-- Returns the subset of those job ids that are in the cancel set.
redis.call('ZADD', P .. ':workers', NOW + tonumber(ARGV[3]), ARGV[2])
local out = {}
for i = 4, #ARGV do
  if redis.call('SISMEMBER', P .. ':cancel', ARGV[i]) == 1 then out[#out + 1] = ARGV[i] end
end
return out
