-- Take a seat unless the room is full; returns {'ok', seat...} with the seats already there.
-- KEYS[1] room hash, KEYS[2] this replica's seat set.
-- ARGV: 1 peer id, 2 seat record (JSON), 3 room cap, 4 room id, 5 key TTL (ms).
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return {'full'} end
local others = redis.call('HVALS', KEYS[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('SADD', KEYS[2], ARGV[4] .. ' ' .. ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
table.insert(others, 1, 'ok')
return others
