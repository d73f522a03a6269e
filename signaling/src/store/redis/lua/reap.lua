-- Remove the seats of replicas whose lease ran out (16 replicas per call); returns the
-- "{room} {peer}" seats removed, for the caller to tell their rooms.
-- KEYS[1] the lease sorted set. ARGV: 1 key prefix.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, 16)
local removed = {}
for _, rep in ipairs(dead) do
  redis.call('ZREM', KEYS[1], rep)
  local set = ARGV[1] .. 'replica-peers:' .. rep
  for _, entry in ipairs(redis.call('SMEMBERS', set)) do
    local sp = string.find(entry, ' ', 1, true)
    if sp then
      local rk = ARGV[1] .. 'room:' .. string.sub(entry, 1, sp - 1)
      local peer = string.sub(entry, sp + 1)
      local v = redis.call('HGET', rk, peer)
      if v and cjson.decode(v).replica == rep then
        redis.call('HDEL', rk, peer)
        table.insert(removed, entry)
      end
    end
  end
  redis.call('DEL', set)
end
return removed
