"""The engine: runs one spider's crawl with a pool of worker threads over a frontier.

The engine thread is the only one that talks to the frontier. It leases work host by host, as
much as each host's limits can use, into the host scheduler that worker threads take from, and
commits what they hand back in batches (one transaction for many pages), which is where a
checkpointing crawler's speed is won.

The crawl is finished by one rule (``crawl_is_finished``), which ``crawler status`` applies to the
checkpoint on disk too; the engine adds only that it holds no lease itself.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .exceptions import SpiderError
from .exporters import OutputFile
from .frontier.base import RUN_STATS, SEEDED, Completion, Frontier, FrontierCounts, Lease, Limits, Pending, crawl_is_finished
from .politeness.hosts import HostScheduler
from .spider import Spider
from .stats import Stats, reason_counts
from .stopping import StopSignal
from .worker import LeaseProcessor, Once, checked_requests

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
        processor: LeaseProcessor,
        output: OutputFile,
        stats: Stats,
        *,
        scheduler: HostScheduler,
        workers: int,
        shutdown_grace: float,
        stop: StopSignal,
        limits: Limits = Limits(),
    ) -> None:
        self.spider = spider
        self.frontier = frontier
        self.processor = processor
        self.output = output
        self.stats = stats
        self.scheduler = scheduler
        self.workers = workers
        self.shutdown_grace = shutdown_grace
        self.stop = stop
        self.limits = limits
        self.counts = self._started = frontier.counts()
        self._results: queue.SimpleQueue[tuple[Lease, Completion | None]] = queue.SimpleQueue()
        # A bound on all leases out: waiting in the scheduler, being worked on, or done and
        # awaiting commit.
        self._max_held = 8 * workers
        self._held = 0  # leases handed to the scheduler and not yet come back
        self._seeded = frontier.get_state(SEEDED) is not None
        self._first_internal_error = Once()
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
        batch: list[Pending] = []
        try:
            for request in checked_requests(self.spider.start_requests(), self.stats, self.spider.name):
                batch.append(Pending(request, 0))
                if len(batch) >= _SEED_BATCH:
                    self.frontier.add(batch)
                    batch.clear()
        except Exception as error:  # the spider's own code: without its start requests there is no crawl
            self.frontier.add(batch)  # kept; the next run seeds again and dedupe drops these
            raise SpiderError(self.spider.name, "start_requests", f"{type(error).__name__}: {error}") from error
        self.frontier.add(batch)
        # Set after the adds: if the process dies in between, the next run adds them again and
        # dedupe drops the ones already there.
        self.frontier.set_state(SEEDED, "1")
        self._seeded = True
        self.counts = self.frontier.counts()

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
        threads = [
            threading.Thread(target=self._work, name=f"crawler-worker-{n}", daemon=True)
            for n in range(self.workers)
        ]
        for thread in threads:
            thread.start()
        loop_ended = False
        try:
            self._loop()
            loop_ended = True
        finally:
            # After a finished crawl the workers are idle and exit at once. After a stop or an
            # error, whatever still runs keeps its lease in flight for the next run to take
            # back; workers are daemon threads, so they cannot hold the process open.
            self._stop_workers(threads, wait=loop_ended and not self.stop.graceful.is_set())
            if loop_ended:  # after a checkpoint or disk error, writing more would fail the same way
                self.output.sync()
                self.save_run_stats()
            self.counts = self.frontier.counts()
        return CrawlResult(
            self.spider.name, self.counts, finished=self.is_finished(), started=self._started,
            hosts=self.host_rows(), failed_kinds=self.frontier.failed_kinds(),
            failed_statuses=self.frontier.failed_statuses(), reasons=self.reasons(),
        )

    def _stop_workers(self, threads: list[threading.Thread], *, wait: bool) -> None:
        self.scheduler.close()
        if wait:
            for thread in threads:
                thread.join()

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

    def _work(self) -> None:
        while (lease := self.scheduler.take()) is not None:
            if self.stop.graceful.is_set():
                self.scheduler.finished(lease, latency=None, ok=True)
                self._results.put((lease, None))
                continue
            try:
                completion = self.processor.process(lease)
            except BaseException as error:  # noqa: BLE001 - a worker that dies would hold its lease forever
                # A bug of ours, not the site's or the spider's: fail the request (so it is not
                # retried into the same bug forever) and keep the worker alive.
                for name in ("internal_errors", "failed", "failed:InternalError"):
                    self.stats.inc(name)
                # The first with its traceback, for the bug report; the rest one line each.
                logger.error(
                    "internal error (a bug in crawler) while processing %s: %r", lease.request.url, error,
                    exc_info=self._first_internal_error(),
                )
                completion = Completion(lease, 0, f"internal error: {error!r}", "InternalError")
            self._results.put((lease, completion))

    def _loop(self) -> None:
        last_sync = time.monotonic()
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
            self.scheduler.put(leases)
            self._held += len(leases)

    def _release_unstarted(self) -> None:
        unstarted = self.scheduler.drain()
        self.frontier.release(unstarted)
        self._held -= len(unstarted)

    def _collect(self) -> list[tuple[Lease, Completion | None]]:
        if self._held == 0:
            # Nothing out: what is queued waits for a retry time (or the crawl is ending).
            self.stop.graceful.wait(_IDLE_WAIT)
            return []
        try:
            batch = [self._results.get(timeout=0.1)]
        except queue.Empty:
            return []
        if self._results.qsize() < self.workers:
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
        self.frontier.complete(completions)
        self.frontier.release(released)
        self._held -= len(batch)
        self.counts = self.frontier.counts()


def previous_run_stats(frontier: Frontier) -> dict[str, Any]:
    """What earlier runs of this spider recorded with ``save_run_stats``."""
    text = frontier.get_state(RUN_STATS)
    return json.loads(text) if text else {}
