"""The checkpoint contract: what every backend (SQLite now, Redis later) provides.

A ``Store`` is one crawl's checkpoint, opened by one owner: every spider's ``Frontier`` (its
queue, seen-set and committed items), which spiders it was written for, and a way to start a
spider over. A ``Backend`` opens a store, reads its status without opening it, and discards an
unusable one (``--fresh``).

Work is *leased*, not popped: a leased request stays in the frontier, marked in flight under its
owner, until it is completed (done or failed, with its items, in one transaction) or released. A
lease has a deadline, which its owner renews while it works (a heartbeat); a lease whose
deadline passed is reclaimed, queued for anyone again, and a completion or release by its old
holder is refused and counted, so a request is never committed twice. A process that dies
leaves its leases in flight, and they come back: at once where the backend knows the owner is
gone (SQLite's file lock), otherwise when their deadline passes.

The core computes what a backend stores (an ``Entry``: fingerprint, host and the request's
stored form), once; backends keep it as given. The crawl is finished by the rule in
``crawl_is_finished``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Protocol

from ..items import RejectedItem
from ..request import Request, fingerprint, host_key

if TYPE_CHECKING:
    from ..processing import HostControl


#: State key set once a spider's start requests are all queued (see ``Crawl.is_finished``).
SEEDED = "start_requests_queued"
#: State key of the spider's per-host table and counts by reason, as JSON (see ``Crawl``).
RUN_STATS = "run_stats"


class State(IntEnum):
    QUEUED = 0
    IN_FLIGHT = 1
    DONE = 2
    FAILED = 3
    REFUSED = 4  # never fetched: robots.txt disallows it


@dataclass(frozen=True, slots=True)
class Entry:
    """A request as a backend stores it: dedupe by ``fingerprint``, leased by ``host``, in
    ``priority`` order; ``data`` is its stored form (JSON text), opaque to the backend."""

    fingerprint: bytes
    host: str
    priority: int
    depth: int
    data: str

    @classmethod
    def of(cls, spider: str, request: Request, depth: int) -> Entry:
        """What ``spider``'s frontier stores for ``request``, found ``depth`` links from a start."""
        return cls(fingerprint(spider, request), host_key(request.url), request.priority, depth, request.to_json())


@dataclass(frozen=True, slots=True)
class Lease:
    """A request of ``spider``'s handed out to work on. ``entry`` is the backend's handle on its
    queue entry, ``token`` tells this lease from any later one of the same entry; ``attempts``
    are the tries already spent on it (earlier ones were retried later)."""

    fingerprint: bytes
    data: str
    depth: int
    entry: int
    host: str
    attempts: int = 0
    token: int = 0
    spider: str = ""
    #: Not to be started before this ``time.monotonic()`` (0: at once): where the backend spaces
    #: a host's requests for the whole crawl, the start it gave this one.
    not_before: float = 0.0
    _request: Request | None = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> tuple[int, int]:
        """This lease of this entry: what tells it from an earlier or later lease of it."""
        return self.entry, self.token

    @property
    def request(self) -> Request:
        """The request, decoded from its stored form on first use (a coordinator that only
        passes leases on never decodes them)."""
        if (request := self._request) is None:
            request = Request.from_json(self.data)
            object.__setattr__(self, "_request", request)
        return request

    def __getstate__(self) -> tuple[object, ...]:
        # Sent to worker processes without the decoded request: the stored form is smaller.
        return tuple(getattr(self, name) for name in _LEASE_FIELDS)

    def __setstate__(self, state: tuple[object, ...]) -> None:
        for name, value in zip(_LEASE_FIELDS, state, strict=True):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "_request", None)


_LEASE_FIELDS = ("fingerprint", "data", "depth", "entry", "host", "attempts", "token", "spider", "not_before")


@dataclass(frozen=True, slots=True)
class Completion:
    """What became of a lease, after ``attempts`` more tries.

    - done: ``error`` is None; ``children``, ``items`` and ``rejected`` are its output;
    - failed: ``error`` is the last error, ``error_kind`` names its class (``HTTPStatusError``,
      ``ReadTimeout``, ``CallbackError``...) and ``status`` the HTTP status it failed with, if
      any, so failed requests can be selected by kind or status later;
    - to retry: ``retry_at`` (a wall-clock time) says when, and the error says why;
    - refused: never fetched (robots.txt), with the reason in ``error``.
    """

    lease: Lease
    attempts: int
    error: str | None = None
    error_kind: str | None = None
    children: Sequence[Entry] = ()
    items: Sequence[str] = ()  # accepted items, as JSON text
    rejected: Sequence[RejectedItem] = ()
    retry_at: float | None = None
    refused: bool = False
    status: int | None = None


@dataclass(frozen=True, slots=True)
class FrontierCounts:
    queued: int = 0
    in_flight: int = 0
    done: int = 0
    failed: int = 0
    items: int = 0
    rejected: int = 0
    refused: int = 0


@dataclass(frozen=True, slots=True)
class Limits:
    """A spider's caps: requests completed (done or failed), and items committed."""

    max_pages: int | None = None
    max_items: int | None = None

    def reached(self, counts: FrontierCounts) -> bool:
        return (self.max_pages is not None and counts.done + counts.failed >= self.max_pages) or (
            self.max_items is not None and counts.items >= self.max_items
        )

    def pages_left(self, counts: FrontierCounts) -> int | None:
        """Requests that may still be started (those in flight included), or None: no cap."""
        if self.max_pages is None:
            return None
        return self.max_pages - counts.done - counts.failed - counts.in_flight


def crawl_is_finished(seeded: bool, counts: FrontierCounts, limits: Limits = Limits()) -> bool:
    """The one rule for a finished crawl: its start requests are all queued, and either nothing
    is queued or in flight, or a limit is reached. (The engine also requires that it holds no
    lease itself.)"""
    return seeded and ((not counts.queued and not counts.in_flight) or limits.reached(counts))


@dataclass(frozen=True, slots=True)
class FailedRequest:
    data: str  # the request's stored form
    attempts: int
    error: str
    error_kind: str | None = None

    @property
    def url(self) -> str:
        return Request.from_json(self.data).url


@dataclass(frozen=True, slots=True)
class StoredItem:
    id: int
    data: str  # JSON text


@dataclass(slots=True)
class ResumeInfo:
    """What opening the frontier found from earlier runs."""

    reclaimed: int = 0
    counts: FrontierCounts = field(default_factory=FrontierCounts)


@dataclass(frozen=True, slots=True)
class Committed:
    """What ``Frontier.complete`` did: ``stale`` completions were refused (their lease had been
    reclaimed, so another lease of the same request may commit it), the rest were recorded."""

    recorded: int = 0
    stale: int = 0


class Frontier(Protocol):
    """One spider's crawl state. All methods are called from one thread (the engine's)."""

    spider: str
    resume: ResumeInfo

    def add(self, entries: Iterable[Entry]) -> int:
        """Queue requests not seen before; returns how many were new."""

    def ready_hosts(self) -> dict[str, int]:
        """Hosts with requests that can be leased now (not waiting for a retry time), and how
        many each has queued."""

    def lease(self, wants: Mapping[str, int]) -> list[Lease]:
        """Take up to ``wants[host]`` ready requests of each host, highest priority first, then
        oldest first, as leases of this store's owner that last the store's lease time."""

    def renew(self, leases: Iterable[Lease]) -> int:
        """Push the deadline of these leases a lease time ahead (the heartbeat of the work on
        them); returns how many are still this owner's."""

    def reclaim_expired(self) -> int:
        """Queue again every lease whose deadline passed, whoever held it; returns how many."""

    def complete(self, completions: Sequence[Completion]) -> Committed:
        """Record outcomes, their items and their new requests, atomically; a completion whose
        lease is no longer held as it was handed out is refused, and counted as stale."""

    def release(self, leases: Iterable[Lease]) -> int:
        """Put leased requests back in the queue untouched (the crawl is stopping); returns how
        many were refused as stale."""

    def counts(self) -> FrontierCounts: ...

    def is_finished(self) -> bool:
        """Nothing queued and nothing in flight."""

    def items_after(self, item_id: int, limit: int) -> list[StoredItem]:
        """Committed items with an id above ``item_id``, in commit order."""

    def failed(self, limit: int) -> list[FailedRequest]: ...

    def failed_kinds(self) -> dict[str, int]:
        """The requests failed now (not queued again since), by ``error_kind``."""

    def failed_statuses(self) -> dict[int, int]:
        """The requests failed now by an HTTP status, by status."""

    def retry_failed(self, statuses: Iterable[int] = (), kinds: Iterable[str] = ()) -> int:
        """Queue failed requests again (all, or those failed with one of ``statuses`` or of one of
        ``kinds``), with a fresh retry budget; returns how many."""

    def rejected(self, limit: int) -> list[RejectedItem]: ...

    def get_state(self, key: str) -> str | None:
        """A small piece of the spider's bookkeeping (e.g. export progress)."""

    def set_state(self, key: str, value: str) -> None: ...


class Store(Protocol):
    """One crawl's checkpoint, opened by one owner."""

    #: Where it is, for messages: a file's path, or a server's URL without its password.
    location: str
    owner: str

    def claim_spider_set(self, spiders: list[str]) -> None:
        """Record which spiders the checkpoint is for, or refuse (CheckpointError) a config that
        runs others: resuming one set of spiders from another's checkpoint would mix two crawls."""

    def reset(self, spider: str) -> None:
        """Forget everything about one spider's crawl (``--fresh``)."""

    def frontier(self, spider: str) -> Frontier: ...

    def host_control(self, local: HostControl) -> HostControl:
        """Where what responses say about a host (a ``Retry-After``, a Crawl-delay) goes: to
        ``local``, this process's scheduler, and wherever else the crawl's other processes
        would hear of it."""

    def close(self) -> None: ...

    def __enter__(self) -> Store: ...

    def __exit__(self, *exc_info: object) -> None: ...


class Backend(Protocol):
    """A kind of checkpoint, at one place: opens it for a crawl, or reads it from outside one."""

    location: str

    def open(self, owner: str, *, lease_time: float) -> Store:
        """Open (creating if need be) and lock the checkpoint. Raises CheckpointInUse if another
        crawl holds it, CheckpointError if it is not a usable checkpoint."""

    def discard(self) -> None:
        """Remove an unusable checkpoint, so that ``open`` starts a new one (``--fresh``)."""

    def status(self, limits: Mapping[str, Limits]) -> CheckpointStatus:
        """Where each spider's crawl stands, read without locking (a crawl may be running);
        ``limits`` (the spiders' caps from the config) decide whether a capped crawl is finished."""


@dataclass(frozen=True, slots=True)
class SpiderStatus:
    spider: str
    counts: FrontierCounts
    finished: bool
    last_activity: float | None  # time.time() of the last commit
    in_flight_owners: dict[str, int] = field(default_factory=dict)  # owner -> leases it holds
    hosts: dict[str, dict[str, float | None]] = field(default_factory=dict)  # host -> requests, errors...
    reasons: dict[str, int] = field(default_factory=dict)  # "filtered:offsite" -> count, etc.
    failed_kinds: dict[str, int] = field(default_factory=dict)  # "ReadTimeout" -> requests failed now
    failed_statuses: dict[int, int] = field(default_factory=dict)  # 503 -> requests failed now by it


@dataclass(frozen=True, slots=True)
class CheckpointStatus:
    location: str
    running: str | None  # the owner of the crawl running now, if any
    spiders: list[SpiderStatus]
