--[[
  Takes or renews a lease (a leader lock with a TTL).

  KEYS[1]  the lease key
  ARGV[1]  the owner id
  ARGV[2]  TTL in milliseconds

  Returns 1 when the caller holds the lease now, 0 when another owner holds it.
]]
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
