"""The Lua scripts behind the shared limits (limits.py): one scope (a key or a team) per call, its three Redis keys
under one hash tag, so each script touches one Redis Cluster slot and runs atomically.

rpm and tpm are GCRA (the generic cell rate algorithm): one number per limit, the theoretical arrival time (TAT,
ms). A limit L per period P spaces units by P/L and lets a burst of L through at once; a request of cost c passes
when TAT + c*P/L - P <= now. So at most L units pass in any burst, and the budget refills smoothly (one unit per
P/L), never all at once at a window edge. The clock is Redis's (TIME), shared by every replica; tests pass their
own `now` instead.

max_parallel is a sorted set of slots (member: request id, score: when it expires), so a replica that dies holding
slots loses them after `slot_ttl_seconds`."""

from __future__ import annotations

# KEYS: 1 rpm TAT, 2 tpm TAT, 3 parallel slots.
# ARGV: 1 "rpm tpm max_parallel slot_ttl_ms period_ms" (-1: no limit), 2 tokens reserved, 3 slot id,
#       4 now ms (absent or '': Redis TIME). Few arguments and one string back: encoding and parsing are most of a
#       call's cost on the gateway's side.
# Returns "allowed(0|1) denied_by(- | rpm | tpm | parallel) retry_ms rpm_remaining rpm_reset_ms tpm_remaining
#          tpm_reset_ms parallel_in_use(after this one)".
ADMIT = """
local now = tonumber(ARGV[4])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local conf = {}
for n in string.gmatch(ARGV[1], '%S+') do conf[#conf + 1] = tonumber(n) end
local rpm, tpm, par, ttl, period = conf[1], conf[2], conf[3], conf[4], conf[5]
local tokens, slot = tonumber(ARGV[2]), ARGV[3]

-- {ok, new TAT or false, retry ms, remaining, reset ms}
local function gcra(key, limit, cost)
  if limit < 0 then return {1, false, 0, -1, 0} end
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  if limit == 0 then return {0, false, period, 0, 0} end
  local interval = period / limit
  local new_tat = tat + cost * interval
  local allow_at = new_tat - period
  if allow_at > now then
    local left = math.floor((period - (tat - now)) / interval)
    if left < 0 then left = 0 end
    return {0, false, math.ceil(allow_at - now), left, math.ceil(tat - now)}
  end
  return {1, new_tat, 0, math.floor((period - (new_tat - now)) / interval), math.ceil(new_tat - now)}
end

local r = gcra(KEYS[1], rpm, 1)
local t = gcra(KEYS[2], tpm, tokens)
local in_use = 0
if par >= 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
  in_use = redis.call('ZCARD', KEYS[3])
end
local denied, retry = '', 0
if r[1] == 0 then denied, retry = 'rpm', r[3]
elseif t[1] == 0 then denied, retry = 'tpm', t[3]
elseif par >= 0 and in_use >= par then denied, retry = 'parallel', 1000
end
local function reply(ok, by)
  return string.format('%d %s %d %d %d %d %d %d', ok, by, retry, r[4], r[5], t[4], t[5], in_use)
end
if denied ~= '' then return reply(0, denied) end
if r[2] then redis.call('SET', KEYS[1], string.format('%.3f', r[2]), 'PX', math.ceil(r[2] - now) + 1) end
if t[2] and tokens > 0 then
  redis.call('SET', KEYS[2], string.format('%.3f', t[2]), 'PX', math.ceil(t[2] - now) + 1)
end
if par >= 0 then
  redis.call('ZADD', KEYS[3], now + ttl, slot)
  redis.call('PEXPIRE', KEYS[3], ttl)
  in_use = in_use + 1
end
return reply(1, '-')
"""

# After answers: the requests of one scope that ended together, settled in one call.
# KEYS: 1 tpm TAT, 2 parallel slots.
# ARGV: 1 tpm (-1: none), 2 period ms, 3 now ms ('': Redis TIME), 4 tokens used minus reserved, summed (may be
#       < 0: a refund), 5… slot ids to free.
# Returns 1.
SETTLE = """
local now = tonumber(ARGV[3])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local tpm, period, delta = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
if tpm > 0 and delta ~= 0 then
  local tat = tonumber(redis.call('GET', KEYS[1])) or now
  if tat < now then tat = now end
  tat = tat + delta * period / tpm
  if tat <= now then
    redis.call('DEL', KEYS[1])
  else
    redis.call('SET', KEYS[1], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1)
  end
end
for i = 5, #ARGV do redis.call('ZREM', KEYS[2], ARGV[i]) end
return 1
"""


def redis_keys(scope: str, ident: str) -> tuple[str, str, str]:
    """rpm, tpm and parallel keys of a key ("k") or team ("t"), under one hash tag (one Redis Cluster slot)."""
    tag = f"routeiq:{{{scope}:{ident}}}"
    return f"{tag}:rpm", f"{tag}:tpm", f"{tag}:par"
