-- A concurrency slot with a lease. KEYS[1]: sorted set of lease id -> expiry (Redis time).
-- ARGV: limit, lease_s, lease id. Returns {acquired 0/1, remaining}.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local limit, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local held = redis.call('ZCARD', KEYS[1])
if held >= limit then return {0, 0} end
redis.call('ZADD', KEYS[1], now + lease, ARGV[3])
if redis.call('PTTL', KEYS[1]) < lease * 1000 then
  redis.call('PEXPIRE', KEYS[1], math.ceil(lease * 1000))
end
return {1, limit - held - 1}
