"""The names of a crawl's keys on a Redis (or Valkey) server, and how the seen-set is kept.

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
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

FINGERPRINT_SIZE = 16
#: Bytes of a fingerprint that name its seen bucket; the rest is its record in the bucket.
BUCKET_PREFIX_SIZE = 2
RECORD_SIZE = FINGERPRINT_SIZE - BUCKET_PREFIX_SIZE
BUCKETS = 256**BUCKET_PREFIX_SIZE
# Entry ids are written with this many digits, so that ids sort by their text as by their number.
ENTRY_DIGITS = 12


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
SPIDER_KEY_NAMES = (
    "counts", "seq", "entries", "leases", "expiry", "delayed", "ready",
    "failed", "failed_kinds", "failed_statuses", "items", "rejected", "state",
)


@dataclass(frozen=True, slots=True)
class SpiderKeys:
    """The names of one spider's keys: ``prefix`` is ``{crawl}:N:``."""

    prefix: str

    @property
    def fixed(self) -> list[str]:
        return [self.prefix + name for name in SPIDER_KEY_NAMES]

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


def member(entry: int) -> str:
    return f"{entry:0{ENTRY_DIGITS}d}"
