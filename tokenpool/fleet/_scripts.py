"""The Lua scripts of the fleet store: each is one atomic round trip.

Every script that needs "now" reads Redis ``TIME`` itself, so the whole fleet
shares one clock (the Redis server's) whatever the hosts' clocks say.  Redis 7
replicates script effects, not scripts, so ``TIME`` before a write is allowed.
Scripts return integers and strings only (a Lua number with a fraction would
be truncated in the reply).
"""

from __future__ import annotations

__all__ = ["ACQUIRE", "FENCE", "PUBLISH", "READ", "RELEASE"]

#: KEYS: token, lease.  Returns {value or nil, TIME seconds, TIME microseconds, lease exists (0/1)}.
READ = """
local value = redis.call('GET', KEYS[1])
local now = redis.call('TIME')
local leased = redis.call('EXISTS', KEYS[2])
return {value, now[1], now[2], leased}
"""

#: KEYS: token, lease.  ARGV: owner, ttl (ms), SHA-1 of the token value the caller last saw ('' for none).
#: Takes the lease only if the token is still what the caller saw: a token published between
#: the caller's read and this call must be adopted, not fetched again.
#: Returns 1 (lease taken), 0 (held by another process), -1 (the token changed: read again).
ACQUIRE = """
local value = redis.call('GET', KEYS[1])
local seen = ''
if value then seen = redis.sha1hex(value) end
if seen ~= ARGV[3] then return -1 end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

#: KEYS: token, lease, gen.  ARGV: value prefix (JSON object without its closing brace),
#: age (seconds since the token request was sent, measured by the caller), expires_in,
#: owner ('' when the caller holds no lease), channel.
#: Writes the token if the caller holds the lease, or if nobody holds it and no token is
#: stored (a per-process fetch may fill an empty slot, never replace a newer token), with
#: issued_at = TIME - age, PX = the remaining lifetime; bumps the generation, publishes it on
#: the channel and releases the caller's lease.  Returns {written (0/1), generation}.
PUBLISH = """
local holder = redis.call('GET', KEYS[2])
local mine = ARGV[4] ~= '' and holder == ARGV[4]
if not mine and (holder or redis.call('EXISTS', KEYS[1]) == 1) then
  return {0, 0}
end
local now = redis.call('TIME')
local age = tonumber(ARGV[2])
local px = math.floor((tonumber(ARGV[3]) - age) * 1000)
if px < 1 then
  if mine then redis.call('DEL', KEYS[2]) end
  return {0, 0}
end
local issued = tonumber(now[1]) + tonumber(now[2]) / 1000000 - age
local gen = redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], px + 3600000)
local value = ARGV[1] .. ',"issued_at":' .. string.format('%.6f', issued) .. ',"gen":' .. gen .. '}'
redis.call('SET', KEYS[1], value, 'PX', px)
if mine then redis.call('DEL', KEYS[2]) end
redis.call('PUBLISH', ARGV[5], tostring(gen))
return {1, gen}
"""

#: KEYS: lease.  ARGV: owner.  Compare-and-delete: only the holder releases.  Returns 1 or 0.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""

#: KEYS: token.  ARGV: SHA-256 of the access token that got a 401.
#: Deletes the shared token only if it is still that one.  Returns 1 (deleted) or 0.
FENCE = """
local value = redis.call('GET', KEYS[1])
if not value then return 0 end
local ok, decoded = pcall(cjson.decode, value)
if ok and type(decoded) == 'table' and decoded['digest'] == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
"""
