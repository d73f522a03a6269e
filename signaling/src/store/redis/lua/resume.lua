-- Take back a held seat by its resume token: bump its epoch, move it to this replica, replace
-- the token. When the seat was on another replica, tell every other replica of the room where
-- it lives now (an 'm' record with the new epoch), so their views route to it and the old
-- replica cuts off a connection of an older epoch it may still hold for it. Returns the updated seat record, or false.
-- KEYS[1] room hash.
-- ARGV: 1 resume token, 2 this replica, 3 room id, 4 key prefix, 5 key TTL (ms), 6 new token.
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
  local r = cjson.decode(v)
  if r.resume == ARGV[1] then
    local entry = ARGV[3] .. ' ' .. r.id
    local old = r.replica
    r.resume = ARGV[6]
    redis.call('SREM', ARGV[4] .. 'replica-peers:' .. old, entry)
    r.epoch = r.epoch + 1
    r.replica = ARGV[2]
    local enc = cjson.encode(r)
    redis.call('HSET', KEYS[1], r.id, enc)
    local set = ARGV[4] .. 'replica-peers:' .. ARGV[2]
    redis.call('SADD', set, entry)
    redis.call('PEXPIRE', set, ARGV[5])
    if old ~= ARGV[2] then
      local told = {[ARGV[2]] = true}
      local rec = string.format('m %s %s %s %d 0\n', ARGV[3], r.id, ARGV[2], r.epoch)
      redis.call('PUBLISH', ARGV[4] .. 'r:' .. old, rec)
      told[old] = true
      for _, w in ipairs(redis.call('HVALS', KEYS[1])) do
        local rep = cjson.decode(w).replica
        if not told[rep] then
          told[rep] = true
          redis.call('PUBLISH', ARGV[4] .. 'r:' .. rep, rec)
        end
      end
    end
    return enc
  end
end
return false
