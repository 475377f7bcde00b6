--[[
  Records the outcomes of one batch in one round trip, at most once per batch job id.

  KEYS[1]  recorded set of the migration (batch job ids already counted)
  KEYS[2]  counters hash of the batch's source
  KEYS[3]  failures stream of the migration
  KEYS[4]  samples sorted set of the migration (throughput over time)
  KEYS[5]  carried hash of the migration (outcomes earlier attempts of a batch finished; this batch's field is deleted)
  ARGV[1]  batch job id
  ARGV[2]  JSON object of counter increments, e.g. {"reencrypted":98,"failed":2,"batchesDone":1}
  ARGV[3]  JSON array of failures: [{"item":"…","code":"…","reason":"…","source":"…"}]
  ARGV[4]  maximum length of the failures stream (approximate trimming)
  ARGV[5]  now in milliseconds (sample score)
  ARGV[6]  items processed in this batch (sample value)
  ARGV[7]  pub/sub channel told when this batch leaves its source with no batch outstanding
  ARGV[8]  migration id (the message published on ARGV[7])

  Publishing when the last outstanding batch is recorded lets a coordinator start the next phase
  at once instead of on its next tick. Batches done can only catch up with batches enqueued
  at the end of a pass, or when workers outrun the enumerator, so this is rare.

  Returns 1 when recorded, 0 when this batch id was already recorded (nothing changed).
]]
redis.call('HDEL', KEYS[5], ARGV[1])
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then
  return 0
end
local incr = cjson.decode(ARGV[2])
for field, n in pairs(incr) do
  if n ~= 0 then
    redis.call('HINCRBY', KEYS[2], field, n)
  end
end
local failures = cjson.decode(ARGV[3])
for _, f in ipairs(failures) do
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*',
    'source', f['source'], 'item', f['item'], 'code', f['code'] or '', 'reason', f['reason'] or '')
end
if tonumber(ARGV[6]) > 0 then
  redis.call('ZADD', KEYS[4], ARGV[5], ARGV[1] .. '|' .. ARGV[6])
end
local c = redis.call('HMGET', KEYS[2], 'batchesDone', 'batchesEnqueued', 'verifyBatchesDone', 'verifyBatchesEnqueued')
local n = function(v) return tonumber(v) or 0 end
if n(c[1]) >= n(c[2]) and n(c[3]) >= n(c[4]) then
  redis.call('PUBLISH', ARGV[7], ARGV[8])
end
return 1
