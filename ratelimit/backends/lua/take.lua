-- Windowed budgets, all or nothing (ratelimit/windows.py explains the algorithm; this mirrors
-- windows.take_all), optionally with a concurrency slot in the same round trip (acquire.lua's).
-- KEYS: one hash per budget (bucket index -> amount), then the slot's sorted set if there is one.
-- ARGV: buckets per window, epsilon, slot limit (0: no slot), slot lease_s, slot lease id,
-- then amount, limit, window_s for each budget.
-- Returns per budget {charged 0/1, remaining, reset_s, retry_after_s, bucket} (numbers as strings:
-- Lua numbers would be truncated to integers in the reply), then {acquired 0/1, remaining} for the
-- slot. Every budget is charged and the slot taken, or nothing is.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n, eps = tonumber(ARGV[1]), tonumber(ARGV[2])
local slot_limit, lease = tonumber(ARGV[3]), tonumber(ARGV[4])
local count = #KEYS
local slot_free = true
local held = 0
if slot_limit > 0 then
  count = count - 1
  redis.call('ZREMRANGEBYSCORE', KEYS[#KEYS], '-inf', now)
  held = redis.call('ZCARD', KEYS[#KEYS])
  slot_free = held < slot_limit
end
local budgets, fits = {}, slot_free
for k = 1, count do
  local base = 5 + 3 * (k - 1)
  local amount, limit, window = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2]), tonumber(ARGV[base + 3])
  local width = window / n
  local current = math.floor(now / width)
  local fields = redis.call('HGETALL', KEYS[k])
  local used, live, stale = 0, {}, {}
  for i = 1, #fields, 2 do
    local index, value = tonumber(fields[i]), tonumber(fields[i + 1])
    if index < current - n then
      stale[#stale + 1] = fields[i]
    else
      used = used + value
      live[#live + 1] = {index, value}
    end
  end
  if #stale > 0 then redis.call('HDEL', KEYS[k], unpack(stale)) end
  table.sort(live, function(a, b) return a[1] < b[1] end)
  budgets[k] = {amount = amount, limit = limit, window = window, width = width, current = current,
                used = used, live = live, room = used + amount <= limit + eps, arg = ARGV[base + 1]}
  fits = fits and budgets[k].room
end
local reply = {}
for k, b in ipairs(budgets) do
  local function expires(index) return (index + 1) * b.width + b.window - now end
  if fits then
    redis.call('HINCRBYFLOAT', KEYS[k], b.current, b.arg)
    redis.call('PEXPIRE', KEYS[k], math.ceil((b.window + 2 * b.width) * 1000))
    local oldest = b.current
    if #b.live > 0 then oldest = b.live[1][1] end
    reply[#reply + 1] = {1, tostring(math.max(b.limit - b.used - b.amount, 0)), tostring(expires(oldest)), '0', b.current}
  else
    local reset, retry = 0, 0
    if #b.live > 0 then reset = expires(b.live[1][1]) end
    if not b.room then
      retry = b.window
      if b.amount <= b.limit then
        local excess, freed = b.used + b.amount - b.limit, 0
        for _, bucket in ipairs(b.live) do
          freed = freed + bucket[2]
          if freed + eps >= excess then
            retry = math.max(expires(bucket[1]), 0)
            break
          end
        end
      end
    end
    reply[#reply + 1] = {0, tostring(math.max(b.limit - b.used, 0)), tostring(reset), tostring(retry), -1}
  end
end
if slot_limit > 0 then
  if fits then
    redis.call('ZADD', KEYS[#KEYS], now + lease, ARGV[5])
    if redis.call('PTTL', KEYS[#KEYS]) < lease * 1000 then
      redis.call('PEXPIRE', KEYS[#KEYS], math.ceil(lease * 1000))
    end
    reply[#reply + 1] = {1, slot_limit - held - 1}
  else
    reply[#reply + 1] = {0, math.max(slot_limit - held, 0)}
  end
end
return reply
