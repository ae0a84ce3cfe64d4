"""The Lua scripts that make every fleet operation one atomic round trip.

Redis runs a script without interleaving any other command, so "check the
limits, then count and reserve" can never race between processes, and no
WATCH/retry loop is needed. Money is kept in integer nano-USD (1e-9 USD):
``HINCRBY`` on integers never drifts, where summing floats would.

Keys of one scope (``P`` is ``<prefix>:{<scope>}``; the braces make every key
of a scope share one Redis Cluster hash slot):

``P:<w>``          hash: ``calls``, ``spent``, ``reserved`` of window ``w``;
                   ``a:<hold>`` = nano-USD a live hold reserves; ``p:<model>`` =
                   the hold probing that model's cost; ``t:<hold>`` = when that
                   probe was admitted, ``b:<hold>`` = until when its process was
                   last heard from (ms; renewed while its call runs, ``BEAT``)
``P:<w>:live``     zset: hold id -> lease deadline (ms, Redis clock), plus the
                   member ``~`` at +inf so the key and its expiry outlive
                   the moments it holds no call
``P:<w>:exp``      hash: holds whose lease ran out before they settled
``P:learned``      hash: model -> the largest cost one call of it has settled at

Window ``w`` is ``floor(now_ms / window_ms)`` on the Redis server's clock (one
clock for the whole fleet); its keys expire at the window's end + the lease, so
a call admitted in the window's last moment can still settle into it. Each
script reads with one ``HMGET`` and writes with one ``HSET``: every command a
script runs costs a few microseconds of the one Redis every process shares.
"""

from __future__ import annotations

# Shared helpers, prepended to every script.
_PRELUDE = r"""
-- Redis < 5 replicates scripts verbatim unless told otherwise; TIME needs effects.
if redis.replicate_commands then pcall(redis.replicate_commands) end
-- Every number written back is formatted as an integer; '%d' wraps past 2^63,
-- so it saturates well below (4e18 nano-USD = $4e9, beyond any budget we accept):
-- a sum can never turn negative and switch a limit off.
local function int(n)
  if n ~= n then n = 0 end
  if n > 4e18 then n = 4e18 elseif n < -4e18 then n = -4e18 end
  return string.format('%d', n)
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- Move holds whose lease ran out from live to expired, freeing what they reserve.
-- Bounded per call; a backlog drains over the next calls.
local function purge(base, now, expire_at, keep)
  local live = base .. ':live'
  local gone = redis.call('ZRANGEBYSCORE', live, '-inf', now, 'LIMIT', 0, 256)
  if #gone == 0 then return end
  local fields, moved, freed, dropped = {}, {}, 0, {}
  for i, id in ipairs(gone) do
    fields[i] = 'a:' .. id
    dropped[#dropped + 1] = 'a:' .. id
    dropped[#dropped + 1] = 'b:' .. id
    dropped[#dropped + 1] = 't:' .. id
  end
  local amounts = redis.call('HMGET', base, unpack(fields))
  for i, id in ipairs(gone) do
    local a = tonumber(amounts[i] or '0')
    freed = freed + a
    moved[#moved + 1] = id
    moved[#moved + 1] = int(a)
  end
  redis.call('HSET', base .. ':exp', unpack(moved))
  redis.call('ZREM', live, unpack(gone))
  redis.call('HDEL', base, unpack(dropped))
  redis.call('HINCRBY', base, 'reserved', int(-freed))
  if expire_at then
    redis.call('PEXPIREAT', base .. ':exp', int(expire_at))
  elseif keep > 0 then
    redis.call('PEXPIRE', base .. ':exp', keep)
  end
end
local function window(window_ms, lease_ms, now)
  if window_ms <= 0 then return 0, 0, nil end
  local w = math.floor(now / window_ms)
  local start = w * window_ms
  return w, start, start + window_ms + lease_ms
end
"""

#: KEYS: P, P:learned, and for a shared session's level P:closed (set at its close:
#: present, it answers {3}, closed, and nothing is counted or created).
#: ARGV: window_ms (0 = one unending window), lease_ms, max_calls (-1 = none),
#: budget nano (-1 = none), expected nano, model, hold id, force (1 = admit even
#: while another call probes this model's cost), keep ms (with no window, the keys'
#: expiry, renewed by each admission; 0 = none), alive ms (when this call probes: how
#: long its process counts as alive after each renewal of it, ``BEAT``; 0 or absent =
#: not renewed, the probe lasts its lease).
#: A probe is lost when its process stopped renewing it (crashed or killed: ``b:<hold>``
#: passed); the next call then probes in its place. A probe whose process renews it
#: is waited for however slow its call, until it settles or its lease ends; one with
#: no renewal mark (admitted by an older client) is waited for until its lease ends.
#: Returns {1, w, window_start_ms, reserved nano, lease deadline ms, fresh, calls,
#: spent nano, reserved nano, lost ms, probing} when admitted (fresh = 1 when this
#: call created the window's keys; then the window's totals with this call counted;
#: lost: how long the probe this call took over from had been in flight, else 0;
#: probing = 1 when this call is the model's probe, which its process renews; a
#: retried admission returns only the first six), {0, 'calls', calls} or
#: {0, 'budget', spent + reserved, reserved} when refused, or {2, ms left on the
#: probe's lease, ms the probe has been in flight (-1: unknown)} while the model's
#: first call is in flight and alive.
ADMIT = (
    _PRELUDE
    + r"""
local window_ms, lease_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local max_calls, budget = tonumber(ARGV[3]), tonumber(ARGV[4])
local expected, model, id = tonumber(ARGV[5]), ARGV[6], ARGV[7]
local keep = tonumber(ARGV[9] or '0')
local alive_ms = tonumber(ARGV[10] or '0')
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 1 then return {3} end
local now = now_ms()
local w, start, expire_at = window(window_ms, lease_ms, now)
local base = KEYS[1] .. ':' .. w
local live = base .. ':live'
purge(base, now, expire_at, keep)
local v = redis.call('HMGET', base, 'calls', 'spent', 'reserved', 'a:' .. id, 'p:' .. model)
if v[4] then
  -- A retried admission (the first reply was lost) returns the first one, counted once.
  return {1, w, start, tonumber(v[4]), tonumber(redis.call('ZSCORE', live, id) or now), 0}
end
local calls = tonumber(v[1] or '0')
local spent, reserved = tonumber(v[2] or '0'), tonumber(v[3] or '0')
if max_calls >= 0 and calls >= max_calls then return {0, 'calls', calls} end
local probing, lost = false, 0
if budget >= 0 then
  -- Others' reservations count, this call's own estimate does not: the call
  -- that crosses the budget runs (the overshoot bound covers it).
  if spent + reserved >= budget then
    return {0, 'budget', int(spent + reserved), int(reserved)}
  end
  if model ~= '' then
    local learned = redis.call('HGET', KEYS[2], model)
    if learned then
      expected = math.max(expected, tonumber(learned))
    elseif expected <= 0 and ARGV[8] ~= '1' then
      -- Nothing known about this model's cost: one call runs alone as a probe.
      if v[5] then
        local deadline = redis.call('ZSCORE', live, v[5])
        if deadline then
          -- Its start and liveness are its own (never derived from this call's lease).
          local b = redis.call('HMGET', base, 'b:' .. v[5], 't:' .. v[5])
          local age = b[2] and now - tonumber(b[2]) or -1
          if not b[1] or tonumber(b[1]) > now then
            return {2, int(math.max(tonumber(deadline) - now, 1)), int(age)}
          end
          -- Its process stopped renewing it: this call probes in its place.
          lost = math.max(age, 1)
        end
      end
      probing = true
    end
  end
end
local deadline = now + lease_ms
local fields = {'calls', int(calls + 1), 'reserved', int(reserved + expected), 'a:' .. id,
                int(expected)}
if probing then
  fields[7] = 'p:' .. model
  fields[8] = id
  if alive_ms > 0 then
    fields[9] = 'b:' .. id
    fields[10] = int(now + alive_ms)
    fields[11] = 't:' .. id
    fields[12] = int(now)
  end
end
redis.call('HSET', base, unpack(fields))
if v[1] or not expire_at then
  redis.call('ZADD', live, int(deadline), id)
  if not expire_at and keep > 0 then
    -- No window ends these keys (a shared session's): each use keeps them that long.
    redis.call('PEXPIRE', base, keep)
    redis.call('PEXPIRE', live, keep)
  end
else
  -- A new window: its keys end with it (plus the lease).
  redis.call('ZADD', live, int(deadline), id, '+inf', '~')
  redis.call('PEXPIREAT', base, int(expire_at))
  redis.call('PEXPIREAT', live, int(expire_at))
end
return {1, w, start, expected, deadline, v[1] and 0 or 1, calls + 1, int(spent),
        int(reserved + expected), int(lost), probing and 1 or 0}
"""
)

#: KEYS: P:<w> (the hold's window), P:learned, and for a shared session's scope its
#: close mark (with its keys gone and the mark set, nothing is booked or made: 0).
#: ARGV: hold id, actual nano, model, mode ('settle' books the actual cost;
#: 'release' books nothing and un-counts the call; 'abandon' books nothing and
#: keeps it counted), learned-cost ttl ms, keep ms (a key with no expiry gets it).
#: Returns 1 when this call finished the hold, 0 when it was already finished:
#: that is what makes a retried settlement book once; -1 when the window's keys
#: are gone (expired, or evicted / lost before their time).
FINISH = (
    _PRELUDE
    + r"""
local base = KEYS[1]
local id, actual, model, mode = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local keep = tonumber(ARGV[6] or '0')
if KEYS[3] and redis.call('EXISTS', base) == 0 and redis.call('EXISTS', KEYS[3]) == 1 then
  -- A closed session's keys ended with its lease: nothing to book into, nothing made.
  return 0
end
local live = redis.call('ZREM', base .. ':live', id) == 1
if not live and redis.call('HDEL', base .. ':exp', id) == 0 then
  if redis.call('EXISTS', base) == 0 then return -1 end
  return 0
end
local v = redis.call('HMGET', base, 'calls', 'spent', 'reserved', 'a:' .. id, 'p:' .. model)
local calls, spent = tonumber(v[1] or '0'), tonumber(v[2] or '0')
local reserved = tonumber(v[3] or '0')
-- An expired hold's reservation was freed when its lease ran out.
if live then reserved = reserved - tonumber(v[4] or '0') end
if mode == 'release' then
  calls = calls - 1
elseif mode == 'settle' then
  spent = spent + actual
end
redis.call('HSET', base, 'calls', int(calls), 'spent', int(spent), 'reserved', int(reserved))
if keep > 0 and redis.call('PTTL', base) < 0 then redis.call('PEXPIRE', base, keep) end
if v[5] == id then
  redis.call('HDEL', base, 'a:' .. id, 'b:' .. id, 't:' .. id, 'p:' .. model)
else
  redis.call('HDEL', base, 'a:' .. id, 'b:' .. id, 't:' .. id)
end
if mode == 'settle' and model ~= '' then
  local learned = redis.call('HGET', KEYS[2], model)
  if not learned or actual > tonumber(learned) then
    redis.call('HSET', KEYS[2], model, int(actual))
    redis.call('PEXPIRE', KEYS[2], ARGV[5])
  end
end
return 1
"""
)

#: KEYS: P, and for a shared session's scope its close mark (set: only read).
#: ARGV: window_ms, lease_ms, keep ms (the expiry of a purge's new key, with no window).
#: Returns {w, window_start_ms, calls, spent nano, reserved nano, holds in flight}.
PEEK = (
    _PRELUDE
    + r"""
local window_ms, lease_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local keep = tonumber(ARGV[3] or '0')
local now = now_ms()
local w, start, expire_at = window(window_ms, lease_ms, now)
local base = KEYS[1] .. ':' .. w
if not (KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1) then
  purge(base, now, expire_at, keep)  -- (a closed session's keys are only read)
end
local v = redis.call('HMGET', base, 'calls', 'spent', 'reserved')
return {w, start, tonumber(v[1] or '0'), tonumber(v[2] or '0'), tonumber(v[3] or '0'),
        redis.call('ZCOUNT', base .. ':live', '-inf', '(+inf')}
"""
)

#: KEYS: P:<w> (the probe's window). ARGV: hold id, alive ms.
#: The process running a model's probe says it is alive (every few seconds while its
#: call runs): the probe counts as alive for alive ms more. Only a hold still in
#: flight is renewed, and no key is created. Returns 1 when renewed, else 0 (settled,
#: expired, or its keys gone: stop renewing it).
BEAT = (
    _PRELUDE
    + r"""
local base, id = KEYS[1], ARGV[1]
if not redis.call('ZSCORE', base .. ':live', id) then return 0 end
if redis.call('HEXISTS', base, 'a:' .. id) == 0 then return 0 end
redis.call('HSET', base, 'b:' .. id, int(now_ms() + tonumber(ARGV[2])))
return 1
"""
)
