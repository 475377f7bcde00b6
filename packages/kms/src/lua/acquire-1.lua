--[[
  acquire-1.lua: one grant step of Rekey's fleet-wide KMS limiter (one per account and Region).
  Refill a token bucket at the current rate, apply AIMD, share the rate between active
  migrations by weight, and grant up to the requested tokens. The same steps, as pure
  TypeScript, are in src/limiter-math.ts (grantStep); keep the two in step.

  KEYS[1]  the limiter hash. Fields:
             rate, tokens, ts, ldec, linc    current rate (rps), bucket, last refill / decrease /
                                             increase (server ms)
             budget                          operator override of the budget (set-budget-1.lua)
             w:<m> s:<m> t:<m> u:<m>         migration m: weight, last seen, own bucket, its refill time
  ARGV[1]  requested tokens (integer >= 0; 0 only reports the flags)
  ARGV[2]  configured budget, rps (used unless the hash holds an override)
  ARGV[3]  minRps
  ARGV[4]  AIMD decrease factor (0 < f < 1)
  ARGV[5]  AIMD increase, rps per second (the step's floor; see ARGV[14])
  ARGV[6]  AIMD window, ms
  ARGV[7]  bucket capacity, ms of the rate
  ARGV[8]  1 when the caller saw a throttle since its last call, else 0
  ARGV[9]  1 when the caller saw a success since its last call, else 0
  ARGV[10] migration id ('' = not shared out by migration)
  ARGV[11] migration weight (> 0)
  ARGV[12] ms after which a silent migration loses its share
  ARGV[13] time override in ms for tests; '' = server time (redis TIME), which production uses so
           the clocks of the processes don't matter
  ARGV[14] AIMD increase, percent of the budget per second; the larger of it and ARGV[5] applies

  Returns  { granted (integer), waitMs (string), rate (string), budget (string) }
           waitMs: how long until one more token can be granted to this caller (0: now).
]]

local key = KEYS[1]
local requested = tonumber(ARGV[1])
local budget_cfg = tonumber(ARGV[2])
local min_rps = tonumber(ARGV[3])
local decrease = tonumber(ARGV[4])
local increase_rps = tonumber(ARGV[5])
local window_ms = tonumber(ARGV[6])
local burst_ms = tonumber(ARGV[7])
local throttled = ARGV[8] == '1'
local succeeded = ARGV[9] == '1'
local mig = ARGV[10]
local weight = tonumber(ARGV[11])
local active_ms = tonumber(ARGV[12])
local increase_pct = tonumber(ARGV[14])
local MAX_INCREASE_STEP_MS = 1000

local now
if ARGV[13] ~= '' then
  now = tonumber(ARGV[13])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
end

local function capacity(rate)
  return math.max(1, rate * burst_ms / 1000)
end

local function refill(tokens, elapsed, rate, cap)
  return math.min(cap, tokens + math.max(0, elapsed) * rate / 1000)
end

local h = {}
local raw = redis.call('HGETALL', key)
for i = 1, #raw, 2 do h[raw[i]] = raw[i + 1] end

local budget = tonumber(h['budget']) or budget_cfg
local rate = tonumber(h['rate'])
local tokens, ts, ldec, linc
if h['ts'] == nil then
  -- First use (set-budget-1.lua may already have stored a rate).
  rate = rate or budget
  tokens = capacity(rate)
  ts = now
  ldec = 0
  linc = now
else
  tokens = tonumber(h['tokens'])
  ts = tonumber(h['ts'])
  ldec = tonumber(h['ldec'])
  linc = tonumber(h['linc'])
end

-- Refill at the rate that was in force since the last call.
tokens = refill(tokens, now - ts, rate, capacity(rate))
ts = now

-- AIMD (limiter-math.ts aimdUpdate).
local floor = math.min(min_rps, budget)
rate = math.max(floor, math.min(rate, budget))
local settled = (now - ldec) >= window_ms
if throttled then
  if settled then
    rate = math.max(floor, rate * decrease)
    ldec = now
  end
elseif succeeded and settled then
  local credit = math.min(MAX_INCREASE_STEP_MS, math.max(0, now - linc))
  local step = math.max(increase_rps, budget * increase_pct / 100)
  rate = math.min(budget, rate + step * credit / 1000)
end
linc = now
local cap = capacity(rate)
tokens = math.min(tokens, cap)

-- Fair share between active migrations.
local allowed = tokens
local slot_tokens, share
if mig ~= '' then
  local total = weight
  for f, v in pairs(h) do
    local other = string.match(f, '^w:(.*)$')
    if other ~= nil and other ~= mig then
      local seen = tonumber(h['s:' .. other]) or 0
      if now - seen > active_ms then
        redis.call('HDEL', key, 'w:' .. other, 's:' .. other, 't:' .. other, 'u:' .. other)
      else
        total = total + tonumber(v)
      end
    end
  end
  share = rate * weight / total
  local mcap = capacity(share)
  local mt = tonumber(h['t:' .. mig])
  if mt == nil then
    slot_tokens = mcap
  else
    slot_tokens = refill(mt, now - tonumber(h['u:' .. mig]), share, mcap)
  end
  local slack = math.max(0, tokens - cap / 2)
  allowed = math.min(tokens, slot_tokens + slack)
end

local granted = math.max(0, math.min(requested, math.floor(allowed)))
tokens = tokens - granted

local wait = 0
if tokens < 1 then wait = (1 - tokens) * 1000 / rate end
if mig ~= '' then
  slot_tokens = math.max(0, slot_tokens - granted)
  local slack = math.max(0, tokens - cap / 2)
  if slot_tokens + slack < 1 then
    wait = math.max(wait, (1 - slot_tokens) * 1000 / share)
  end
  redis.call('HSET', key, 'w:' .. mig, tostring(weight), 's:' .. mig, tostring(now),
    't:' .. mig, tostring(slot_tokens), 'u:' .. mig, tostring(now))
end

redis.call('HSET', key, 'rate', tostring(rate), 'tokens', tostring(tokens), 'ts', tostring(ts),
  'ldec', tostring(ldec), 'linc', tostring(linc))

return { granted, tostring(wait), tostring(rate), tostring(budget) }
