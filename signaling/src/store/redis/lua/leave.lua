-- Give up a seat (only of the given epoch, when one is given). Returns 1 if removed.
-- KEYS[1] room hash.
-- ARGV: 1 peer id, 2 epoch or '', 3 room id, 4 key prefix.
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
local r = cjson.decode(v)
if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= r.epoch then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', ARGV[4] .. 'replica-peers:' .. r.replica, ARGV[3] .. ' ' .. ARGV[1])
return 1
