--[[
  Saves an enumeration checkpoint after a page's batch was enqueued, and counts the page's
  items as discovered, exactly once per page.

  KEYS[1]  cursor hash of the source and mode (fields: cursor, page, done)
  KEYS[2]  counters hash of the source
  ARGV[1]  page number that was just enqueued (0-based)
  ARGV[2]  the cursor after this page ('' when the source is exhausted)
  ARGV[3]  number of items in the page
  ARGV[4]  counter field for discovered items ('discovered' or 'verifyDiscovered')
  ARGV[5]  counter field for enqueued batches ('batchesEnqueued' or 'verifyBatchesEnqueued')
  ARGV[6]  '1' when this page is the last one

  Returns 1 when saved, 0 when the page was already checkpointed (a replay after a crash).
]]
local stored = tonumber(redis.call('HGET', KEYS[1], 'page') or '-1')
local page = tonumber(ARGV[1])
if page <= stored then
  return 0
end
redis.call('HSET', KEYS[1], 'page', page, 'cursor', ARGV[2], 'done', ARGV[6])
if tonumber(ARGV[3]) > 0 then
  redis.call('HINCRBY', KEYS[2], ARGV[4], ARGV[3])
  redis.call('HINCRBY', KEYS[2], ARGV[5], 1)
end
return 1
