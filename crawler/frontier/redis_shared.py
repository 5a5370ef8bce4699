"""The Redis side of a crawl run by several processes on several machines: the board where they
share a spider's login (``RedisLoginBoard``, for ``crawler.auth.cluster.ClusterLogin``), and one
fetch of each robots.txt for all of them (``RedisRobotsFetch``).

Key layout
----------
Beside the checkpoint's keys (``crawler.frontier.redis``), under the crawl's same hash tag, so
that Redis Cluster keeps them in its slot::

    {crawl}:login:<spider>           hash    generation -> the latest login's number,
                                             cookies -> its cookies (a JSON list of cookie dicts)
    {crawl}:login:<spider>:lock      string  the holder logging in now; lapses (PX) unless renewed
    {crawl}:robots                   hash    robots.txt URL -> "<status> <body>" of its fetch, for
                                             the crawl (robots.txt is public)
    {crawl}:robots:lock:<digest>     string  the holder fetching that URL now (its SHA-256, 32 hex
                                             digits); lapses (PX) unless renewed

A lock is taken with ``SET NX PX``; renewing, letting go and publishing a login are scripts that
compare the holder first, so only the holder can, and a holder whose lock lapsed (it died, or
stalled a whole ttl) can no longer change anything. The login and robots keys are kept between
runs, like the checkpoint, and go with it.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import redis

from ..auth.cluster import KeepLocked, poll_delays
from ..exceptions import CheckpointError
from ..politeness.robots import RobotsFetch, says_try_later
from ..stats import Stats
from .redis import CheckpointUnavailable, Patience, RedisStore, checkpoint_errors
from .redis_keys import CrawlKeys

logger = logging.getLogger(__name__)

# Flags as the checkpoint's scripts have them: Redis 7 checks the keys such a script declares.
_RENEW = """#!lua
-- KEYS 1: a lock; ARGV 1: its holder, 2: milliseconds from now. 1 if renewed, 0 if not the holder's.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

_UNLOCK = """#!lua
-- KEYS 1: a lock; ARGV 1: its holder. Deleted only if the holder's.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_PUBLISH = """#!lua
-- KEYS 1: the login hash, 2: its lock; ARGV 1: holder, 2: generation, 3: cookies (JSON).
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local latest = tonumber(redis.call('HGET', KEYS[1], 'generation') or '0')
if tonumber(ARGV[2]) ~= latest + 1 then return 0 end
redis.call('HSET', KEYS[1], 'generation', ARGV[2], 'cookies', ARGV[3])
return 1
"""

_ASK_ROBOTS = """#!lua
-- KEYS 1: the robots hash, 2: the URL's lock; ARGV 1: URL, 2: holder, 3: lock milliseconds.
-- The stored answer; else 1: the lock is the holder's now, fetch it; else 0: being fetched.
local answer = redis.call('HGET', KEYS[1], ARGV[1])
if answer then return answer end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', ARGV[3]) then return 1 end
return 0
"""


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


class _Locks:
    """The scripts that renew and let go of a lock, for its holder only."""

    def __init__(self, client: redis.Redis) -> None:
        self._renew = client.register_script(_RENEW)
        self._unlock = client.register_script(_UNLOCK)

    def renew(self, lock: str, holder: str, ttl: float) -> bool:
        return bool(self._renew(keys=[lock], args=[holder, _milliseconds(ttl)]))

    def unlock(self, lock: str, holder: str) -> None:
        self._unlock(keys=[lock], args=[holder])


class RedisLoginBoard:
    """The ``LoginBoard`` of one spider of crawl ``crawl``, on ``client``'s server."""

    def __init__(self, client: redis.Redis, crawl: str, spider: str, *, wait_for_server: float = 0.0) -> None:
        keys = CrawlKeys(crawl)
        self.client = client
        self.key = keys.login(spider)
        self.lock = keys.login_lock(spider)
        self.where = f"the login of spider {spider} (crawl {crawl})"
        # A login asked for while the server is away waits for it, as the crawl's steps do.
        self.patience = Patience(self.where, wait_for_server) if wait_for_server else None
        self._locks = _Locks(client)
        self._publish = client.register_script(_PUBLISH)

    @checkpoint_errors
    def current(self) -> tuple[int, list[dict[str, Any]]] | None:
        generation, cookies = self.client.hmget(self.key, ["generation", "cookies"])
        if generation is None:
            return None
        try:
            return int(generation), json.loads(cookies)
        except (TypeError, ValueError):
            raise CheckpointError(f"{self.where}: {self.key} is damaged; delete it to log in afresh") from None

    @checkpoint_errors
    def try_lock(self, holder: str, ttl: float) -> bool:
        return bool(self.client.set(self.lock, holder, nx=True, px=_milliseconds(ttl)))

    @checkpoint_errors
    def renew_lock(self, holder: str, ttl: float) -> bool:
        return self._locks.renew(self.lock, holder, ttl)

    @checkpoint_errors
    def unlock(self, holder: str) -> None:
        self._locks.unlock(self.lock, holder)

    @checkpoint_errors
    def publish(self, holder: str, generation: int, cookies: Sequence[Mapping[str, Any]]) -> bool:
        return bool(self._publish(keys=[self.key, self.lock], args=[holder, generation, json.dumps(list(cookies))]))


class RedisRobotsFetch:
    """A ``RobotsFetch`` that fetches each robots.txt once for every process of crawl ``crawl``:
    it answers what is stored, or waits while another process fetches the file, or fetches it
    with ``fetch`` (counting ``robots:fetched`` on ``stats``) and stores the answer. An answer
    that says "try later" (5xx, 429) and an error are not stored: the next asker fetches the
    file again, as the ``RobotsCache`` recheck wants, so give that cache ``counts_fetches=False``.
    ``lock_ttl``: how long the others wait for a fetcher that died before one of them fetches.
    """

    def __init__(
        self, client: redis.Redis, crawl: str, fetch: RobotsFetch, stats: Stats, *, lock_ttl: float = 10.0
    ) -> None:
        if lock_ttl <= 0:
            raise ValueError("lock_ttl must be > 0 seconds")
        self.client = client
        self.keys = CrawlKeys(crawl)
        self.fetch = fetch
        self.stats = stats
        self.lock_ttl = lock_ttl
        self.where = f"robots.txt (crawl {crawl})"
        self._locks = _Locks(client)
        self._ask_script = client.register_script(_ASK_ROBOTS)

    def __call__(self, url: str) -> tuple[int, bytes]:
        lock = self.keys.robots_lock(url)
        holder = uuid.uuid4().hex  # this one fetch's, so that only it lets its lock go
        delays = poll_delays()
        while True:
            try:
                reply = self._ask(url, lock, holder)
            except CheckpointUnavailable as error:
                # robots.txt is public: fetched once more than needed is better than a request failed.
                logger.warning("%s; fetching %s without the other processes", error, url)
                self.stats.inc("robots:fetched")
                return self.fetch(url)
            if isinstance(reply, bytes):
                return self._decoded(url, reply)
            if reply == 1:
                return self._fetch_holding(url, lock, holder)
            time.sleep(next(delays))

    def _fetch_holding(self, url: str, lock: str, holder: str) -> tuple[int, bytes]:
        try:
            with KeepLocked(lambda: self._renew(lock, holder), self.lock_ttl, url):
                self.stats.inc("robots:fetched")
                status, body = self.fetch(url)
            if not says_try_later(status):
                self._bookkeep("store the answer of", url, lambda: self._store(url, status, body))
            return status, body
        finally:
            self._bookkeep("let go of the lock of", url, lambda: self._unlock(lock, holder))

    def _bookkeep(self, what: str, url: str, step: Callable[[], object]) -> None:
        """A step after the fetch: if the server cannot take it, this process keeps its answer
        all the same, and the others fetch the file themselves once the lock lapses."""
        try:
            step()
        except CheckpointError as error:
            logger.warning("cannot %s %s: %s", what, url, error)

    # The steps on the server, their errors the checkpoint's (see checkpoint_errors).
    @checkpoint_errors
    def _ask(self, url: str, lock: str, holder: str) -> object:
        return self._ask_script(keys=[self.keys.robots, lock], args=[url, holder, _milliseconds(self.lock_ttl)])

    @checkpoint_errors
    def _renew(self, lock: str, holder: str) -> bool:
        return self._locks.renew(lock, holder, self.lock_ttl)

    @checkpoint_errors
    def _store(self, url: str, status: int, body: bytes) -> None:
        self.client.hset(self.keys.robots, url, b"%d %s" % (status, body))

    @checkpoint_errors
    def _unlock(self, lock: str, holder: str) -> None:
        self._locks.unlock(lock, holder)

    def _decoded(self, url: str, stored: bytes) -> tuple[int, bytes]:
        status, _, body = stored.partition(b" ")
        if not status.isdigit():
            raise CheckpointError(f"{self.where}: the stored answer for {url} is damaged; delete {self.keys.robots} to fetch afresh")
        return int(status), body


def login_board(store: RedisStore, spider: str) -> RedisLoginBoard:
    """The board where the processes of ``store``'s crawl share ``spider``'s login."""
    return RedisLoginBoard(store.shared_client(), store.keys.crawl, spider, wait_for_server=store.wait_for_server)


def robots_fetch(store: RedisStore, fetch: RobotsFetch, stats: Stats) -> RedisRobotsFetch:
    """``fetch``, made once per robots.txt for every process of ``store``'s crawl."""
    return RedisRobotsFetch(store.shared_client(), store.keys.crawl, fetch, stats)
