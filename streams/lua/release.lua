-- release: give back entries delivered to this consumer but never started (a stopping
-- worker's backlog): each goes back on its ready stream as a new entry, no event (the
-- job never left the queued state).
-- KEYS[1] queue prefix. ARGV: now_ms, consumer, then 4 per entry:
--   priority, entry_id, field ('id' | 'job'), value.
-- Returns the number of entries released.
local n = 0
for i = 3, #ARGV, 4 do
  local prio, entry, field, value = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if field == 'job' then
    redis.call('XADD', kready(prio), '*', 'job', value)
    n = n + 1
  elseif field == 'id' then
    local h = load(value)
    if h and h.state == 'queued' and h.entry == entry then
      make_ready(value, h.prio)
      n = n + 1
    end
  end
  ack(prio, entry)
end
return n
