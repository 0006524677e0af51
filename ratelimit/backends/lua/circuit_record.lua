-- ratelimit/circuit.py record(). KEYS[1]: the circuit hash. ARGV: ok 0/1, failures, cooldown_s,
-- ttl_s (idle state is forgotten after it). Returns 1 when this failure opened the circuit.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
if ARGV[1] == '1' then
  redis.call('DEL', KEYS[1])
  return 0
end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
local open_until = tonumber(redis.call('HGET', KEYS[1], 'open_until') or '0')
if open_until == 0 and failures < tonumber(ARGV[2]) then return 0 end
if open_until ~= 0 and now < open_until then return 0 end
redis.call('HSET', KEYS[1], 'open_until', tostring(now + tonumber(ARGV[3])), 'trial_until', '0')
return 1
