-- A windowed budget (ratelimit/windows.py explains the algorithm; this mirrors windows.take).
-- KEYS[1]: hash of bucket index -> amount. ARGV: amount, limit, window_s, buckets, epsilon.
-- Returns {allowed 0/1, remaining, reset_s, retry_after_s, bucket} (numbers as strings: Lua
-- numbers would be truncated to integers in the reply).
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local amount, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local window, n, eps = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local width = window / n
local current = math.floor(now / width)
local fields = redis.call('HGETALL', KEYS[1])
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
if #stale > 0 then redis.call('HDEL', KEYS[1], unpack(stale)) end
table.sort(live, function(a, b) return a[1] < b[1] end)
local function expires(index) return (index + 1) * width + window - now end
if used + amount <= limit + eps then
  redis.call('HINCRBYFLOAT', KEYS[1], current, ARGV[1])
  redis.call('PEXPIRE', KEYS[1], math.ceil((window + 2 * width) * 1000))
  local oldest = current
  if #live > 0 then oldest = live[1][1] end
  return {1, tostring(math.max(limit - used - amount, 0)), tostring(expires(oldest)), '0', current}
end
local reset = 0
if #live > 0 then reset = expires(live[1][1]) end
local retry = window
if amount <= limit then
  local excess, freed = used + amount - limit, 0
  for _, bucket in ipairs(live) do
    freed = freed + bucket[2]
    if freed + eps >= excess then
      retry = math.max(expires(bucket[1]), 0)
      break
    end
  end
end
return {0, tostring(math.max(limit - used, 0)), tostring(reset), tostring(retry), -1}
