-- Route a frame by the room hash (the replicas' views missed): publish it to the replica
-- holding the peer as an 'F' record (never forwarded again). Returns '' when the peer is not in
-- the room, '=' when it is held by the calling replica, else the replica it was published to.
-- KEYS[1] room hash.
-- ARGV: 1 peer id, 2 this replica, 3 frame, 4 key prefix, 5 room id.
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return '' end
local r = cjson.decode(v)
if r.replica == ARGV[2] then return '=' end
local rec = string.format('F %s - - %s %d\n', ARGV[5], ARGV[1], #ARGV[3])
redis.call('PUBLISH', ARGV[4] .. 'r:' .. r.replica, rec .. ARGV[3])
return r.replica
