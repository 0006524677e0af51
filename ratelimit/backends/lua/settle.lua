-- Correct reservations' buckets by actual - reserved while they still count (windows.settle).
-- KEYS: the budget hashes.
-- ARGV: buckets per window, epsilon, then bucket, delta, window_s per budget.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local n, eps = tonumber(ARGV[1]), tonumber(ARGV[2])
for k = 1, #KEYS do
  local base = 2 + 3 * (k - 1)
  local field, delta, window = ARGV[base + 1], ARGV[base + 2], tonumber(ARGV[base + 3])
  local width = window / n
  if tonumber(field) >= math.floor(now / width) - n then
    local value = tonumber(redis.call('HINCRBYFLOAT', KEYS[k], field, delta))
    if value <= eps then redis.call('HDEL', KEYS[k], field) end
    if redis.call('PTTL', KEYS[k]) < 0 then
      redis.call('PEXPIRE', KEYS[k], math.ceil((window + 2 * width) * 1000))
    end
  end
end
return 1
