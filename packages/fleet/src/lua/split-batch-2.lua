--[[
  Records that a batch job gives the items from ARGV[2] to its current end to a new batch job,
  and counts that new batch as enqueued, in one step. A job can split more than once; each
  split point is below the one before.

  KEYS[1]  splits hash of the migration (field: "<mode>|<batch job id>", value: its split
           points in the order taken, comma-separated, e.g. "500,250")
  KEYS[2]  counters hash of the batch's source
  ARGV[1]  "<mode>|<batch job id>"
  ARGV[2]  the split point: the first item index the new batch takes
  ARGV[3]  the counter of batches enqueued ("batchesEnqueued" or "verifyBatchesEnqueued")

  Returns the job's split points after this call (unchanged when ARGV[2] is not below the last
  one, which a repeated call after a crash is).
]]
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local at = tonumber(ARGV[2])
if cur then
  local last = tonumber(string.match(cur, '(%d+)$'))
  if at >= last then
    return cur
  end
  cur = cur .. ',' .. ARGV[2]
else
  cur = ARGV[2]
end
redis.call('HSET', KEYS[1], ARGV[1], cur)
redis.call('HINCRBY', KEYS[2], ARGV[3], 1)
return cur
