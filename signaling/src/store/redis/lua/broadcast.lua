-- Presence: a frame for every peer of the room but one (the subject), one record per other
-- replica naming its recipients, the event ('j' joined, 'l' left) and the subject's replica,
-- so each replica's view of the room follows. Returns the recipients on the calling replica.
-- KEYS[1] room hash.
-- ARGV: 1 subject peer id, 2 this replica, 3 frame, 4 key prefix, 5 room id, 6 event,
-- 7 the subject's replica.
local groups = {}
local mine = {}
for _, v in ipairs(redis.call('HVALS', KEYS[1])) do
  local r = cjson.decode(v)
  if r.id ~= ARGV[1] then
    if r.replica == ARGV[2] then
      table.insert(mine, r.id)
    else
      groups[r.replica] = groups[r.replica] or {}
      table.insert(groups[r.replica], r.id)
    end
  end
end
for rep, ids in pairs(groups) do
  local rec = string.format('%s %s %s %s %s %d\n', ARGV[6], ARGV[5], ARGV[1], ARGV[7],
    table.concat(ids, ','), #ARGV[3])
  redis.call('PUBLISH', ARGV[4] .. 'r:' .. rep, rec .. ARGV[3])
end
return mine
