"""The Lua scripts that do every step of a Redis checkpoint, each one atomic and one round trip
(see ``crawler.frontier.redis`` for what they promise, ``crawler.frontier.redis_keys`` for the keys)."""

from __future__ import annotations

import redis
from redis.commands.core import Script

from .redis_keys import ENTRY_DIGITS, RECORD_SIZE

# Errors a script raises on purpose start with this word; the rest of the line is the message.
SCRIPT_ERROR = "CRAWLER"

_COMMON = f"""
local function fail(message) error({{err = '{SCRIPT_ERROR} ' .. message}}) end
local function expect(key, kind)
  local found = redis.call('TYPE', key).ok
  if found ~= 'none' and found ~= kind then fail(key .. ' holds a ' .. found .. ', not a ' .. kind) end
end
local function decrement(key, field, by)
  if redis.call('HINCRBY', key, field, -by) <= 0 then redis.call('HDEL', key, field) end
end
"""

# What every frontier script starts with. KEYS: the spider's fixed keys (in SPIDER_KEY_NAMES
# order), the crawl's owners, then the script's own. ARGV: owner, lease time (us), then its own.
_FRONTIER = _COMMON + f"""
local COUNTS, SEQ, ENTRIES, LEASES, EXPIRY, DELAYED, READY = 1, 2, 3, 4, 5, 6, 7
local FAILED, FAILED_KINDS, FAILED_STATUSES, ITEMS, REJECTED, STATE, OWNERS, HOSTS = 8, 9, 10, 11, 12, 13, 14, 15
local KINDS = {{'hash', 'hash', 'hash', 'hash', 'zset', 'zset', 'hash', 'zset', 'hash', 'hash',
  'stream', 'stream', 'hash', 'hash', 'hash'}}
-- the fields of an entry's record
local FP, HOST, PRIORITY, DEPTH, ATTEMPTS, DATA, ERROR, KIND, STATUS = 1, 2, 3, 4, 5, 6, 7, 8, 9
local RECORD = {RECORD_SIZE}
for index, kind in ipairs(KINDS) do expect(KEYS[index], kind) end

local owner, lease_time = ARGV[1], tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
-- Host queues found while running share the prefix, and so the hash tag, of the given keys.
local prefix = string.sub(KEYS[COUNTS], 1, #KEYS[COUNTS] - #'counts')
local function queue_of(host)
  local key = prefix .. 'q:' .. host
  expect(key, 'zset')
  return key
end

local delta = {{}}
local function count(name, by) delta[name] = (delta[name] or 0) + by end
-- The last write of a script that changes anything: its counts, and that its owner is alive.
local function finish()
  for name, by in pairs(delta) do
    if by ~= 0 then redis.call('HINCRBY', KEYS[COUNTS], name, by) end
  end
  redis.call('HSET', KEYS[OWNERS], owner, now + lease_time)
end

local function member_of(id) return string.format('%0{ENTRY_DIGITS}d', id) end
local function read_entry(member)
  local packed = redis.call('HGET', KEYS[ENTRIES], member)
  if not packed then fail(KEYS[ENTRIES] .. ' has no entry ' .. member) end
  local ok, entry = pcall(cmsgpack.unpack, packed)
  if not ok or type(entry) ~= 'table' or #entry < STATUS then fail('entry ' .. member .. ' of ' .. KEYS[ENTRIES] .. ' is damaged') end
  return entry
end
local function holds(member, token) return redis.call('HGET', KEYS[LEASES], member) == token .. ':' .. owner end
local function make_ready(queue, entry, member)
  if redis.call('ZADD', queue, -entry[PRIORITY], member) == 1 then redis.call('HINCRBY', KEYS[READY], entry[HOST], 1) end
end
-- A lease that ends gives its host's slot back, for the whole crawl.
local function unlease(member, entry)
  redis.call('HDEL', KEYS[LEASES], member)
  redis.call('ZREM', KEYS[EXPIRY], member)
  decrement(KEYS[HOSTS], 'busy:' .. entry[HOST], 1)
end

-- Retries whose time has come go to their host's queue: read first, moved by promote().
local function due_retries()
  local due = {{}}
  for index, member in ipairs(redis.call('ZRANGEBYSCORE', KEYS[DELAYED], '-inf', now)) do
    local entry = read_entry(member)
    due[index] = {{member, entry, queue_of(entry[HOST])}}
  end
  return due
end
local function promote(due)
  for _, retry in ipairs(due) do make_ready(retry[3], retry[2], retry[1]) end
  if #due > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[DELAYED], '-inf', now) end
end

-- The seen-set: each bucket a string of RECORD-byte records, read (and checked) once per script.
local buckets = {{}}
local function bucket(index)
  local found = buckets[index]
  if not found then
    expect(KEYS[index], 'string')
    local records = redis.call('GET', KEYS[index]) or ''
    if #records % RECORD ~= 0 then fail(KEYS[index] .. ' is damaged: not a whole number of records') end
    found = {{records = records, grown = false}}
    buckets[index] = found
  end
  return found
end
local function contains(records, record)
  local from = 1
  while true do
    local at = string.find(records, record, from, true)
    if not at then return false end
    if (at - 1) % RECORD == 0 then return true end
    from = at + 1
  end
end
-- An entry of 8 ARGV fields from ``cursor`` (bucket key index, record, queue key index, host,
-- priority, depth, fingerprint, data): noted in ``new`` unless seen; returns the next cursor.
local function plan_entry(cursor, new)
  local seen, record = bucket(tonumber(ARGV[cursor])), ARGV[cursor + 1]
  if #record ~= RECORD then fail('a seen record has ' .. RECORD .. ' bytes, not ' .. #record) end
  if not contains(seen.records, record) then
    seen.records = seen.records .. record
    seen.grown = true
    local queue = KEYS[tonumber(ARGV[cursor + 2])]
    expect(queue, 'zset')
    new[#new + 1] = {{queue, {{ARGV[cursor + 6], ARGV[cursor + 3], tonumber(ARGV[cursor + 4]),
      tonumber(ARGV[cursor + 5]), 0, ARGV[cursor + 7], false, false, false}}}}
  end
  return cursor + 8
end
local function queue_new(new)
  if #new == 0 then return end
  local last = redis.call('HINCRBY', KEYS[SEQ], 'entry', #new)
  for index, planned in ipairs(new) do
    local member = member_of(last - #new + index)
    redis.call('HSET', KEYS[ENTRIES], member, cmsgpack.pack(planned[2]))
    make_ready(planned[1], planned[2], member)
  end
  for index, seen in pairs(buckets) do
    if seen.grown then redis.call('SET', KEYS[index], seen.records) end
  end
  count('queued', #new)
end
"""

_OPEN = _COMMON + """
-- KEYS: schema, meta, spiders, owners. ARGV: schema version, owner, lease time (us).
local KINDS = {'string', 'hash', 'hash', 'hash'}
for index, kind in ipairs(KINDS) do expect(KEYS[index], kind) end
local version = redis.call('GET', KEYS[1])
if not version then
  if redis.call('EXISTS', KEYS[2], KEYS[3], KEYS[4]) > 0 then
    fail('not a crawler checkpoint: its keys have no schema version; use --fresh to start over')
  end
  redis.call('SET', KEYS[1], ARGV[1])
elseif version ~= ARGV[1] then
  if tonumber(version) and tonumber(version) > tonumber(ARGV[1]) then
    fail('checkpoint schema ' .. version .. ' is newer than this crawler\\'s (' .. ARGV[1] .. '); upgrade crawler')
  end
  fail('unknown checkpoint schema ' .. version .. '; use --fresh to start over')
end
local clock = redis.call('TIME')
redis.call('HSET', KEYS[4], ARGV[2], tonumber(clock[1]) * 1000000 + tonumber(clock[2]) + tonumber(ARGV[3]))
"""

_SPIDER_NUMBER = _COMMON + """
-- KEYS: spiders. ARGV: spider name. Its number, given out now if it has none.
expect(KEYS[1], 'hash')
local number = redis.call('HGET', KEYS[1], ARGV[1])
if number then return tonumber(number) end
number = redis.call('HLEN', KEYS[1]) + 1
redis.call('HSET', KEYS[1], ARGV[1], number)
return number
"""

_RESET = _COMMON + """
-- KEYS: the spider's fixed keys, then every seen bucket, then the crawl's hosts. ARGV: 1 to
-- delete its id sequences too. Its host queues are those its ``ready`` hash names; the hosts
-- get back the slots its leases held.
local SEQ, ENTRIES, LEASES, READY = 2, 3, 4, 7
local HOSTS = #KEYS
local prefix = string.sub(KEYS[1], 1, #KEYS[1] - #'counts')
if redis.call('TYPE', KEYS[LEASES]).ok == 'hash' and redis.call('TYPE', KEYS[HOSTS]).ok == 'hash' then
  for _, member in ipairs(redis.call('HKEYS', KEYS[LEASES])) do
    local ok, entry = pcall(cmsgpack.unpack, redis.call('HGET', KEYS[ENTRIES], member) or '')
    if ok and type(entry) == 'table' and entry[2] then decrement(KEYS[HOSTS], 'busy:' .. entry[2], 1) end
  end
end
local doomed = {}
if redis.call('TYPE', KEYS[READY]).ok == 'hash' then
  for _, host in ipairs(redis.call('HKEYS', KEYS[READY])) do doomed[#doomed + 1] = prefix .. 'q:' .. host end
end
for index, key in ipairs(KEYS) do
  if index ~= HOSTS and (index ~= SEQ or ARGV[1] == '1') then doomed[#doomed + 1] = key end
end
for first = 1, #doomed, 1000 do
  redis.call('UNLINK', unpack(doomed, first, math.min(first + 999, #doomed)))
end
"""

_RESUME = _FRONTIER + """
-- Take back at once the leases whose owner is known to be gone: this owner's own (a process
-- restarted under the same name), those of owners that closed their store, and the expired.
local alive = {}
local owners = redis.call('HGETALL', KEYS[OWNERS])
for index = 1, #owners, 2 do alive[owners[index]] = tonumber(owners[index + 1]) end
local leases, back = redis.call('HGETALL', KEYS[LEASES]), {}
for index = 1, #leases, 2 do
  local member, holder = leases[index], string.match(leases[index + 1], '^%d+:(.*)$')
  local deadline = tonumber(redis.call('ZSCORE', KEYS[EXPIRY], member))
  if not holder or not deadline then fail('lease of entry ' .. member .. ' in ' .. KEYS[LEASES] .. ' is damaged') end
  if holder == owner or not alive[holder] or deadline < now then
    local entry = read_entry(member)
    back[#back + 1] = {member, entry, queue_of(entry[HOST])}
  end
end
for _, lease in ipairs(back) do
  unlease(lease[1], lease[2])
  make_ready(lease[3], lease[2], lease[1])
end
-- Owners whose time is up left no live lease behind: forget them.
for name, until_time in pairs(alive) do
  if until_time < now and name ~= owner then redis.call('HDEL', KEYS[OWNERS], name) end
end
count('in_flight', -#back)
count('queued', #back)
finish()
local counts = redis.call('HGETALL', KEYS[COUNTS])
table.insert(counts, 1, #back)
return counts
"""

_ADD = _FRONTIER + """
-- ARGV from 3: entries of 8 fields (see plan_entry). Returns how many were new.
local new, cursor = {}, 3
while cursor <= #ARGV do cursor = plan_entry(cursor, new) end
queue_new(new)
finish()
return #new
"""

_READY = _FRONTIER + """
-- Returns host, count pairs of the hosts with ready entries, due retries included.
promote(due_retries())
finish()
return redis.call('HGETALL', KEYS[READY])
"""

_LEASE = _FRONTIER + """
-- ARGV 3, 4, 5: requests in flight to a host at most, the delay between two of its starts (us),
-- and how far ahead (us) a start may be leased; then host, how many pairs. KEYS from 16: each
-- host's queue, in the same order. A host gets what its limits for the whole crawl allow: none
-- while paused, no more than the concurrency with the leases out everywhere, and with a delay,
-- starts spaced by it (by its Crawl-delay if longer), each lease told how long to wait.
-- Returns the token, then member, fingerprint, data, depth, host, attempts, wait (us) of each.
local concurrency, delay, horizon = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local due = due_retries()
local picks = {}
for index = 0, (#ARGV - 5) / 2 - 1 do
  local queue, host, want = KEYS[16 + index], ARGV[6 + 2 * index], tonumber(ARGV[7 + 2 * index])
  expect(queue, 'zset')
  local busy = tonumber(redis.call('HGET', KEYS[HOSTS], 'busy:' .. host) or '0')
  local gap = math.max(delay, tonumber(redis.call('HGET', KEYS[HOSTS], 'floor:' .. host) or '0'))
  local start = math.max(now, tonumber(redis.call('HGET', KEYS[HOSTS], 'next:' .. host) or '0'))
  want = math.min(want, concurrency - busy)
  if tonumber(redis.call('HGET', KEYS[HOSTS], 'paused:' .. host) or '0') > now then want = 0 end
  if gap > 0 then want = math.min(want, math.floor((now + horizon - start) / gap) + 1) end
  picks[#picks + 1] = {queue = queue, host = host, want = math.max(want, 0), gap = gap, start = start}
end
promote(due)
-- What each host hands out is read (and checked) before anything is leased.
for _, pick in ipairs(picks) do
  pick.members = pick.want > 0 and redis.call('ZRANGE', pick.queue, 0, pick.want - 1) or {}
  pick.entries = {}
  for index, member in ipairs(pick.members) do pick.entries[index] = read_entry(member) end
end
local token = string.format('%d', redis.call('HINCRBY', KEYS[SEQ], 'token', 1))
local deadline, out = now + lease_time, {token}
for _, pick in ipairs(picks) do
  for index, member in ipairs(pick.members) do
    local entry = pick.entries[index]
    redis.call('HSET', KEYS[LEASES], member, token .. ':' .. owner)
    redis.call('ZADD', KEYS[EXPIRY], deadline, member)
    local wait = pick.start + (index - 1) * pick.gap - now
    for _, value in ipairs({member, entry[FP], entry[DATA], entry[DEPTH], pick.host, entry[ATTEMPTS], wait}) do
      out[#out + 1] = value
    end
  end
  if #pick.members > 0 then
    redis.call('ZREMRANGEBYRANK', pick.queue, 0, #pick.members - 1)
    decrement(KEYS[READY], pick.host, #pick.members)
    redis.call('HINCRBY', KEYS[HOSTS], 'busy:' .. pick.host, #pick.members)
    if pick.gap > 0 then
      redis.call('HSET', KEYS[HOSTS], 'next:' .. pick.host, pick.start + #pick.members * pick.gap)
    end
    count('queued', -#pick.members)
    count('in_flight', #pick.members)
  end
end
finish()
return out
"""

_HOST_NEWS = _COMMON + """
-- KEYS: the crawl's hosts. ARGV: host, seconds to pause it (us, '' for none), its Crawl-delay
-- (us, '' for none). A pause only ever lengthens: another process may have paused it longer.
expect(KEYS[1], 'hash')
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
if ARGV[2] ~= '' then
  local until_time = now + tonumber(ARGV[2])
  if until_time > tonumber(redis.call('HGET', KEYS[1], 'paused:' .. ARGV[1]) or '0') then
    redis.call('HSET', KEYS[1], 'paused:' .. ARGV[1], until_time)
  end
end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'floor:' .. ARGV[1], ARGV[3]) end
"""

_RENEW = _FRONTIER + """
-- ARGV from 3: member, token pairs. Returns how many are still this owner's.
local held = {}
for index = 3, #ARGV, 2 do
  if holds(ARGV[index], ARGV[index + 1]) then held[#held + 1] = ARGV[index] end
end
for _, member in ipairs(held) do redis.call('ZADD', KEYS[EXPIRY], 'XX', now + lease_time, member) end
finish()
return #held
"""

_RECLAIM = _FRONTIER + """
-- Requeue every lease whose deadline passed, whoever held it. Returns how many.
local expired = redis.call('ZRANGEBYSCORE', KEYS[EXPIRY], '-inf', '(' .. now)
local entries, queues = {}, {}
for index, member in ipairs(expired) do
  entries[index] = read_entry(member)
  queues[index] = queue_of(entries[index][HOST])
end
for index, member in ipairs(expired) do
  unlease(member, entries[index])
  make_ready(queues[index], entries[index], member)
end
count('in_flight', -#expired)
count('queued', #expired)
finish()
return #expired
"""

_RELEASE = _FRONTIER + """
-- ARGV from 3: member, token, queue key index triples. Returns how many were refused as stale.
local back, stale = {}, 0
for index = 3, #ARGV, 3 do
  local member = ARGV[index]
  if not back[member] and holds(member, ARGV[index + 1]) then
    local queue = KEYS[tonumber(ARGV[index + 2])]
    expect(queue, 'zset')
    back[member] = true
    back[#back + 1] = {member, read_entry(member), queue}
  else
    stale = stale + 1
  end
end
for _, lease in ipairs(back) do
  unlease(lease[1], lease[2])
  make_ready(lease[3], lease[2], lease[1])
end
count('in_flight', -#back)
count('queued', #back)
finish()
return stale
"""

_COMPLETE = _FRONTIER + """
-- ARGV from 3: the number of completions, then each: member, token, outcome and its fields:
--   done:    items (a count, then each), rejected (a count, then url, error, data of each),
--            children (a count, then 8 fields each, see plan_entry)
--   failed:  attempts, error, error kind ('' for none), status ('' for none)
--   retry:   attempts, delay (us), queue key index
--   refused: nothing
-- Returns how many were recorded, and how many refused as stale (their lease is not held).
local recorded, taken, new, stale, cursor = {}, {}, {}, 0, 4
for _ = 1, tonumber(ARGV[3]) do
  local outcome = {member = ARGV[cursor], kind = ARGV[cursor + 2]}
  local held = not taken[outcome.member] and holds(outcome.member, ARGV[cursor + 1])
  cursor = cursor + 3
  if outcome.kind == 'done' then
    outcome.items, cursor = cursor + 1, cursor + 1 + tonumber(ARGV[cursor])
    outcome.item_count = cursor - outcome.items
    outcome.rejected, cursor = cursor + 1, cursor + 1 + 3 * tonumber(ARGV[cursor])
    outcome.rejected_count = (cursor - outcome.rejected) / 3
    local children = tonumber(ARGV[cursor])
    cursor = cursor + 1
    if held then
      for _ = 1, children do cursor = plan_entry(cursor, new) end
    else
      cursor = cursor + 8 * children
    end
  elseif outcome.kind == 'failed' then
    outcome.attempts, outcome.error = tonumber(ARGV[cursor]), ARGV[cursor + 1]
    outcome.error_kind = ARGV[cursor + 2] ~= '' and ARGV[cursor + 2] or false
    outcome.status = ARGV[cursor + 3] ~= '' and tonumber(ARGV[cursor + 3]) or false
    cursor = cursor + 4
  elseif outcome.kind == 'retry' then
    outcome.attempts, outcome.delay = tonumber(ARGV[cursor]), tonumber(ARGV[cursor + 1])
    outcome.queue = KEYS[tonumber(ARGV[cursor + 2])]
    cursor = cursor + 3
  elseif outcome.kind ~= 'refused' then
    fail('unknown outcome ' .. outcome.kind)
  end
  if held then
    taken[outcome.member] = true
    outcome.entry = read_entry(outcome.member)
    if outcome.queue then expect(outcome.queue, 'zset') end
    recorded[#recorded + 1] = outcome
  else
    stale = stale + 1
  end
end

for _, outcome in ipairs(recorded) do
  local member, entry = outcome.member, outcome.entry
  unlease(member, entry)
  count('in_flight', -1)
  if outcome.kind == 'done' then
    redis.call('HDEL', KEYS[ENTRIES], member)
    count('done', 1)
    if outcome.item_count > 0 then
      local last = redis.call('HINCRBY', KEYS[SEQ], 'item', outcome.item_count)
      for index = 0, outcome.item_count - 1 do
        local id = string.format('%d-0', last - outcome.item_count + 1 + index)
        redis.call('XADD', KEYS[ITEMS], id, 'data', ARGV[outcome.items + index])
      end
      count('items', outcome.item_count)
    end
    if outcome.rejected_count > 0 then
      local last = redis.call('HINCRBY', KEYS[SEQ], 'rejected', outcome.rejected_count)
      for index = 0, outcome.rejected_count - 1 do
        local at = outcome.rejected + 3 * index
        redis.call('XADD', KEYS[REJECTED], string.format('%d-0', last - outcome.rejected_count + 1 + index),
          'url', ARGV[at], 'error', ARGV[at + 1], 'data', ARGV[at + 2])
      end
      count('rejected', outcome.rejected_count)
    end
  elseif outcome.kind == 'failed' then
    -- The record stays, with the request, so that retry_failed can queue it again.
    entry[ATTEMPTS] = entry[ATTEMPTS] + outcome.attempts
    entry[ERROR], entry[KIND], entry[STATUS] = outcome.error, outcome.error_kind, outcome.status
    redis.call('HSET', KEYS[ENTRIES], member, cmsgpack.pack(entry))
    redis.call('ZADD', KEYS[FAILED], tonumber(member), member)
    redis.call('HINCRBY', KEYS[FAILED_KINDS], outcome.error_kind or 'unknown', 1)
    if outcome.status then redis.call('HINCRBY', KEYS[FAILED_STATUSES], outcome.status, 1) end
    count('failed', 1)
  elseif outcome.kind == 'retry' then
    entry[ATTEMPTS] = entry[ATTEMPTS] + outcome.attempts
    redis.call('HSET', KEYS[ENTRIES], member, cmsgpack.pack(entry))
    if outcome.delay > 0 then
      redis.call('ZADD', KEYS[DELAYED], now + outcome.delay, member)
    else
      make_ready(outcome.queue, entry, member)
    end
    count('queued', 1)
  else
    redis.call('HDEL', KEYS[ENTRIES], member)
    count('refused', 1)
  end
end
queue_new(new)
redis.call('HSET', KEYS[STATE], 'last_activity', clock[1] .. '.' .. string.format('%06d', clock[2]))
finish()
return {#recorded, stale}
"""

_RETRY_FAILED = _FRONTIER + """
-- ARGV from 3: a count of statuses, the statuses, a count of kinds, the kinds (none of either:
-- every failed request). Queues the chosen again as new entries, with no attempts spent.
local statuses, kinds, cursor = {}, {}, 3
for _ = 1, tonumber(ARGV[cursor]) do cursor = cursor + 1; statuses[tonumber(ARGV[cursor])] = true end
cursor = cursor + 1
local any = tonumber(ARGV[cursor]) == 0 and next(statuses) == nil
for _ = 1, tonumber(ARGV[cursor]) do cursor = cursor + 1; kinds[ARGV[cursor]] = true end
local chosen = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[FAILED], 0, -1)) do
  local entry = read_entry(member)
  if any or (entry[STATUS] and statuses[entry[STATUS]]) or (entry[KIND] and kinds[entry[KIND]]) then
    chosen[#chosen + 1] = {member, entry, queue_of(entry[HOST])}
  end
end
if #chosen > 0 then
  local last = redis.call('HINCRBY', KEYS[SEQ], 'entry', #chosen)
  for index, failed in ipairs(chosen) do
    local old, entry = failed[1], failed[2]
    decrement(KEYS[FAILED_KINDS], entry[KIND] or 'unknown', 1)
    if entry[STATUS] then decrement(KEYS[FAILED_STATUSES], entry[STATUS], 1) end
    entry[ATTEMPTS], entry[ERROR], entry[KIND], entry[STATUS] = 0, false, false, false
    local member = member_of(last - #chosen + index)
    redis.call('HDEL', KEYS[ENTRIES], old)
    redis.call('ZREM', KEYS[FAILED], old)
    redis.call('HSET', KEYS[ENTRIES], member, cmsgpack.pack(entry))
    make_ready(failed[3], entry, member)
  end
end
count('failed', -#chosen)
count('queued', #chosen)
finish()
return #chosen
"""

_FAILED = _FRONTIER + """
-- ARGV 3: how many. Returns data, attempts, error, error kind of the first failed requests.
local out = {}
for _, member in ipairs(redis.call('ZRANGE', KEYS[FAILED], 0, tonumber(ARGV[3]) - 1)) do
  local entry = read_entry(member)
  for _, value in ipairs({entry[DATA], entry[ATTEMPTS], entry[ERROR] or '', entry[KIND] or ''}) do out[#out + 1] = value end
end
return out
"""


class Scripts:
    """The scripts, registered on one client (run by EVALSHA, loaded again if the server lost them)."""

    def __init__(self, client: redis.Redis) -> None:
        def script(source: str, *, writes: bool = True) -> Script:
            return client.register_script(("#!lua\n" if writes else "#!lua flags=no-writes\n") + source)

        self.open = script(_OPEN)
        self.spider_number = script(_SPIDER_NUMBER)
        self.reset = script(_RESET)
        self.resume = script(_RESUME)
        self.add = script(_ADD)
        self.ready = script(_READY)
        self.lease = script(_LEASE)
        self.renew = script(_RENEW)
        self.reclaim = script(_RECLAIM)
        self.release = script(_RELEASE)
        self.complete = script(_COMPLETE)
        self.retry_failed = script(_RETRY_FAILED)
        self.failed = script(_FAILED, writes=False)
        self.host_news = script(_HOST_NEWS)


