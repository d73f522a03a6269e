-- Renew this replica's lease (server clock) and the TTLs of the keys it uses. Returns 1 when
-- the lease was new: Redis lost our state (restart) or we were presumed dead and reaped.
-- KEYS[1] the lease sorted set, KEYS[2] this replica's seat set.
-- ARGV: 1 this replica, 2 lease (ms), 3 key TTL (ms), 4.. room hashes of our seats.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local added = redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
for i = 4, #ARGV do redis.call('PEXPIRE', ARGV[i], ARGV[3]) end
return added
