"""The shared checkpoint: one crawl's frontiers in Redis (or Valkey), for many processes at once.

Every process of a crawl, on any machine, opens the same crawl on the same server as an owner
of its own: they lease from one queue and dedupe against one seen-set. Nothing here is an
exclusive lock, so ``open`` never raises CheckpointInUse.

Every step that touches more than one key is one Lua script (one round trip, EVALSHA), so it is
atomic: add with dedupe, lease, complete a batch, release, renew, reclaim, requeue failed
requests, reset a spider (``discard`` runs that for each spider, then deletes the crawl's own
keys, last, so that a discard cut short can be run again). Redis does not roll a script back
when it fails half-way, so each script reads and checks everything it will change first (key
types, records, lease tokens) and writes after.
Counts are a hash that only scripts change, in the same step as what they count: they cannot
drift from the structures.

Time is the server's (``TIME`` inside the scripts): lease deadlines, retry times, last activity
and the owners' liveness, so the clocks of the crawl's machines never have to agree. The one
time given by a client, ``Completion.retry_at``, is turned into a delay from the client's own
clock, and that delay is added to the server's: a client whose clock is off by a minute still
waits the delay it meant.

The key layout and the seen-set are described in ``crawler.frontier.redis_keys``; the scripts,
which do every step, in ``crawler.frontier.redis_scripts``.

Server settings relied on: ``maxmemory-policy noeviction`` (the default), since an evicted key is
a lost piece of the crawl, and persistence (RDB or AOF) as durable as the crawl must be. Redis
7.0 or later (scripts with ``#!lua`` flags, exclusive ``XRANGE`` starts) or Valkey.
"""

from __future__ import annotations

import functools
import json
import logging
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ..exceptions import CheckpointError, CheckpointWriteFailed
from ..items import RejectedItem
from ..urls import holds_password
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
from .redis_keys import CrawlKeys, SpiderKeys, member
from .redis_scripts import SCRIPT_ERROR, Scripts

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from ..processing import HostControl

SCHEMA_VERSION = 1
# A dead server or network must fail the crawl's step, not hang it; scripts are short.
_CONNECT_TIMEOUT = 10.0
_REPLY_TIMEOUT = 60.0
# Waiting for an unreachable server: the first retry after this many seconds, doubling up to the most.
_FIRST_RETRY = 0.1
_MOST_RETRY_WAIT = 5.0


class CheckpointUnavailable(CheckpointError):
    """The checkpoint's server cannot be reached (refused, down, timed out): nothing of the step
    that failed was written, or all of it; the leases in flight come back in a lease time."""


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
    if message.startswith(SCRIPT_ERROR + " "):
        return CheckpointError(f"{where}: {message.removeprefix(SCRIPT_ERROR + ' ')}")
    if message.startswith("WRONGTYPE"):
        return CheckpointError(f"{where}: a key holds a value of the wrong type: not a usable checkpoint; use --fresh to start over")
    # Out of memory, a read-only replica, a command the server's ACL forbids: the step was not
    # done, and what was committed before stays.
    return CheckpointWriteFailed(f"{where}: the server refused the step ({message})")


def checkpoint_errors(method: Callable[P, R]) -> Callable[P, R]:
    """Turn the client's errors into CheckpointError (the first argument has ``where``), after
    waiting for an unreachable server as long as the first argument's ``patience`` says."""

    @functools.wraps(method)
    def translated(*args: P.args, **kwargs: P.kwargs) -> R:
        patience: Patience | None = getattr(args[0], "patience", None)
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


class Patience:
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
        if holds_password(url):
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
            scripts = Scripts(client)
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
        # Its own steps wait for an unreachable server as the frontiers' do: a process that
        # starts while the server restarts (or says a host's Retry-After then) waits for it.
        self.patience = Patience(self.where, self.wait_for_server) if self.wait_for_server else None
        self._backend = backend
        self._shared_client: redis.Redis | None = None
        self.client = backend.connect()
        try:
            self.scripts = Scripts(self.client)
            self._open()
        except BaseException:
            self.client.close()
            raise

    @checkpoint_errors
    def _open(self) -> None:
        self.scripts.open(keys=list(self.keys.fixed), args=[SCHEMA_VERSION, self.owner, self.lease_us])

    @checkpoint_errors
    def claim_spider_set(self, spiders: list[str]) -> None:
        wanted = json.dumps(sorted(spiders))
        with self.client.pipeline(transaction=True) as pipe:
            claimed = pipe.hsetnx(self.keys.meta, "spider_set", wanted).hget(self.keys.meta, "spider_set").execute()[1]
        if claimed.decode() != wanted:
            raise CheckpointError(
                f"{self.where}: written for spiders {', '.join(json.loads(claimed))}, but the config runs "
                f"{', '.join(sorted(spiders))}; use --fresh to start over, or another crawl name"
            )

    @checkpoint_errors
    def spider_keys(self, spider: str) -> SpiderKeys:
        """The keys of ``spider``, which is given a number now if it has none yet."""
        return self.keys.spider(int(self.scripts.spider_number(keys=[self.keys.spiders], args=[spider])))

    @checkpoint_errors
    def reset(self, spider: str) -> None:
        keys = self.spider_keys(spider)
        self.scripts.reset(keys=[*keys.fixed, *keys.buckets(), self.keys.hosts], args=[0])

    def frontier(self, spider: str) -> RedisFrontier:
        return RedisFrontier(self, spider)

    def host_control(self, local: HostControl) -> HostControl:
        """What responses say about a host (a ``Retry-After``, a Crawl-delay), told to ``local``
        (this process's scheduler) and to every process of the crawl."""
        return _ClusterHosts(self, local)

    @checkpoint_errors
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
        self._tell(name, pause=seconds)

    def set_crawl_delay(self, name: str, seconds: float | None) -> None:
        self.local.set_crawl_delay(name, seconds)
        if self._delays.get(name, -1.0) != seconds:
            self._delays[name] = seconds
            self._tell(name, crawl_delay=seconds or 0.0)

    def _tell(self, name: str, **news: float) -> None:
        # Called by a worker about its request: a server out of reach must not fail the request.
        # This process keeps the limit; the others learn it from their own requests.
        try:
            self.store.tell_hosts(name, **news)
        except CheckpointError as error:
            logger.warning("cannot tell the crawl's other processes about %s: %s", name, error)


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
        self.patience = Patience(store.where, store.wait_for_server) if store.wait_for_server else None
        self._client = store.client
        self._scripts = store.scripts
        self._keys = store.spider_keys(spider)
        self._fixed = [*self._keys.fixed, store.keys.owners, store.keys.hosts]
        self._politeness = store.politeness
        self._owner = [store.owner, store.lease_us]
        self.resume = self._resume()

    @checkpoint_errors
    def _resume(self) -> ResumeInfo:
        reclaimed, *counts = self._scripts.resume(keys=self._fixed, args=self._owner)
        return ResumeInfo(reclaimed=reclaimed, counts=_counts(self.where, _pairs(counts)))

    def _entry_args(self, entry: Entry, keys: _KeyList) -> list[object]:
        bucket, record = self._keys.bucket(entry.fingerprint)
        return [
            keys(bucket), record, keys(self._keys.queue(entry.host)), entry.host,
            entry.priority, entry.depth, entry.fingerprint, entry.data,
        ]

    @checkpoint_errors
    def add(self, entries: Iterable[Entry]) -> int:
        keys, args = _KeyList(self._fixed), list(self._owner)
        for entry in entries:
            args += self._entry_args(entry, keys)
        if len(args) == len(self._owner):
            return 0
        return int(self._scripts.add(keys=keys.keys, args=args))

    @checkpoint_errors
    def ready_hosts(self) -> dict[str, int]:
        ready = _pairs(self._scripts.ready(keys=self._fixed, args=self._owner))
        return {host.decode(): int(number) for host, number in ready.items()}

    @checkpoint_errors
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

    @checkpoint_errors
    def renew(self, leases: Iterable[Lease]) -> int:
        args = list(self._owner)
        for lease in leases:
            args += [member(lease.entry), lease.token]
        if len(args) == len(self._owner):
            return 0
        return int(self._scripts.renew(keys=self._fixed, args=args))

    @checkpoint_errors
    def reclaim_expired(self) -> int:
        return int(self._scripts.reclaim(keys=self._fixed, args=self._owner))

    @checkpoint_errors
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
        head: list[object] = [member(lease.entry), lease.token]
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

    @checkpoint_errors
    def release(self, leases: Iterable[Lease]) -> int:
        keys, args = _KeyList(self._fixed), list(self._owner)
        for lease in leases:
            args += [member(lease.entry), lease.token, keys(self._keys.queue(lease.host))]
        if len(args) == len(self._owner):
            return 0
        return int(self._scripts.release(keys=keys.keys, args=args))

    @checkpoint_errors
    def counts(self) -> FrontierCounts:
        return _counts(self.where, self._client.hgetall(self._keys.counts))

    def is_finished(self) -> bool:
        counts = self.counts()
        return not counts.queued and not counts.in_flight

    @checkpoint_errors
    def items_after(self, item_id: int, limit: int) -> list[StoredItem]:
        if limit <= 0:
            return []
        entries = self._client.xrange(self._keys.items, f"({item_id}-0", "+", count=limit)
        return [StoredItem(int(stream_id.split(b"-")[0]), fields[b"data"].decode()) for stream_id, fields in entries]

    @checkpoint_errors
    def failed(self, limit: int) -> list[FailedRequest]:
        if limit <= 0:
            return []
        fields = self._scripts.failed(keys=self._fixed, args=[*self._owner, limit])
        return [
            FailedRequest(data.decode(), attempts, error.decode(), kind.decode() or None)
            for data, attempts, error, kind in zip(*[iter(fields)] * 4, strict=True)
        ]

    @checkpoint_errors
    def failed_kinds(self) -> dict[str, int]:
        return {kind.decode(): int(number) for kind, number in self._client.hgetall(self._keys.failed_kinds).items()}

    @checkpoint_errors
    def failed_statuses(self) -> dict[int, int]:
        return {int(status): int(number) for status, number in self._client.hgetall(self._keys.failed_statuses).items()}

    @checkpoint_errors
    def retry_failed(self, statuses: Iterable[int] = (), kinds: Iterable[str] = ()) -> int:
        statuses, kinds = list(statuses), list(kinds)
        args = [*self._owner, len(statuses), *statuses, len(kinds), *kinds]
        return int(self._scripts.retry_failed(keys=self._fixed, args=args))

    @checkpoint_errors
    def rejected(self, limit: int) -> list[RejectedItem]:
        if limit <= 0:
            return []
        entries = self._client.xrange(self._keys.rejected, "-", "+", count=limit)
        return [
            RejectedItem(fields[b"url"].decode(), fields[b"error"].decode(), fields[b"data"].decode())
            for _, fields in entries
        ]

    @checkpoint_errors
    def get_state(self, key: str) -> str | None:
        value = self._client.hget(self._keys.state, key)
        return None if value is None else value.decode()

    @checkpoint_errors
    def set_state(self, key: str, value: str) -> None:
        self._client.hset(self._keys.state, key, value)
