"""The shared checkpoint: one crawl's frontiers in Redis (or Valkey), for many processes at once.

Every process of a crawl, on any machine, opens the same crawl on the same server as an owner
of its own: they lease from one queue and dedupe against one seen-set. Nothing here is an
exclusive lock, so ``open`` never raises CheckpointInUse.

Every step that touches more than one key is one Lua script (one round trip, EVALSHA), so it is
atomic: add with dedupe, lease, complete a batch, release, renew, reclaim, requeue failed
requests, reset a spider (``discard`` runs that for each spider, then deletes the crawl's own
keys, last, so that a discard cut short can be run again). Redis does not roll a script back when it fails half-way, so each script reads
and checks everything it will change first (key types, records, lease tokens) and writes after.
Counts are a hash that only scripts change, in the same step as what they count: they cannot
drift from the structures.

Time is the server's (``TIME`` inside the scripts): lease deadlines, retry times, last activity
and the owners' liveness, so the clocks of the crawl's machines never have to agree. The one
time given by a client, ``Completion.retry_at``, is turned into a delay from the client's own
clock, and that delay is added to the server's: a client whose clock is off by a minute still
waits the delay it meant.

Key layout
----------
All keys of a crawl carry the hash tag ``{<crawl>}``, so Redis Cluster keeps them in one slot,
where every script can reach them. ``N`` is a spider's number, given out in ``spiders``; entry ids
are written with 12 digits (``000000000042``), so that they sort as numbers do::

    {crawl}:schema             string  this layout's version (SCHEMA_VERSION)
    {crawl}:meta               hash    spider_set -> the spiders the checkpoint is for (JSON)
    {crawl}:spiders            hash    spider name -> N
    {crawl}:owners             hash    owner -> server time (us) it counts as alive until; gone on close
    {crawl}:hosts              hash    each host's politeness, for every process of the crawl:
                                       busy:<host> -> leases out (all spiders), next:<host> -> the
                                       server time (us) its next request may start, paused:<host>
                                       -> paused until (a Retry-After), floor:<host> -> its
                                       robots.txt Crawl-delay (us)
    {crawl}:N:counts           hash    queued, in_flight, done, failed, items, rejected, refused
    {crawl}:N:seq              hash    entry, token, item, rejected -> the last id given out (kept on reset)
    {crawl}:N:entries          hash    entry id -> msgpack [fingerprint, host, priority, depth,
                                       attempts, data, error, error_kind, status]: queued, leased, failed
    {crawl}:N:q:<host>         zset    the host's ready entries: score -priority, member the entry id,
                                       so the highest priority comes first, then the oldest
    {crawl}:N:ready            hash    host -> entries in its queue (a host with none is absent)
    {crawl}:N:delayed          zset    entries waiting for a retry time: score the time (us) they are due
    {crawl}:N:leases           hash    leased entry id -> "<token>:<owner>"
    {crawl}:N:expiry           zset    leased entry ids by deadline (us): reclaiming reads only the expired
    {crawl}:N:failed           zset    failed entry ids (score: the id); their records stay in entries
    {crawl}:N:failed_kinds     hash    error kind -> requests failed with it now
    {crawl}:N:failed_statuses  hash    HTTP status -> requests failed with it now
    {crawl}:N:items            stream  committed items, id "<item id>-0", field data
    {crawl}:N:rejected         stream  rejected items, id "<n>-0", fields url, error, data
    {crawl}:N:state            hash    the spider's get_state/set_state keys, and last_activity
    {crawl}:N:seen:<hhhh>      string  the seen-set, in 65,536 buckets (below)

Nothing ever lists keys (no KEYS, no SCAN): a crawl's keys are the fixed ones above, the host
queues named in ``ready``, and the 65,536 bucket names, which ``reset`` and ``discard`` pass to
their scripts whole. Scripts are given their keys in KEYS, except those they find as they run: the
host queue of an entry that a script requeues (an expired lease, a due retry, a failed request
queued again). Those are made inside the script from the spider's own ``counts`` key, which the
script was given, and so carry the crawl's hash tag: they are in the slot the script runs in,
which is what Redis Cluster checks (7.0 and later check the slot of every key a script touches).

The seen-set
------------
Exact and compact: a fingerprint's first 2 bytes (4 hex digits) name its bucket, and the other
14 are appended to the bucket, a string of 14-byte records, when it is first seen; a lookup is a
search of that string for a record-aligned match. At 1,000,000 URLs a bucket holds about 15
records (214 bytes), and the seen-set costs 22 bytes per URL of server memory all told
(``used_memory``; 20 by ``MEMORY USAGE``, which leaves out the server's table slots; measured by
``bench/redis_memory.py`` on Redis 7.0 with jemalloc): 14 of them the records themselves, the rest
each bucket's key, object and allocator rounding, which thin out as the crawl grows. That is for
a crawl name of up to 15 characters, whose bucket keys fit 32-byte allocations; a longer name costs
about 1 byte per URL more. A small crawl pays for its buckets: at 20,000 URLs most buckets hold
one record, about 90 bytes per URL. Strings need no server setting (a hash would stay compact
only under ``hash-max-listpack-*``, and its field-and-value overhead makes 26 bytes per URL of a
whole fingerprint). Inserting copies the bucket: about 2 KB at 10,000,000 URLs.

Server settings relied on: ``maxmemory-policy noeviction`` (the default), since an evicted key is
a lost piece of the crawl, and persistence (RDB or AOF) as durable as the crawl must be. Redis
7.0 or later (scripts with ``#!lua`` flags, exclusive ``XRANGE`` starts) or Valkey.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.commands.core import Script
from redis.retry import Retry

from ..exceptions import CheckpointError, CheckpointWriteFailed
from ..items import RejectedItem
from .base import (
    RUN_STATS,
    SEEDED,
    CheckpointStatus,
    Committed,
    Completion,
    Entry,
    FailedRequest,
    FrontierCounts,
    Lease,
    Limits,
    ResumeInfo,
    SpiderStatus,
    StoredItem,
    crawl_is_finished,
)

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from ..processing import HostControl

SCHEMA_VERSION = 1
FINGERPRINT_SIZE = 16
#: Bytes of a fingerprint that name its seen bucket; the rest is its record in the bucket.
BUCKET_PREFIX_SIZE = 2
RECORD_SIZE = FINGERPRINT_SIZE - BUCKET_PREFIX_SIZE
BUCKETS = 256**BUCKET_PREFIX_SIZE
# A dead server or network must fail the crawl's step, not hang it; scripts are short.
_CONNECT_TIMEOUT = 10.0
_REPLY_TIMEOUT = 60.0
# Waiting for an unreachable server: the first retry after this many seconds, doubling up to the most.
_FIRST_RETRY = 0.1
_MOST_RETRY_WAIT = 5.0
# Entry ids are written with this many digits, so that ids sort by their text as by their number.
_ENTRY_DIGITS = 12


class CheckpointUnavailable(CheckpointError):
    """The checkpoint's server cannot be reached (refused, down, timed out): nothing of the step
    that failed was written, or all of it; the leases in flight come back in a lease time."""


# -- key names ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CrawlKeys:
    """The names of one crawl's keys (see the layout in this module's docstring)."""

    crawl: str

    def __post_init__(self) -> None:
        if not self.crawl or "{" in self.crawl or "}" in self.crawl:
            raise ValueError(f"a crawl name must be non-empty and without braces (it is the hash tag): {self.crawl!r}")

    @property
    def tag(self) -> str:
        return "{" + self.crawl + "}"

    @property
    def schema(self) -> str:
        return f"{self.tag}:schema"

    @property
    def meta(self) -> str:
        return f"{self.tag}:meta"

    @property
    def spiders(self) -> str:
        return f"{self.tag}:spiders"

    @property
    def owners(self) -> str:
        return f"{self.tag}:owners"

    @property
    def hosts(self) -> str:
        return f"{self.tag}:hosts"

    # Shared by the crawl's processes beside the checkpoint (see crawler.frontier.redis_shared).
    def login(self, spider: str) -> str:
        return f"{self.tag}:login:{spider}"

    def login_lock(self, spider: str) -> str:
        return f"{self.login(spider)}:lock"

    @property
    def robots(self) -> str:
        return f"{self.tag}:robots"

    def robots_lock(self, url: str) -> str:
        return f"{self.robots}:lock:{hashlib.sha256(url.encode()).hexdigest()[:32]}"

    @property
    def fixed(self) -> tuple[str, ...]:
        return self.schema, self.meta, self.spiders, self.owners

    def spider(self, number: int) -> SpiderKeys:
        return SpiderKeys(f"{self.tag}:{number}:")


# The order of a spider's fixed keys in every script's KEYS (the Lua constants below follow it).
_SPIDER_KEY_NAMES = (
    "counts", "seq", "entries", "leases", "expiry", "delayed", "ready",
    "failed", "failed_kinds", "failed_statuses", "items", "rejected", "state",
)


@dataclass(frozen=True, slots=True)
class SpiderKeys:
    """The names of one spider's keys: ``prefix`` is ``{crawl}:N:``."""

    prefix: str

    @property
    def fixed(self) -> list[str]:
        return [self.prefix + name for name in _SPIDER_KEY_NAMES]

    @property
    def counts(self) -> str:
        return self.prefix + "counts"

    @property
    def leases(self) -> str:
        return self.prefix + "leases"

    @property
    def failed_kinds(self) -> str:
        return self.prefix + "failed_kinds"

    @property
    def failed_statuses(self) -> str:
        return self.prefix + "failed_statuses"

    @property
    def items(self) -> str:
        return self.prefix + "items"

    @property
    def rejected(self) -> str:
        return self.prefix + "rejected"

    @property
    def state(self) -> str:
        return self.prefix + "state"

    def queue(self, host: str) -> str:
        return f"{self.prefix}q:{host}"

    def bucket(self, fingerprint: bytes) -> tuple[str, bytes]:
        """The seen bucket of ``fingerprint``, and its record there."""
        if len(fingerprint) != FINGERPRINT_SIZE:
            # The buckets hold fixed-size records: another size would misalign every lookup.
            raise ValueError(f"a fingerprint has {FINGERPRINT_SIZE} bytes, not {len(fingerprint)}")
        return self.prefix + "seen:" + fingerprint[:BUCKET_PREFIX_SIZE].hex(), fingerprint[BUCKET_PREFIX_SIZE:]

    def buckets(self) -> list[bytes]:
        """Every bucket name the seen-set may use, whether it exists or not (as bytes: 65,536 of
        them go to the server in one command, and the client sends bytes as they are)."""
        prefix = f"{self.prefix}seen:".encode()
        return [prefix + b"%0*x" % (2 * BUCKET_PREFIX_SIZE, index) for index in range(BUCKETS)]


def _member(entry: int) -> str:
    return f"{entry:0{_ENTRY_DIGITS}d}"


# -- scripts --------------------------------------------------------------------------------------

# Errors a script raises on purpose start with this word; the rest of the line is the message.
_SCRIPT_ERROR = "CRAWLER"

_COMMON = f"""
local function fail(message) error({{err = '{_SCRIPT_ERROR} ' .. message}}) end
local function expect(key, kind)
  local found = redis.call('TYPE', key).ok
  if found ~= 'none' and found ~= kind then fail(key .. ' holds a ' .. found .. ', not a ' .. kind) end
end
local function decrement(key, field, by)
  if redis.call('HINCRBY', key, field, -by) <= 0 then redis.call('HDEL', key, field) end
end
"""

# What every frontier script starts with. KEYS: the spider's fixed keys (in _SPIDER_KEY_NAMES
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

local function member_of(id) return string.format('%0{_ENTRY_DIGITS}d', id) end
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


class _Scripts:
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


# -- errors ---------------------------------------------------------------------------------------

P = ParamSpec("P")
R = TypeVar("R")


def translate_redis_error(where: str, error: redis.RedisError) -> CheckpointError:
    """One line for what went wrong, as the checkpoint error it is."""
    message = str(error).split(" script: ", 1)[0]  # a script's error ends with its sha and line
    if isinstance(error, redis.AuthenticationError):
        return CheckpointError(f"{where}: the server refused the password ({message})")
    if isinstance(error, (redis.ConnectionError, redis.TimeoutError)):
        return CheckpointUnavailable(f"{where}: cannot reach the checkpoint server ({message})")
    if message.startswith(_SCRIPT_ERROR + " "):
        return CheckpointError(f"{where}: {message.removeprefix(_SCRIPT_ERROR + ' ')}")
    if message.startswith("WRONGTYPE"):
        return CheckpointError(f"{where}: a key holds a value of the wrong type: not a usable checkpoint; use --fresh to start over")
    # Out of memory, a read-only replica, a command the server's ACL forbids: the step was not
    # done, and what was committed before stays.
    return CheckpointWriteFailed(f"{where}: the server refused the step ({message})")


def _checkpoint_errors(method: Callable[P, R]) -> Callable[P, R]:
    """Turn the client's errors into CheckpointError (the first argument has ``where``), after
    waiting for an unreachable server as long as the first argument's ``patience`` says."""

    @functools.wraps(method)
    def translated(*args: P.args, **kwargs: P.kwargs) -> R:
        patience: _Patience | None = getattr(args[0], "patience", None)
        while True:
            try:
                result = method(*args, **kwargs)
            except redis.RedisError as error:
                failure = translate_redis_error(getattr(args[0], "where"), error)
                if patience is None or not isinstance(failure, CheckpointUnavailable) or not patience.wait(failure):
                    raise failure from None
            else:
                if patience is not None:
                    patience.answered()
                return result

    return translated


class _Patience:
    """How long a crawl's steps wait for a server that cannot be reached, trying again with
    backoff, before they fail: a restart or a network blip must not end a crawl. A step sent
    again is safe: the steps that write check their leases' tokens (a completion whose first
    sending was done comes back as stale) and dedupe what they add, and a lease whose answer was
    lost is reclaimed when its time runs out. Said once when the wait begins and once when it
    ends, not at every try."""

    def __init__(self, where: str, seconds: float) -> None:
        self.where = where
        self.seconds = seconds
        self._deadline: float | None = None
        self._delay = _FIRST_RETRY

    def wait(self, failure: CheckpointUnavailable) -> bool:
        """Whether to try again (after sleeping), or give up now."""
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + self.seconds
            logger.warning("%s; waiting up to %gs for it to answer again", failure, self.seconds)
        if now >= self._deadline:
            return False
        time.sleep(min(self._delay, self._deadline - now))
        self._delay = min(2 * self._delay, _MOST_RETRY_WAIT)
        return True

    def answered(self) -> None:
        if self._deadline is not None:
            logger.warning("%s answers again", self.where)
            self._deadline, self._delay = None, _FIRST_RETRY


# -- backend, store, frontier ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HostPoliteness:
    """The per-host limits every process of the crawl keeps together (``[politeness]``):
    requests in flight to one host at most, and seconds between two starts. ``horizon``: how
    far ahead a spaced start may be leased."""

    concurrency: int = 1 << 30
    delay: float = 0.0
    horizon: float = 10.0

    def script_args(self) -> list[int]:
        return [self.concurrency, round(self.delay * 1_000_000), round(self.horizon * 1_000_000)]


class RedisBackend:
    """A crawl named ``crawl`` on the Redis (or Valkey) server at ``url``.

    The password comes apart from the URL (the runner reads it from the environment), so that it
    is never written in a config file nor shown in a message: a URL with one is refused.
    """

    def __init__(
        self, url: str, crawl: str, password: str | None = None, *, wait_for_server: float = 0.0,
        politeness: HostPoliteness = HostPoliteness(),
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        self.location = _without_password(parts)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise CheckpointError(f"{self.location}: not a Redis URL (redis://, rediss:// or unix://)")
        if parts.password or "password" in urllib.parse.parse_qs(parts.query):
            raise CheckpointError(f"{self.location}: the URL holds a password; give it apart (from the environment), never in a URL")
        try:
            self.keys = CrawlKeys(crawl)
        except ValueError as error:
            raise CheckpointError(f"{self.location}: {error}") from None
        self.url = url
        self.where = f"{self.location} (crawl {crawl})"
        self._password = password
        #: How long a crawl's steps wait for the server when it cannot be reached (0: not at all).
        self.wait_for_server = wait_for_server
        self.politeness = politeness

    def connect(self) -> redis.Redis:
        """A client of its own. It never retries by itself: a step sent again after its answer
        was lost would be done twice (a lease handed out to no one); the caller decides."""
        return redis.Redis.from_url(
            self.url,
            password=self._password,
            socket_connect_timeout=_CONNECT_TIMEOUT,
            socket_timeout=_REPLY_TIMEOUT,
            retry=Retry(NoBackoff(), 0),
        )

    def open(self, owner: str, *, lease_time: float = 60.0) -> RedisStore:
        return RedisStore(self, owner, lease_time=lease_time)

    def discard(self) -> None:
        """Delete every key of the crawl, even one too damaged to open (a key of the wrong type)."""
        client = self.connect()
        try:
            scripts = _Scripts(client)
            spiders = client.hgetall(self.keys.spiders) if client.type(self.keys.spiders) == b"hash" else {}
            for name, number in spiders.items():
                if number.isdigit():
                    spider = self.keys.spider(int(number))
                    scripts.reset(keys=[*spider.fixed, *spider.buckets(), self.keys.hosts], args=[1])
                client.unlink(self.keys.login(name.decode()))
            # The registry goes last: a discard cut short finds the spiders again.
            client.unlink(self.keys.hosts, self.keys.robots, *self.keys.fixed)
        except redis.RedisError as error:
            raise translate_redis_error(self.where, error) from None
        finally:
            client.close()

    def status(self, limits: Mapping[str, Limits]) -> CheckpointStatus:
        """Read without writing anything (a crawl may be running): counts, owners, state."""
        client = self.connect()
        try:
            return self._read_status(client, limits)
        except redis.RedisError as error:
            raise translate_redis_error(self.where, error) from None
        finally:
            client.close()

    def _read_status(self, client: redis.Redis, limits: Mapping[str, Limits]) -> CheckpointStatus:
        keys = self.keys
        with client.pipeline(transaction=True) as pipe:
            for key in keys.fixed:
                pipe.type(key)
            pipe.get(keys.schema).hgetall(keys.spiders).hgetall(keys.owners).time()
            # Errors come back in place: a key of the wrong type is told as such just below.
            *kinds, version, spiders, owners, (seconds, microseconds) = pipe.execute(raise_on_error=False)
        for key, kind, expected in zip(keys.fixed, kinds, (b"string", b"hash", b"hash", b"hash"), strict=True):
            if kind not in (b"none", expected):
                raise CheckpointError(f"{self.where}: {key} holds a {kind.decode()}, not a {expected.decode()}; use --fresh to start over")
        if version is None:
            if kinds == [b"none"] * len(kinds):
                raise CheckpointError(f"{self.where}: no checkpoint yet; nothing has been crawled")
            raise CheckpointError(f"{self.where}: not a crawler checkpoint: its keys have no schema version; use --fresh to start over")
        if version != str(SCHEMA_VERSION).encode():
            raise CheckpointError(
                f"{self.where}: checkpoint schema {version.decode(errors='replace')}, not this crawler's "
                f"({SCHEMA_VERSION}); use a crawler of its version, or --fresh to start over"
            )
        now = seconds * 1_000_000 + microseconds
        running = sorted(name.decode() for name, until in owners.items() if int(until) > now)
        by_number = sorted((int(number), name.decode()) for name, number in spiders.items())
        return CheckpointStatus(
            self.location,
            ", ".join(running) or None,
            [
                self._spider_status(client, keys.spider(number), name, limits.get(name, Limits()))
                for number, name in by_number
            ],
        )

    def _spider_status(self, client: redis.Redis, keys: SpiderKeys, name: str, limits: Limits) -> SpiderStatus:
        with client.pipeline(transaction=True) as pipe:
            pipe.hgetall(keys.counts).hvals(keys.leases).hmget(keys.state, SEEDED, "last_activity", RUN_STATS)
            pipe.hgetall(keys.failed_kinds).hgetall(keys.failed_statuses)
            counts, leases, (seeded, last_activity, run_stats), kinds, statuses = pipe.execute()
        owners: dict[str, int] = {}
        for lease in leases:
            holder = lease.decode().partition(":")[2]
            owners[holder] = owners.get(holder, 0) + 1
        frontier_counts = _counts(self.where, counts)
        stats = json.loads(run_stats or "{}")
        return SpiderStatus(
            spider=name,
            counts=frontier_counts,
            finished=crawl_is_finished(seeded is not None, frontier_counts, limits),
            last_activity=float(last_activity) if last_activity else None,
            in_flight_owners=owners,
            hosts=stats.get("hosts", {}),
            reasons=stats.get("counts", {}),
            failed_kinds={kind.decode(): int(number) for kind, number in kinds.items()},
            failed_statuses={int(status): int(number) for status, number in statuses.items()},
        )


def _without_password(parts: urllib.parse.SplitResult) -> str:
    host = parts.hostname or ""
    netloc = (f"[{host}]" if ":" in host else host) + (f":{parts.port}" if parts.port else "")
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def _counts(where: str, counts: Mapping[bytes, bytes]) -> FrontierCounts:
    try:
        return FrontierCounts(**{field.name: int(counts.get(field.name.encode(), 0)) for field in fields(FrontierCounts)})
    except ValueError:
        raise CheckpointError(f"{where}: the counts are damaged (not a number); use --fresh to start over") from None


def _pairs(flat: Sequence[Any]) -> dict[bytes, Any]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


class RedisStore:
    """One owner's hold on a crawl in Redis: the Redis ``Store``. Other owners may hold it too."""

    def __init__(self, backend: RedisBackend, owner: str, *, lease_time: float = 60.0) -> None:
        self.location = backend.location
        self.where = backend.where
        self.owner = owner
        self.keys = backend.keys
        self.wait_for_server = backend.wait_for_server
        self.politeness = backend.politeness
        self.lease_us = round(lease_time * 1_000_000)
        self._backend = backend
        self._shared_client: redis.Redis | None = None
        self.client = backend.connect()
        try:
            self.scripts = _Scripts(self.client)
            self._open()
        except BaseException:
            self.client.close()
            raise

    @_checkpoint_errors
    def _open(self) -> None:
        self.scripts.open(keys=list(self.keys.fixed), args=[SCHEMA_VERSION, self.owner, self.lease_us])

    @_checkpoint_errors
    def claim_spider_set(self, spiders: list[str]) -> None:
        wanted = json.dumps(sorted(spiders))
        with self.client.pipeline(transaction=True) as pipe:
            claimed = pipe.hsetnx(self.keys.meta, "spider_set", wanted).hget(self.keys.meta, "spider_set").execute()[1]
        if claimed.decode() != wanted:
            raise CheckpointError(
                f"{self.where}: written for spiders {', '.join(json.loads(claimed))}, but the config runs "
                f"{', '.join(sorted(spiders))}; use --fresh to start over, or another crawl name"
            )

    @_checkpoint_errors
    def spider_keys(self, spider: str) -> SpiderKeys:
        """The keys of ``spider``, which is given a number now if it has none yet."""
        return self.keys.spider(int(self.scripts.spider_number(keys=[self.keys.spiders], args=[spider])))

    @_checkpoint_errors
    def reset(self, spider: str) -> None:
        keys = self.spider_keys(spider)
        self.scripts.reset(keys=[*keys.fixed, *keys.buckets(), self.keys.hosts], args=[0])

    def frontier(self, spider: str) -> RedisFrontier:
        return RedisFrontier(self, spider)

    def host_control(self, local: HostControl) -> HostControl:
        """What responses say about a host (a ``Retry-After``, a Crawl-delay), told to ``local``
        (this process's scheduler) and to every process of the crawl."""
        return _ClusterHosts(self, local)

    @_checkpoint_errors
    def tell_hosts(self, host: str, *, pause: float | None = None, crawl_delay: float | None = None) -> None:
        self.scripts.host_news(keys=[self.keys.hosts], args=[
            host, "" if pause is None else round(pause * 1_000_000), "" if crawl_delay is None else round(crawl_delay * 1_000_000),
        ])

    def shared_client(self) -> redis.Redis:
        """A client for the worker threads' calls (a login, a robots.txt), apart from the one
        the crawl's steps go through."""
        if self._shared_client is None:
            self._shared_client = self._backend.connect()
        return self._shared_client

    def close(self) -> None:
        try:
            # Gone: the leases it still holds come back at once to whoever opens the spider next.
            self.client.hdel(self.keys.owners, self.owner)
        except redis.RedisError:
            pass  # unreachable: the owner's time runs out after a lease time, with its leases
        finally:
            self.client.close()
            if self._shared_client is not None:
                self._shared_client.close()

    def __enter__(self) -> RedisStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _ClusterHosts:
    """A ``HostControl`` that tells both this process's scheduler and the crawl's shared host
    table; a Crawl-delay goes to the server only when it changes, as most requests repeat it."""

    def __init__(self, store: RedisStore, local: HostControl) -> None:
        self.store = store
        self.local = local
        self._delays: dict[str, float | None] = {}

    def pause(self, name: str, seconds: float) -> None:
        self.local.pause(name, seconds)
        self.store.tell_hosts(name, pause=seconds)

    def set_crawl_delay(self, name: str, seconds: float | None) -> None:
        self.local.set_crawl_delay(name, seconds)
        if self._delays.get(name, -1.0) != seconds:
            self._delays[name] = seconds
            self.store.tell_hosts(name, crawl_delay=seconds or 0.0)


class _KeyList:
    """A script's KEYS: the fixed ones, then others as the arguments name them (1-based)."""

    def __init__(self, fixed: Iterable[str]) -> None:
        self.keys = list(fixed)
        self._index = {key: index for index, key in enumerate(self.keys, start=1)}

    def __call__(self, key: str) -> int:
        if (index := self._index.get(key)) is None:
            self.keys.append(key)
            index = self._index[key] = len(self.keys)
        return index


class RedisFrontier:
    """One spider's frontier in a crawl shared through Redis. Used from one thread only."""

    def __init__(self, store: RedisStore, spider: str) -> None:
        self.spider = spider
        self.where = store.where
        self.patience = _Patience(store.where, store.wait_for_server) if store.wait_for_server else None
        self._client = store.client
        self._scripts = store.scripts
        self._keys = store.spider_keys(spider)
        self._fixed = [*self._keys.fixed, store.keys.owners, store.keys.hosts]
        self._politeness = store.politeness
        self._owner = [store.owner, store.lease_us]
        self.resume = self._resume()

    @_checkpoint_errors
    def _resume(self) -> ResumeInfo:
        reclaimed, *counts = self._scripts.resume(keys=self._fixed, args=self._owner)
        return ResumeInfo(reclaimed=reclaimed, counts=_counts(self.where, _pairs(counts)))

    def _entry_args(self, entry: Entry, keys: _KeyList) -> list[object]:
        bucket, record = self._keys.bucket(entry.fingerprint)
        return [
            keys(bucket), record, keys(self._keys.queue(entry.host)), entry.host,
            entry.priority, entry.depth, entry.fingerprint, entry.data,
        ]

    @_checkpoint_errors
    def add(self, entries: Iterable[Entry]) -> int:
        keys, args = _KeyList(self._fixed), list(self._owner)
        for entry in entries:
            args += self._entry_args(entry, keys)
        if len(args) == len(self._owner):
            return 0
        return int(self._scripts.add(keys=keys.keys, args=args))

    @_checkpoint_errors
    def ready_hosts(self) -> dict[str, int]:
        ready = _pairs(self._scripts.ready(keys=self._fixed, args=self._owner))
        return {host.decode(): int(number) for host, number in ready.items()}

    @_checkpoint_errors
    def lease(self, wants: Mapping[str, int]) -> list[Lease]:
        keys, args = _KeyList(self._fixed), [*self._owner, *self._politeness.script_args()]
        head = len(args)
        for host, want in wants.items():
            if want > 0:
                keys(self._keys.queue(host))
                args += [host, want]
        if len(args) == head:
            return []
        token, *fields = self._scripts.lease(keys=keys.keys, args=args)
        now = time.monotonic()
        return [
            Lease(
                fingerprint, data.decode(), depth, int(member), host.decode(), attempts, int(token), self.spider,
                not_before=now + wait / 1_000_000 if wait > 0 else 0.0,
            )
            for member, fingerprint, data, depth, host, attempts, wait in zip(*[iter(fields)] * 7, strict=True)
        ]

    @_checkpoint_errors
    def renew(self, leases: Iterable[Lease]) -> int:
        args = list(self._owner)
        for lease in leases:
            args += [_member(lease.entry), lease.token]
        if len(args) == len(self._owner):
            return 0
        return int(self._scripts.renew(keys=self._fixed, args=args))

    @_checkpoint_errors
    def reclaim_expired(self) -> int:
        return int(self._scripts.reclaim(keys=self._fixed, args=self._owner))

    @_checkpoint_errors
    def complete(self, completions: Sequence[Completion]) -> Committed:
        if not completions:
            return Committed()
        keys, args = _KeyList(self._fixed), [*self._owner, len(completions)]
        for completion in completions:
            args += self._completion_args(completion, keys)
        recorded, stale = self._scripts.complete(keys=keys.keys, args=args)
        return Committed(recorded, stale)

    def _completion_args(self, completion: Completion, keys: _KeyList) -> list[object]:
        lease = completion.lease
        head: list[object] = [_member(lease.entry), lease.token]
        if completion.retry_at is not None:
            # A wall-clock time of this machine, as a delay: added to the server's clock there.
            delay = max(0, round((completion.retry_at - time.time()) * 1_000_000))
            return head + ["retry", completion.attempts, delay, keys(self._keys.queue(lease.host))]
        if completion.refused:
            return head + ["refused"]
        if completion.error is not None:
            status = "" if completion.status is None else completion.status
            return head + ["failed", completion.attempts, completion.error, completion.error_kind or "", status]
        texts = [self._storable(text, "an item") for text in completion.items]
        rejected = [
            self._storable(text, "a rejected item")
            for reject in completion.rejected
            for text in (reject.url, reject.error, reject.data)
        ]
        children = [arg for child in completion.children for arg in self._entry_args(child, keys)]
        return head + ["done", len(texts), *texts, len(completion.rejected), *rejected, len(completion.children), *children]

    def _storable(self, text: object, what: str) -> str:
        """Checked before the batch is sent, so that a batch that cannot be stored writes nothing."""
        if not isinstance(text, str):
            raise CheckpointWriteFailed(f"{self.where}: cannot write the checkpoint: {what} is {type(text).__name__}, not text")
        return text

    @_checkpoint_errors
    def release(self, leases: Iterable[Lease]) -> int:
        keys, args = _KeyList(self._fixed), list(self._owner)
        for lease in leases:
            args += [_member(lease.entry), lease.token, keys(self._keys.queue(lease.host))]
        if len(args) == len(self._owner):
            return 0
        return int(self._scripts.release(keys=keys.keys, args=args))

    @_checkpoint_errors
    def counts(self) -> FrontierCounts:
        return _counts(self.where, self._client.hgetall(self._keys.counts))

    def is_finished(self) -> bool:
        counts = self.counts()
        return not counts.queued and not counts.in_flight

    @_checkpoint_errors
    def items_after(self, item_id: int, limit: int) -> list[StoredItem]:
        if limit <= 0:
            return []
        entries = self._client.xrange(self._keys.items, f"({item_id}-0", "+", count=limit)
        return [StoredItem(int(stream_id.split(b"-")[0]), fields[b"data"].decode()) for stream_id, fields in entries]

    @_checkpoint_errors
    def failed(self, limit: int) -> list[FailedRequest]:
        if limit <= 0:
            return []
        fields = self._scripts.failed(keys=self._fixed, args=[*self._owner, limit])
        return [
            FailedRequest(data.decode(), attempts, error.decode(), kind.decode() or None)
            for data, attempts, error, kind in zip(*[iter(fields)] * 4, strict=True)
        ]

    @_checkpoint_errors
    def failed_kinds(self) -> dict[str, int]:
        return {kind.decode(): int(number) for kind, number in self._client.hgetall(self._keys.failed_kinds).items()}

    @_checkpoint_errors
    def failed_statuses(self) -> dict[int, int]:
        return {int(status): int(number) for status, number in self._client.hgetall(self._keys.failed_statuses).items()}

    @_checkpoint_errors
    def retry_failed(self, statuses: Iterable[int] = (), kinds: Iterable[str] = ()) -> int:
        statuses, kinds = list(statuses), list(kinds)
        args = [*self._owner, len(statuses), *statuses, len(kinds), *kinds]
        return int(self._scripts.retry_failed(keys=self._fixed, args=args))

    @_checkpoint_errors
    def rejected(self, limit: int) -> list[RejectedItem]:
        if limit <= 0:
            return []
        entries = self._client.xrange(self._keys.rejected, "-", "+", count=limit)
        return [
            RejectedItem(fields[b"url"].decode(), fields[b"error"].decode(), fields[b"data"].decode())
            for _, fields in entries
        ]

    @_checkpoint_errors
    def get_state(self, key: str) -> str | None:
        value = self._client.hget(self._keys.state, key)
        return None if value is None else value.decode()

    @_checkpoint_errors
    def set_state(self, key: str, value: str) -> None:
        self._client.hset(self._keys.state, key, value)
