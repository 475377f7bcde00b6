--[[
  set-budget-1.lua: sets (or clears) the operator's budget override of Rekey's KMS limiter,
  for `rekey budget <rps|%>` while migrations run. Either way the current AIMD rate moves to
  the budget now in force at once (an explicit operator choice; AIMD takes over from there),
  and the bucket is trimmed to the capacity at that rate.

  KEYS[1]  the limiter hash (see acquire-1.lua for its fields)
  ARGV[1]  the new budget in rps (> 0), or '' to clear the override
  ARGV[2]  bucket capacity, ms of the rate
  ARGV[3]  the configured budget in rps, which applies again when the override is cleared

  Returns  the budget now in force, as a string
]]

local key = KEYS[1]
local budget
if ARGV[1] == '' then
  redis.call('HDEL', key, 'budget')
  budget = tonumber(ARGV[3])
else
  budget = tonumber(ARGV[1])
  redis.call('HSET', key, 'budget', tostring(budget))
end
local burst_ms = tonumber(ARGV[2])
redis.call('HSET', key, 'rate', tostring(budget))
local tokens = tonumber(redis.call('HGET', key, 'tokens'))
if tokens ~= nil then
  local cap = math.max(1, budget * burst_ms / 1000)
  redis.call('HSET', key, 'tokens', tostring(math.min(tokens, cap)))
end
return tostring(budget)
