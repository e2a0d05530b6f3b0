-- idle: is there anything left to do on this queue? (burst mode's exit test)
-- KEYS[1] queue prefix. ARGV: now_ms.
-- Returns {undelivered entries (0/1 per stream, summed), pending entries, due delayed jobs}.
local undelivered, pending = 0, 0
for _, prio in ipairs({'high', 'medium', 'low'}) do
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', kready(prio))
  local last = '0-0'
  if ok then
    for _, g in ipairs(groups) do
      local name, ld, pel
      for i = 1, #g, 2 do
        if g[i] == 'name' then name = g[i + 1]
        elseif g[i] == 'last-delivered-id' then ld = g[i + 1]
        elseif g[i] == 'pending' then pel = g[i + 1] end
      end
      if name == GROUP then last, pending = ld, pending + pel end
    end
  end
  if redis.call('EXISTS', kready(prio)) == 1 then
    local nxt = redis.call('XRANGE', kready(prio), '(' .. last, '+', 'COUNT', 1)
    if #nxt > 0 then undelivered = undelivered + 1 end
  end
end
local due = redis.call('ZCOUNT', P .. ':delayed', '-inf', NOW)
return {undelivered, pending, due}
