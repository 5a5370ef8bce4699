"""The frontier contract: what every checkpoint backend (SQLite now, Redis later) provides.

A frontier is one spider's queue, seen-set and committed items in one place. Work is *leased*,
not popped: a leased request stays in the frontier, marked in flight, until it is completed (done
or failed, with its items, in one transaction) or released. A process that dies leaves its
leases in flight, and the next run reclaims them, so nothing is lost.

The crawl is finished by the rule in ``crawl_is_finished``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

from ..items import RejectedItem
from ..request import Request


#: State key set once a spider's start requests are all queued (see ``Crawl.is_finished``).
SEEDED = "start_requests_queued"


class State(IntEnum):
    QUEUED = 0
    IN_FLIGHT = 1
    DONE = 2
    FAILED = 3


@dataclass(frozen=True, slots=True)
class Pending:
    """A request to add, at a depth (0 for start requests)."""

    request: Request
    depth: int


@dataclass(frozen=True, slots=True)
class Lease:
    """A request handed to a worker. ``entry`` is the backend's handle on its queue entry."""

    fingerprint: bytes
    request: Request
    depth: int
    entry: int


@dataclass(frozen=True, slots=True)
class Completion:
    """What became of a lease. ``error`` is None for a done request, the last error for a failed one,
    and ``error_kind`` names its class (``HTTPStatusError``, ``ReadTimeout``, ``CallbackError``...)
    so failed requests can be selected by kind later."""

    lease: Lease
    attempts: int
    error: str | None = None
    error_kind: str | None = None
    children: Sequence[Pending] = ()
    items: Sequence[str] = ()  # accepted items, as JSON text
    rejected: Sequence[RejectedItem] = ()


@dataclass(frozen=True, slots=True)
class FrontierCounts:
    queued: int = 0
    in_flight: int = 0
    done: int = 0
    failed: int = 0
    items: int = 0
    rejected: int = 0


def crawl_is_finished(seeded: bool, counts: FrontierCounts) -> bool:
    """The one rule for a finished crawl: its start requests are all queued, and nothing is
    queued or in flight. (The engine also requires that it holds no lease itself.)"""
    return seeded and not counts.queued and not counts.in_flight


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

    def lease(self, limit: int) -> list[Lease]:
        """Take up to ``limit`` queued requests, highest priority first, then oldest first."""

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

    def retry_failed(self, statuses: Iterable[int] = (), kinds: Iterable[str] = ()) -> int:
        """Queue failed requests again (all, or those failed with one of ``statuses`` or of one of
        ``kinds``), with a fresh retry budget; returns how many."""

    def rejected(self, limit: int) -> list[RejectedItem]: ...

    def get_state(self, key: str) -> str | None:
        """A small piece of the spider's bookkeeping (e.g. export progress)."""

    def set_state(self, key: str, value: str) -> None: ...
