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

# Shared by the scripts below. `clock`: the caller's now (ms; tests pass it), or Redis's TIME when it is ''.
_CLOCK = """
local function clock(arg)
  local now = tonumber(arg)
  if now then return now end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# A GCRA TAT moved by `units` (> 0: charged after the fact, < 0: given back) of a limit per period; gone once it
# falls to now (a TAT in the past means the same as none). Nothing for no limit or no units.
_MOVE = """
local function move(key, limit, units, period, now)
  if limit <= 0 or units == 0 then return end
  local tat = tonumber(redis.call('GET', key)) or now
  if tat < now then tat = now end
  tat = tat + units * period / limit
  if tat <= now then
    redis.call('DEL', key)
  else
    redis.call('SET', key, string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 1)
  end
end
"""

# One request, every scope it is limited by (its key, its team): all checked, then all taken or none.
# KEYS: 3 per scope: rpm TAT, tpm TAT, parallel slots (a key of a team is tagged with its team: one slot).
# ARGV: 1..M "rpm tpm max_parallel slot_ttl_ms period_ms [lease_requests lease_tokens lease_slots]" per scope
#       (-1: no limit), M+1 tokens reserved, M+2 slot id, M+3 now ms (absent or '': Redis TIME), M+4 the lease
#       divisor (absent: no leases; leases.py). Few arguments and one string back: encoding and parsing are most
#       of a call's cost on the gateway's side.
# Returns per scope "allowed(0|1) denied_by(- | rpm | tpm | parallel) retry_ms rpm_remaining rpm_reset_ms
#          tpm_remaining tpm_reset_ms parallel_in_use leased_requests leased_tokens leased_slots", joined by ';'.
#          Refused: nothing was taken in any scope. Leased slots are "<slot id>+1".."<slot id>+n".
ADMIT = (
    _CLOCK
    + """
local m = #KEYS / 3
local tokens, slot = tonumber(ARGV[m + 1]), ARGV[m + 2]
local now = clock(ARGV[m + 3])
local div = tonumber(ARGV[m + 4]) or 0

-- A lease: at most `want`, a 1/div share of what is left, and never the last tenth of the limit.
local function grant(want, left, limit)
  if div <= 0 or not want or want <= 0 or left <= 0 then return 0 end
  local g = math.min(want, math.floor(left / div), left - math.ceil(limit / 10))
  if g < 0 then return 0 end
  return g
end

-- A GCRA verdict that passed ({ok, new TAT, retry, left, reset}) takes a lease too: returns what it took.
local function lease(v, want, limit, period)
  local g = grant(want, v[4], limit)
  if g > 0 then
    v[2] = v[2] + g * period / limit
    v[4], v[5] = v[4] - g, math.ceil(v[2] - now)
  end
  return g
end

-- {ok, new TAT or false, retry ms, remaining, reset ms}
local function gcra(key, limit, cost, period)
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

local scopes, refused = {}, false
for s = 1, m do
  local conf = {}
  for n in string.gmatch(ARGV[s], '%S+') do conf[#conf + 1] = tonumber(n) end
  local rpm, tpm, par, ttl, period = conf[1], conf[2], conf[3], conf[4], conf[5]
  local k = (s - 1) * 3
  local r = gcra(KEYS[k + 1], rpm, 1, period)
  local t = gcra(KEYS[k + 2], tpm, tokens, period)
  local in_use = 0
  if par >= 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[k + 3], '-inf', now)
    in_use = redis.call('ZCARD', KEYS[k + 3])
  end
  local denied, retry = '-', 0
  if r[1] == 0 then denied, retry = 'rpm', r[3]
  elseif t[1] == 0 then denied, retry = 'tpm', t[3]
  elseif par >= 0 and in_use >= par then denied, retry = 'parallel', 1000
  end
  if denied ~= '-' then refused = true end
  scopes[s] = {k = k, r = r, t = t, rpm = rpm, tpm = tpm, par = par, ttl = ttl, period = period, in_use = in_use,
    denied = denied, retry = retry, want = {conf[6], conf[7], conf[8]}, got = {0, 0, 0}}
end

local out = {}
for s = 1, m do
  local c = scopes[s]
  if not refused then
    if c.r[2] then c.got[1] = lease(c.r, c.want[1], c.rpm, c.period) end
    if c.t[2] then c.got[2] = lease(c.t, c.want[2], c.tpm, c.period) end
    if c.r[2] then
      redis.call('SET', KEYS[c.k + 1], string.format('%.3f', c.r[2]), 'PX', math.ceil(c.r[2] - now) + 1)
    end
    if c.t[2] and (tokens > 0 or c.got[2] > 0) then
      redis.call('SET', KEYS[c.k + 2], string.format('%.3f', c.t[2]), 'PX', math.ceil(c.t[2] - now) + 1)
    end
    if c.par >= 0 then
      redis.call('ZADD', KEYS[c.k + 3], now + c.ttl, slot)
      c.in_use = c.in_use + 1
      local g = grant(c.want[3], c.par - c.in_use, c.par)
      for i = 1, g do redis.call('ZADD', KEYS[c.k + 3], now + c.ttl, slot .. '+' .. i) end
      c.in_use, c.got[3] = c.in_use + g, g
      redis.call('PEXPIRE', KEYS[c.k + 3], c.ttl)
    end
  end
  out[s] = string.format('%d %s %d %d %d %d %d %d %d %d %d', c.denied == '-' and 1 or 0, c.denied, c.retry,
    c.r[4], c.r[5], c.t[4], c.t[5], c.in_use, c.got[1], c.got[2], c.got[3])
end
return table.concat(out, ';')
"""
)

# After answers: the requests of one scope that ended together, settled in one call.
# KEYS: 1 tpm TAT, 2 parallel slots.
# ARGV: 1 tpm (-1: none), 2 period ms, 3 now ms ('': Redis TIME), 4 tokens used minus reserved, summed (may be
#       < 0: a refund), 5… slot ids to free.
# Returns 1.
SETTLE = (
    _CLOCK
    + _MOVE
    + """
local now = clock(ARGV[3])
local tpm, period, delta = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
move(KEYS[1], tpm, delta, period, now)
for i = 5, #ARGV do redis.call('ZREM', KEYS[2], ARGV[i]) end
return 1
"""
)


# A lease's end (leases.py): what was left of it given back, what it was overdrawn (usage past the estimates) paid.
# KEYS: 1 rpm TAT, 2 tpm TAT, 3 parallel slots.
# ARGV: 1 rpm, 2 tpm (-1: none), 3 period ms, 4 now ms ('': Redis TIME), 5 requests back, 6 tokens back (< 0: owed),
#       7… leased slots to free.
# Returns 1.
GIVE_BACK = (
    _CLOCK
    + _MOVE
    + """
local now, period = clock(ARGV[4]), tonumber(ARGV[3])
move(KEYS[1], tonumber(ARGV[1]), -tonumber(ARGV[5]), period, now)
move(KEYS[2], tonumber(ARGV[2]), -tonumber(ARGV[6]), period, now)
for i = 7, #ARGV do redis.call('ZREM', KEYS[3], ARGV[i]) end
return 1
"""
)


def redis_keys(scope: str, ident: str, team: str | None = None) -> tuple[str, str, str]:
    """rpm, tpm and parallel keys of a key ("k") or team ("t"). A key of a team shares its team's hash tag, so one
    script checks both in one Redis Cluster slot; a key without a team has its own."""
    tag = f"routeiq:{{t:{team}}}:{scope}:{ident}" if team is not None else f"routeiq:{{{scope}:{ident}}}"
    return f"{tag}:rpm", f"{tag}:tpm", f"{tag}:par"
