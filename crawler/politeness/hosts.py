"""Per-host limits, kept as data per host, and the scheduler that hands work out under them.

Every host has its own row: how many of its requests may be in flight at once, the gap between
two request starts (fixed, randomised, or adapted to its latency), a pause a server asked for
with ``Retry-After``, and a floor from its robots.txt ``Crawl-delay``. Worker threads ask the
scheduler for the next request of *any* host that is ready; a host that is slow, paused or at
its limit just is not ready, so it never holds back the others and no worker sleeps on it.
"""

from __future__ import annotations

import heapq
import itertools
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from ..frontier.base import Lease


class Delay(Protocol):
    """How long one host waits between the starts of two requests."""

    @property
    def current(self) -> float:
        """The delay as it stands (before randomisation)."""

    def gap(self) -> float:
        """The wait before the next request's start, randomised if asked."""

    def observe(self, latency: float, ok: bool) -> None:
        """Learn from one response: how long it took, and whether it was a success."""


class FixedDelay:
    """The same delay (give or take ``jitter``) whatever the host does."""

    def __init__(self, delay: float, jitter: float = 0.0, rng: random.Random | None = None) -> None:
        self._delay = delay
        self._jitter = jitter
        self._rng = rng or random.Random()

    @property
    def current(self) -> float:
        return self._delay

    def gap(self) -> float:
        # Spread within delay × (1 ± jitter), so requests do not fall into a regular beat.
        if self._jitter and self._delay:
            return self._delay * self._rng.uniform(1 - self._jitter, 1 + self._jitter)
        return self._delay

    def observe(self, latency: float, ok: bool) -> None:
        pass


class AdaptiveDelay(FixedDelay):
    """A delay that follows the host's latency, as Scrapy's AutoThrottle does.

    Sending a request every ``latency / target_concurrency`` seconds keeps about
    ``target_concurrency`` requests at the host at once. Each response moves the delay halfway
    towards that; an error response never lowers it (errors often come back fast, and a host in
    trouble should not be asked more often). The delay stays within [minimum, maximum].
    """

    def __init__(
        self,
        start: float,
        minimum: float,
        maximum: float,
        target_concurrency: float,
        jitter: float = 0.0,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(min(max(start, minimum), maximum), jitter, rng)
        self.minimum = minimum
        self.maximum = maximum
        self.target_concurrency = target_concurrency

    def observe(self, latency: float, ok: bool) -> None:
        proposed = (self._delay + latency / self.target_concurrency) / 2
        if not ok and proposed < self._delay:
            return
        self._delay = min(max(proposed, self.minimum), self.maximum)


@dataclass(frozen=True, slots=True)
class HostLimits:
    """The limits every host starts with: ``concurrency`` requests in flight at most, and a
    fresh ``Delay`` from ``delay()`` (each host keeps its own, adaptive ones learn per host)."""

    concurrency: int
    delay: Callable[[], Delay]


@dataclass(frozen=True, slots=True)
class HostStatus:
    """One host's row, for the summary and ``crawler status``."""

    host: str
    requests: int
    errors: int
    in_flight: int
    waiting: int
    delay: float
    paused_until: float | None  # wall-clock time, if paused now


@dataclass(eq=False)
class _Host:
    name: str
    delay: Delay
    waiting: deque[Lease] = field(default_factory=deque)
    in_flight: int = 0
    next_start: float = 0.0  # monotonic time the next request may start
    paused_until: float = 0.0  # monotonic
    floor: float = 0.0  # robots.txt Crawl-delay
    # One request at a time until its robots.txt is read: its Crawl-delay must bind from the
    # second request on, not after a burst of them.
    held_back: bool = False
    last_start: float = 0.0
    requests: int = 0
    errors: int = 0
    scheduled: bool = False  # has an entry in the ready heap

    def ready_at(self) -> float:
        # A lease may carry a start of its own: a shared checkpoint spaces the host's requests
        # for every process of the crawl.
        first = self.waiting[0].not_before if self.waiting else 0.0
        return max(self.next_start, self.paused_until, first)


class HostScheduler:
    """Leases waiting per host, handed to worker threads as their hosts' limits allow.

    The engine puts leases in (no more per host than ``room()`` says) and workers ``take()``
    them; ``finished()`` gives a host's slot back. Thread-safe: one condition guards it all.
    """

    def __init__(
        self,
        limits: HostLimits,
        *,
        hold_back_new_hosts: bool = False,
        most_held: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self._hold_back_new_hosts = hold_back_new_hosts
        # Leases of one host this scheduler holds at most, waiting or in flight: by default
        # enough to keep its slots busy between two of the engine's rounds. Where the host's
        # slots are the whole crawl's (a checkpoint shared by processes), a lease waiting here
        # keeps a slot from another process's idle worker: then no more than this process can
        # start at once.
        self._most_held = 4 * limits.concurrency if most_held is None else most_held
        self._clock = clock
        self._hosts: dict[str, _Host] = {}
        # (time the host is ready, tie-breaker, host): hosts with waiting work and a free slot.
        self._ready: list[tuple[float, int, _Host]] = []
        self._order = itertools.count()
        self._condition = threading.Condition()
        self._closed = False

    # Worker side

    def take(self) -> Lease | None:
        """The next lease whose host may be sent a request now; blocks until there is one.
        None once the scheduler is closed."""
        with self._condition:
            while not self._closed:
                now = self._clock()
                while self._ready and self._ready[0][0] <= now:
                    _, _, host = heapq.heappop(self._ready)
                    host.scheduled = False
                    if not host.waiting or host.in_flight >= self._concurrency(host):
                        continue  # finished() or put() schedules it again
                    if (ready_at := host.ready_at()) > now:  # paused or slowed since
                        self._schedule(host, ready_at)
                        continue
                    lease = host.waiting.popleft()
                    host.in_flight += 1
                    host.last_start = now
                    host.next_start = now + max(host.delay.gap(), host.floor)
                    self._schedule_if_ready(host)
                    return lease
                self._condition.wait(self._ready[0][0] - now if self._ready else None)
            return None

    def finished(self, lease: Lease, *, latency: float | None, ok: bool) -> None:
        """A worker is done with ``lease``: its host has a free slot again. ``latency`` is how
        long its response took (None if no request was sent, e.g. refused by robots.txt)."""
        with self._condition:
            host = self._hosts[lease.host]
            host.in_flight -= 1
            if latency is not None:
                host.requests += 1
                host.errors += not ok
                host.delay.observe(latency, ok)
            if self._schedule_if_ready(host):
                self._condition.notify()

    def pause(self, name: str, seconds: float) -> None:
        """Send nothing to this host for ``seconds`` (a ``Retry-After``); other hosts go on."""
        with self._condition:
            host = self._host(name)
            host.paused_until = max(host.paused_until, self._clock() + seconds)

    def set_crawl_delay(self, name: str, seconds: float | None) -> None:
        """The host's robots.txt is read: from now on its delay is at least ``seconds`` (its
        ``Crawl-delay``, if any), and it gets its full concurrency."""
        # Said before every request to the host, and nearly always what is known already: then
        # the workers need not queue for the lock that every take and finish also wants. (A
        # host's entry is never removed, and its fields are read whole.)
        known = self._hosts.get(name)
        if known is not None and not known.held_back and known.floor == (seconds or 0.0):
            return
        with self._condition:
            host = self._host(name)
            host.floor = seconds or 0.0
            host.next_start = max(host.next_start, host.last_start + host.floor)
            if host.held_back:
                host.held_back = False
                if self._schedule_if_ready(host):
                    self._condition.notify()

    # Engine side

    def put(self, leases: Iterable[Lease]) -> None:
        with self._condition:
            for lease in leases:
                host = self._host(lease.host)
                host.waiting.append(lease)
                self._schedule_if_ready(host)
            self._condition.notify_all()

    def rooms(self, names: Iterable[str]) -> dict[str, int]:
        """How many more leases each host may have waiting: enough to keep its slots busy
        between two of the engine's rounds, none while it is paused."""
        cap = self._most_held
        now = self._clock()
        with self._condition:
            rooms = {}
            for name in names:
                host = self._hosts.get(name)
                if host is None:
                    rooms[name] = cap
                elif host.paused_until <= now:
                    rooms[name] = cap - len(host.waiting) - host.in_flight
            return rooms

    def drain(self, spider: str | None = None) -> list[Lease]:
        """Take back every lease not started yet (the crawl is stopping), or every one of
        ``spider``'s (it reached a limit)."""
        with self._condition:
            leases: list[Lease] = []
            for host in self._hosts.values():
                if spider is None:
                    leases.extend(host.waiting)
                    host.waiting.clear()
                else:
                    kept = deque(lease for lease in host.waiting if lease.spider != spider)
                    leases.extend(lease for lease in host.waiting if lease.spider == spider)
                    host.waiting = kept
            return leases

    def close(self) -> None:
        with self._condition:
            self._closed = True
            self._condition.notify_all()

    def hosts(self) -> list[HostStatus]:
        now, wall = self._clock(), time.time()
        with self._condition:
            return [
                HostStatus(
                    host.name,
                    host.requests,
                    host.errors,
                    host.in_flight,
                    len(host.waiting),
                    max(host.delay.current, host.floor),
                    wall + host.paused_until - now if host.paused_until > now else None,
                )
                for host in self._hosts.values()
            ]

    # Internals, called with the condition held

    def _host(self, name: str) -> _Host:
        host = self._hosts.get(name)
        if host is None:
            host = self._hosts[name] = _Host(name, self.limits.delay(), held_back=self._hold_back_new_hosts)
        return host

    def _concurrency(self, host: _Host) -> int:
        return 1 if host.held_back else self.limits.concurrency

    def _schedule_if_ready(self, host: _Host) -> bool:
        if host.scheduled or not host.waiting or host.in_flight >= self._concurrency(host):
            return False
        self._schedule(host, host.ready_at())
        return True

    def _schedule(self, host: _Host, when: float) -> None:
        host.scheduled = True
        heapq.heappush(self._ready, (when, next(self._order), host))
