-- Correct a reservation's bucket by actual - reserved while it still counts (windows.settle).
-- KEYS[1]: the budget hash. ARGV: bucket, delta, window_s, buckets, epsilon.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local bucket, delta = tonumber(ARGV[1]), tonumber(ARGV[2])
local window, n, eps = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local width = window / n
if bucket < math.floor(now / width) - n then return 0 end
local value = tonumber(redis.call('HINCRBYFLOAT', KEYS[1], ARGV[1], delta))
if value <= eps then redis.call('HDEL', KEYS[1], ARGV[1]) end
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], math.ceil((window + 2 * width) * 1000))
end
return 1
