"""The frontier contract: what every checkpoint backend (SQLite now, Redis later) provides.

A frontier is one spider's queue, seen-set and committed items in one place. Work is *leased*,
not popped: a leased request stays in the frontier, marked in flight, until it is completed (done
or failed, with its items, in one transaction) or released. A process that dies leaves its
leases in flight, and the next run reclaims them, so nothing is lost.

The crawl is finished by the rule in ``crawl_is_finished``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

from ..items import RejectedItem
from ..request import Request


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
class Pending:
    """A request to add, at a depth (0 for start requests)."""

    request: Request
    depth: int


@dataclass(frozen=True, slots=True)
class Lease:
    """A request handed to a worker. ``entry`` is the backend's handle on its queue entry;
    ``attempts`` the tries already spent on it (earlier ones were retried later)."""

    fingerprint: bytes
    request: Request
    depth: int
    entry: int
    host: str
    attempts: int = 0


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
    children: Sequence[Pending] = ()
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
    url: str
    attempts: int
    error: str
    error_kind: str | None = None


@dataclass(frozen=True, slots=True)
class StoredItem:
    id: int
    data: str  # JSON text


@dataclass(slots=True)
class ResumeInfo:
    """What opening the frontier found from earlier runs."""

    reclaimed: int = 0
    counts: FrontierCounts = field(default_factory=FrontierCounts)


class Frontier(Protocol):
    """One spider's crawl state. All methods are called from one thread (the engine's)."""

    spider: str

    def add(self, pending: Iterable[Pending]) -> int:
        """Queue requests not seen before; returns how many were new."""

    def ready_hosts(self) -> dict[str, int]:
        """Hosts with requests that can be leased now (not waiting for a retry time), and how
        many each has queued."""

    def lease(self, wants: Mapping[str, int]) -> list[Lease]:
        """Take up to ``wants[host]`` ready requests of each host, highest priority first, then
        oldest first."""

    def complete(self, completions: Sequence[Completion]) -> None:
        """Record outcomes, their items and their new requests, atomically."""

    def release(self, leases: Iterable[Lease]) -> None:
        """Put leased requests back in the queue untouched (the crawl is stopping)."""

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
