--[[
  Appends one entry to a hash-chained audit stream if the chain head is still the one the
  caller hashed against (optimistic concurrency; SHA-256 is computed by the caller).

  KEYS[1]  audit stream
  KEYS[2]  chain head (the hash of the newest entry; missing for an empty log)
  ARGV[1]  the head the entry was chained to ('' for the first entry)
  ARGV[2]  the new entry's hash
  ARGV[3]  the entry as canonical JSON (includes prev and ts)

  Returns the stream id on success, or false when the head moved (the caller re-reads and retries).
]]
local head = redis.call('GET', KEYS[2]) or ''
if head ~= ARGV[1] then
  return false
end
local id = redis.call('XADD', KEYS[1], '*', 'entry', ARGV[3], 'hash', ARGV[2])
redis.call('SET', KEYS[2], ARGV[2])
return id
