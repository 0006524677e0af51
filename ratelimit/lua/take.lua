-- Windowed budgets, all or nothing (ratelimit/windows.py explains the algorithm; this mirrors
-- windows.take_all). KEYS: one hash per budget, bucket index -> amount.
-- ARGV: buckets per window, epsilon, then amount, limit, window_s for each key.
-- Returns per key {charged 0/1, remaining, reset_s, retry_after_s, bucket} (numbers as strings:
-- Lua numbers would be truncated to integers in the reply); every key is charged or none.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n, eps = tonumber(ARGV[1]), tonumber(ARGV[2])
local budgets, fits = {}, true
for k = 1, #KEYS do
  local amount, limit = tonumber(ARGV[3 * k]), tonumber(ARGV[3 * k + 1])
  local window = tonumber(ARGV[3 * k + 2])
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
                used = used, live = live, room = used + amount <= limit + eps}
  fits = fits and budgets[k].room
end
local reply = {}
for k, b in ipairs(budgets) do
  local function expires(index) return (index + 1) * b.width + b.window - now end
  if fits then
    redis.call('HINCRBYFLOAT', KEYS[k], b.current, ARGV[3 * k])
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
return reply
