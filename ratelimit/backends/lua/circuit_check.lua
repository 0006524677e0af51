-- ratelimit/circuit.py check(). KEYS[1]: hash {failures, open_until, trial_until}.
-- ARGV: trial_lease_s. Returns {allowed 0/1, state, retry_after_s, consecutive failures}.
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'open_until', 'trial_until', 'failures')
local open_until, trial_until = tonumber(state[1] or '0'), tonumber(state[2] or '0')
if open_until == 0 then return {1, 'closed', '0', tonumber(state[3] or '0')} end
if now < open_until then return {0, 'open', tostring(open_until - now), 0} end
if now < trial_until then return {0, 'open', tostring(trial_until - now), 0} end
redis.call('HSET', KEYS[1], 'trial_until', tostring(now + tonumber(ARGV[1])))
return {1, 'trial', '0', 0}
