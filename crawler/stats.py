"""Crawl counters shared by workers, the connection pools and the engine."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping


#: The families of counts by reason: requests dropped or not fetched, and inputs that were bad.
REASONS = ("failed:", "status:", "filtered:", "refused:", "skipped:", "malformed:", "robots:", "redirects:", "dropped:")


def reason_counts(snapshot: dict[str, int]) -> dict[str, int]:
    return {name: count for name, count in snapshot.items() if name.startswith(REASONS)}


class Stats:
    """Thread-safe named counters plus the crawl's clock.

    Names are plain strings so new subsystems can count without touching this class; names with a
    colon (``filtered:offsite``) group counts by reason (see ``REASONS``).
    """

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.started = time.monotonic()

    def inc(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._counts[name] += amount

    def merge(self, counts: Mapping[str, int]) -> None:
        """Add counts made elsewhere (a worker process's)."""
        with self._lock:
            self._counts.update(counts)

    def changes_since(self, earlier: Mapping[str, int]) -> tuple[dict[str, int], dict[str, int]]:
        """What changed since the ``earlier`` snapshot, and the snapshot now."""
        now = self.snapshot()
        return {name: count - earlier.get(name, 0) for name, count in now.items() if count != earlier.get(name, 0)}, now

    def get(self, name: str) -> int:
        with self._lock:
            return self._counts[name]

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def requests_per_connection(self) -> float:
        with self._lock:
            opened = self._counts["connections_opened"]
            return self._counts["http_requests"] / opened if opened else 0.0


class Once:
    """True the first time it is called, False ever after, whichever worker thread calls."""

    __slots__ = ("_called", "_lock")

    def __init__(self) -> None:
        self._called = False
        self._lock = threading.Lock()

    def __call__(self) -> bool:
        with self._lock:
            first, self._called = not self._called, True
            return first
