"""The engine: runs one spider's crawl over a frontier, with workers (threads or processes).

The engine thread is the only one that talks to the frontier. It leases work host by host, as
much as each host's limits can use, into the host scheduler that workers take from, and commits
what they hand back in batches (one transaction for many pages), which is where a checkpointing
crawler's speed is won. It renews the leases it holds (their heartbeat) and reclaims expired ones.

The crawl is finished by one rule (``crawl_is_finished``), which ``crawler status`` applies to the
checkpoint on disk too; the engine adds only that it holds no lease itself.
"""

from __future__ import annotations

import json
import logging
import queue
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .admission import checked_requests
from .exceptions import SpiderError
from .exporters import OutputFile
from .frontier.base import RUN_STATS, SEEDED, Completion, Entry, Frontier, FrontierCounts, Lease, Limits, crawl_is_finished
from .politeness.hosts import HostScheduler
from .processing import Outcome
from .seen import SeenFilter
from .spider import Spider
from .stats import Stats, reason_counts
from .stopping import StopSignal
from .workers import Workers

logger = logging.getLogger(__name__)

_SEED_BATCH = 1000
_COMMIT_BATCH = 512
# After the first result arrives, wait this long for more before committing. Committing each page
# on its own means a dozen SQLite calls per page, each a GIL hand-off with every worker; workers
# do not starve meanwhile: the engine keeps the host scheduler topped up (see _lease_more).
_COMMIT_GATHER = 0.01
_OUTPUT_SYNC_INTERVAL = 1.0
# How long the engine waits when it holds nothing (all queued work waits for a retry time).
_IDLE_WAIT = 0.05


@dataclass(frozen=True, slots=True)
class CrawlResult:
    """Where one spider's crawl stands after a run: ``counts`` for the whole crawl (what
    ``crawler status`` reads), ``started`` as this run found it, so this run's share is the
    difference and the two can never disagree."""

    spider: str
    counts: FrontierCounts
    finished: bool
    started: FrontierCounts
    already_finished: bool = False
    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed_kinds: dict[str, int] = field(default_factory=dict)
    """The crawl's failed requests by error kind (``ReadTimeout``, ``InternalError``...)."""
    failed_statuses: dict[int, int] = field(default_factory=dict)
    """The crawl's requests failed by an HTTP status, by status."""
    reasons: dict[str, int] = field(default_factory=dict)
    """Counts by reason (``filtered:offsite``...) over every run of the crawl."""


class Crawl:
    """One spider's crawl, from its start requests (or checkpoint) to finished or stopped."""

    def __init__(
        self,
        spider: Spider,
        frontier: Frontier,
        workers: Workers,
        output: OutputFile,
        stats: Stats,
        *,
        scheduler: HostScheduler,
        concurrency: int,
        shutdown_grace: float,
        stop: StopSignal,
        limits: Limits = Limits(),
        seen: SeenFilter | None = None,
        lease_time: float = 60.0,
    ) -> None:
        self.spider = spider
        self.frontier = frontier
        self.workers = workers
        self.output = output
        self.stats = stats
        self.scheduler = scheduler
        self.concurrency = concurrency
        self.shutdown_grace = shutdown_grace
        self.stop = stop
        self.limits = limits
        self.seen = seen if seen is not None else SeenFilter()
        # Renewed well before they run out: a late heartbeat must not lose the leases.
        self._renew_every = lease_time / 3
        self.counts = self._started = frontier.counts()
        self._results: queue.SimpleQueue[tuple[Lease, Completion | None]] = queue.SimpleQueue()
        # A bound on all leases out: waiting in the scheduler, being worked on, or done and
        # awaiting commit.
        self._max_held = 8 * concurrency
        # Leases handed to the scheduler and not yet come back, by entry.
        self._out: dict[int, Lease] = {}
        self._seeded = frontier.get_state(SEEDED) is not None
        self._stats_at_start = stats.snapshot()
        self._earlier_runs = previous_run_stats(frontier)
        # The per-host table goes on from where earlier runs left it.
        scheduler.carry_over(
            {host: (row["requests"], row["errors"]) for host, row in self._earlier_runs.get("hosts", {}).items()}
        )

    def seed(self) -> None:
        """Queue the start requests, once per crawl (a resumed crawl does not revisit them)."""
        if self._seeded:
            return
        batch: list[Entry] = []
        name = self.spider.name
        try:
            for request in checked_requests(self.spider.start_requests(), self.stats, name):
                batch.append(Entry.of(name, request, 0))
                if len(batch) >= _SEED_BATCH:
                    self._add(batch)
                    batch.clear()
        except Exception as error:  # the spider's own code: without its start requests there is no crawl
            self._add(batch)  # kept; the next run seeds again and dedupe drops these
            raise SpiderError(name, "start_requests", f"{type(error).__name__}: {error}") from error
        self._add(batch)
        # Set after the adds: if the process dies in between, the next run adds them again and
        # dedupe drops the ones already there.
        self.frontier.set_state(SEEDED, "1")
        self._seeded = True
        self.counts = self.frontier.counts()

    def _add(self, entries: list[Entry]) -> None:
        self.frontier.add(entry for entry in entries if entry.fingerprint not in self.seen)
        self.seen.committed(entry.fingerprint for entry in entries)

    @property
    def _held(self) -> int:
        return len(self._out)

    def is_finished(self) -> bool:
        return self._held == 0 and crawl_is_finished(self._seeded, self.frontier.counts(), self.limits)

    def run(self) -> CrawlResult:
        if self.is_finished():
            self.output.sync()
            counts = self.frontier.counts()
            return CrawlResult(
                self.spider.name, counts, finished=True, started=counts, already_finished=True,
                failed_kinds=self.frontier.failed_kinds(), failed_statuses=self.frontier.failed_statuses(),
                reasons=self.reasons(),
            )
        self.seed()
        self.workers.start(self.scheduler.take, self._report)
        loop_ended = False
        try:
            self._loop()
            loop_ended = True
        finally:
            # After a finished crawl the workers are idle and stop at once. After a stop or an
            # error, whatever still runs keeps its lease in flight for the next run to take back.
            self.scheduler.close()
            self.workers.stop(wait=loop_ended and not self.stop.graceful.is_set())
            if loop_ended:  # after a checkpoint or disk error, writing more would fail the same way
                self.output.sync()
                self.save_run_stats()
            self.counts = self.frontier.counts()
        return CrawlResult(
            self.spider.name, self.counts, finished=self.is_finished(), started=self._started,
            hosts=self.host_rows(), failed_kinds=self.frontier.failed_kinds(),
            failed_statuses=self.frontier.failed_statuses(), reasons=self.reasons(),
        )

    def save_run_stats(self) -> None:
        """Record this spider's per-host table and counts by reason (with earlier runs')."""
        self.frontier.set_state(RUN_STATS, json.dumps({"counts": self.reasons(), "hosts": self.host_rows()}))

    def reasons(self) -> dict[str, int]:
        """Counts by reason over every run: earlier runs' and this one's."""
        counts = Counter(self._earlier_runs.get("counts", {}))
        start = self._stats_at_start
        for name, number in reason_counts(self.stats.snapshot()).items():
            counts[name] += number - start.get(name, 0)
        return dict(counts)

    def host_rows(self) -> dict[str, dict[str, Any]]:
        """The per-host table: requests and errors (over all runs), delay, paused-until."""
        return {
            status.host: {
                "requests": status.requests,
                "errors": status.errors,
                "delay": round(status.delay, 3),
                "paused_until": status.paused_until,
            }
            for status in self.scheduler.hosts()
        }

    def _report(self, lease: Lease, outcome: Outcome) -> None:
        """From a worker: the host gets its slot back, the completion waits for the next commit."""
        self.scheduler.finished(lease, latency=outcome.latency, ok=outcome.ok)
        self._results.put((lease, outcome.completion))

    def _loop(self) -> None:
        last_sync = last_renewal = time.monotonic()
        deadline: float | None = None
        while True:
            if self.stop.graceful.is_set():
                if deadline is None:
                    deadline = time.monotonic() + self.shutdown_grace
                    self._release_unstarted()
                if self.stop.immediate.is_set() or self._held == 0 or time.monotonic() >= deadline:
                    return
            else:
                self._lease_more()
            self._commit(self._collect())
            now = time.monotonic()
            if now - last_renewal >= self._renew_every:
                self._heartbeat()
                last_renewal = now
            if now - last_sync >= _OUTPUT_SYNC_INTERVAL:
                self.output.sync()
                self.save_run_stats()
                last_sync = now
            if self.is_finished():
                return

    def _lease_more(self) -> None:
        """Top up each ready host with as much work as its limits can use, within the crawl's
        bounds. A host that is paused or at its limit gets none, so it never crowds out others."""
        counts = self.frontier.counts()
        if self.limits.reached(counts):
            # Not sent yet, so not sent at all: only what is in flight may still add items.
            self._release_unstarted()
            return
        budget = self._max_held - self._held
        if (pages_left := self.limits.pages_left(counts)) is not None:
            budget = min(budget, pages_left)
        if budget <= 0:
            return
        ready = self.frontier.ready_hosts()
        if not ready:
            return
        rooms = self.scheduler.rooms(ready)
        wants: dict[str, int] = {}
        # The least busy hosts first, so a small budget is shared instead of spent on one host.
        for host, room in sorted(rooms.items(), key=lambda entry: -entry[1]) if len(rooms) > 1 else rooms.items():
            if (want := min(room, ready[host], budget)) > 0:
                wants[host] = want
                budget -= want
                if not budget:
                    break
        if wants:
            leases = self.frontier.lease(wants)
            self._out.update((lease.entry, lease) for lease in leases)
            self.scheduler.put(leases)

    def _heartbeat(self) -> None:
        """Renew every lease out (so work that runs long keeps it), and queue again whatever
        anyone let expire."""
        if (held := len(self._out)) and (renewed := self.frontier.renew(self._out.values())) < held:
            logger.warning("%d of this crawl's leases had expired before they were renewed", held - renewed)
        if reclaimed := self.frontier.reclaim_expired():
            self.stats.inc("leases_reclaimed", reclaimed)
            logger.warning("%d expired leases were queued again", reclaimed)

    def _release_unstarted(self) -> None:
        unstarted = self.scheduler.drain()
        self._count_stale(self.frontier.release(unstarted))
        for lease in unstarted:
            del self._out[lease.entry]

    def _count_stale(self, stale: int) -> None:
        if stale:
            # The lease expired and was reclaimed while this crawl worked on it: whoever holds
            # it now commits the request, so the result here must not be.
            self.stats.inc("stale_completions", stale)
            logger.warning("%d results came back after their leases had expired; they were dropped", stale)

    def _collect(self) -> list[tuple[Lease, Completion | None]]:
        if self._held == 0:
            # Nothing out: what is queued waits for a retry time (or the crawl is ending).
            self.stop.graceful.wait(_IDLE_WAIT)
            return []
        try:
            batch = [self._results.get(timeout=0.1)]
        except queue.Empty:
            return []
        if self._results.qsize() < self.concurrency:
            time.sleep(_COMMIT_GATHER)
        while len(batch) < _COMMIT_BATCH:
            try:
                batch.append(self._results.get_nowait())
            except queue.Empty:
                break
        return batch

    def _commit(self, batch: list[tuple[Lease, Completion | None]]) -> None:
        if not batch:
            return
        completions = [completion for _, completion in batch if completion is not None]
        released = [lease for lease, completion in batch if completion is None]
        committed = self.frontier.complete(completions)
        self._count_stale(committed.stale + self.frontier.release(released))
        if not committed.stale:
            # Only what is committed is remembered as seen (see SeenFilter).
            self.seen.committed(child.fingerprint for completion in completions for child in completion.children)
        for lease, _ in batch:
            del self._out[lease.entry]
        self.counts = self.frontier.counts()


def previous_run_stats(frontier: Frontier) -> dict[str, Any]:
    """What earlier runs of this spider recorded with ``save_run_stats``."""
    text = frontier.get_state(RUN_STATS)
    return json.loads(text) if text else {}
