"""The engine: runs the crawls of a config's spiders at once, over their frontiers, with one set
of workers (threads or processes) and one per-host scheduler for them all.

The engine thread is the only one that talks to the frontiers. It leases work host by host, as
much as each host's limits can use, into the host scheduler that workers take from, and commits
what they hand back in batches (one transaction for many pages), which is where a checkpointing
crawler's speed is won. It renews the leases it holds (their heartbeat) and reclaims expired ones.
Spiders share the workers and the hosts' limits: two spiders on one site together keep to its
concurrency and delay.

A spider's crawl is finished by one rule (``crawl_is_finished``), which ``crawler status``
applies to the checkpoint on disk too; the engine adds only that it holds no lease of it.
"""

from __future__ import annotations

import json
import logging
import queue
import time
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .admission import checked_requests
from .exceptions import SpiderError
from .delivery import ItemFeed
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
COMMIT_GATHER = 0.01
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
    """One spider's crawl, from its start requests (or checkpoint) to finished or stopped: its
    frontier, output and limits, the leases it has out, and its own counts (``stats``)."""

    def __init__(
        self,
        spider: Spider,
        frontier: Frontier,
        output: ItemFeed,
        stats: Stats,
        *,
        limits: Limits = Limits(),
        seen: SeenFilter | None = None,
    ) -> None:
        self.spider = spider
        self.name = spider.name
        self.frontier = frontier
        self.output = output
        self.stats = stats
        self.limits = limits
        self.seen = seen if seen is not None else SeenFilter()
        self.counts = self.started = frontier.counts()
        self.already_finished = False
        # Leases handed to the scheduler and not yet come back, by key (an entry leased again after
        # its lease expired is another lease).
        self.out: dict[tuple[int, int], Lease] = {}
        self._seeded = frontier.get_state(SEEDED) is not None
        self._stats_at_start = stats.snapshot()
        self._earlier_runs = previous_run_stats(frontier)
        # The per-host table goes on from where earlier runs left it.
        self._host_requests: Counter[str] = Counter()
        self._host_errors: Counter[str] = Counter()
        for host, row in self._earlier_runs.get("hosts", {}).items():
            self._host_requests[host], self._host_errors[host] = row["requests"], row["errors"]

    def seed(self) -> None:
        """Queue the start requests, once per crawl (a resumed crawl does not revisit them)."""
        if self._seeded:
            return
        batch: list[Entry] = []
        try:
            for request in checked_requests(self.spider.start_requests(), self.stats, self.name):
                batch.append(Entry.of(self.name, request, 0))
                if len(batch) >= _SEED_BATCH:
                    self._add(batch)
                    batch.clear()
        except Exception as error:  # the spider's own code: without its start requests there is no crawl
            self._add(batch)  # kept; the next run seeds again and dedupe drops these
            raise SpiderError(self.name, "start_requests", f"{type(error).__name__}: {error}") from error
        self._add(batch)
        # Set after the adds: if the process dies in between, the next run adds them again and
        # dedupe drops the ones already there.
        self.frontier.set_state(SEEDED, "1")
        self._seeded = True
        self.counts = self.frontier.counts()

    def _add(self, entries: list[Entry]) -> None:
        self.frontier.add(entry for entry in entries if entry.fingerprint not in self.seen)
        self.seen.committed(entry.fingerprint for entry in entries)

    def is_finished(self) -> bool:
        return not self.out and crawl_is_finished(self._seeded, self.frontier.counts(), self.limits)

    def lease(self, wants: Mapping[str, int]) -> list[Lease]:
        """Lease work of these hosts (see ``Frontier.lease``), recorded as out."""
        leases = self.frontier.lease(wants)
        self.out.update((lease.key, lease) for lease in leases)
        return leases

    def heard(self, lease: Lease, outcome: Outcome) -> None:
        """A worker is done with one of this crawl's leases: count it in the per-host table."""
        if outcome.latency is not None:
            self._host_requests[lease.host] += 1
            self._host_errors[lease.host] += not outcome.ok

    def commit(self, batch: Sequence[tuple[Lease, Completion | None]]) -> None:
        completions = [completion for _, completion in batch if completion is not None]
        released = [lease for lease, completion in batch if completion is None]
        committed = self.frontier.complete(completions)
        self.count_stale(committed.stale + self.frontier.release(released))
        if not committed.stale:
            # Only what is committed is remembered as seen (see SeenFilter).
            self.seen.committed(child.fingerprint for completion in completions for child in completion.children)
        for lease, _ in batch:
            del self.out[lease.key]
        self.counts = self.frontier.counts()

    def release(self, leases: Sequence[Lease]) -> None:
        """Put leases that were never started back in the queue."""
        self.count_stale(self.frontier.release(leases))
        for lease in leases:
            del self.out[lease.key]

    def heartbeat(self) -> None:
        """Renew every lease out (so work that runs long keeps it), and queue again whatever
        anyone let expire."""
        if (held := len(self.out)) and (renewed := self.frontier.renew(self.out.values())) < held:
            logger.warning("%s: %d leases had expired before they were renewed", self.name, held - renewed)
        if reclaimed := self.frontier.reclaim_expired():
            self.stats.inc("leases_reclaimed", reclaimed)
            logger.warning("%s: %d expired leases were queued again", self.name, reclaimed)

    def count_stale(self, stale: int) -> None:
        if stale:
            # The lease expired and was reclaimed while this crawl worked on it: whoever holds
            # it now commits the request, so the result here must not be.
            self.stats.inc("stale_completions", stale)
            logger.warning("%s: %d results came back after their leases had expired; they were dropped", self.name, stale)

    def sync(self, scheduler: HostScheduler) -> None:
        """Bring the output file up to the checkpoint, and record the per-host table and counts."""
        self.output.sync()
        self.frontier.set_state(RUN_STATS, json.dumps({"counts": self.reasons(), "hosts": self.host_rows(scheduler)}))

    def reasons(self) -> dict[str, int]:
        """Counts by reason over every run: earlier runs' and this one's."""
        counts = Counter(self._earlier_runs.get("counts", {}))
        start = self._stats_at_start
        for name, number in reason_counts(self.stats.snapshot()).items():
            counts[name] += number - start.get(name, 0)
        return dict(counts)

    def host_rows(self, scheduler: HostScheduler) -> dict[str, dict[str, Any]]:
        """The per-host table: this spider's requests and errors (over all runs), and each host's
        delay and pause, which all spiders share."""
        shared = {status.host: status for status in scheduler.hosts()}
        rows = {}
        for host, requests in self._host_requests.items():
            status = shared.get(host)
            rows[host] = {
                "requests": requests,
                "errors": self._host_errors[host],
                "delay": round(status.delay, 3) if status else 0.0,
                "paused_until": status.paused_until if status else None,
            }
        return rows

    def result(self, scheduler: HostScheduler) -> CrawlResult:
        self.counts = self.frontier.counts()
        started = self.counts if self.already_finished else self.started
        return CrawlResult(
            self.name, self.counts, finished=self.is_finished(), started=started,
            already_finished=self.already_finished, hosts={} if self.already_finished else self.host_rows(scheduler),
            failed_kinds=self.frontier.failed_kinds(), failed_statuses=self.frontier.failed_statuses(),
            reasons=self.reasons(),
        )


class Engine:
    """Runs crawls at once, sharing ``workers`` and the host ``scheduler``."""

    def __init__(
        self,
        crawls: Sequence[Crawl],
        workers: Workers,
        *,
        scheduler: HostScheduler,
        concurrency: int,
        shutdown_grace: float,
        stop: StopSignal,
        lease_time: float = 60.0,
        commit_gather: float = COMMIT_GATHER,
    ) -> None:
        self.crawls = list(crawls)
        self.commit_gather = commit_gather
        self.workers = workers
        self.scheduler = scheduler
        self.concurrency = concurrency
        self.shutdown_grace = shutdown_grace
        self.stop = stop
        self._by_name = {crawl.name: crawl for crawl in self.crawls}
        self._active: list[Crawl] = []
        self._results: queue.SimpleQueue[tuple[Lease, Completion | None]] = queue.SimpleQueue()
        # A bound on all leases out: waiting in the scheduler, being worked on, or done and
        # awaiting commit.
        self._max_held = 8 * concurrency
        # Renewed well before they run out: a late heartbeat must not lose the leases.
        self._renew_every = lease_time / 3
        self._turn = 0  # which crawl is offered the lease budget first, in turn

    def run(self) -> list[CrawlResult]:
        for crawl in self.crawls:
            if crawl.is_finished():
                crawl.already_finished = True
                crawl.output.sync()
        self._active = [crawl for crawl in self.crawls if not crawl.already_finished]
        if self._active:
            self._crawl()
        return [crawl.result(self.scheduler) for crawl in self.crawls]

    def _crawl(self) -> None:
        for crawl in self._active:
            crawl.seed()
        self.workers.start(self.scheduler.take, self._report)
        loop_ended = False
        try:
            self._loop()
            loop_ended = True
        finally:
            # After finished crawls the workers are idle and stop at once. After a stop or an
            # error, whatever still runs keeps its lease in flight for the next run to take back.
            self.scheduler.close()
            self.workers.stop(wait=loop_ended and not self.stop.graceful.is_set())
            if loop_ended:  # after a checkpoint or disk error, writing more would fail the same way
                for crawl in self._active:
                    crawl.sync(self.scheduler)

    @property
    def _held(self) -> int:
        return sum(len(crawl.out) for crawl in self._active)

    def _report(self, lease: Lease, outcome: Outcome) -> None:
        """From a worker: the host gets its slot back, the completion waits for the next commit."""
        self.scheduler.finished(lease, latency=outcome.latency, ok=outcome.ok)
        self._by_name[lease.spider].heard(lease, outcome)
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
                for crawl in self._active:
                    crawl.heartbeat()
                last_renewal = now
            if now - last_sync >= _OUTPUT_SYNC_INTERVAL:
                for crawl in self._active:
                    crawl.sync(self.scheduler)
                last_sync = now
            for crawl in [crawl for crawl in self._active if crawl.is_finished()]:
                crawl.sync(self.scheduler)
                self._active.remove(crawl)
            if not self._active:
                return

    def _lease_more(self) -> None:
        """Top up each ready host with as much work as its limits can use, within the crawl's
        bounds, the crawls taking turns at the budget. A host that is paused or at its limit
        gets none, so it never crowds out others."""
        budget = self._max_held - self._held
        if budget <= 0:
            return
        self._turn = (self._turn + 1) % len(self._active)
        offered = self._active[self._turn :] + self._active[: self._turn]
        ready: dict[Crawl, tuple[dict[str, int], int | None]] = {}  # its ready hosts, pages left
        for crawl in offered:
            counts = crawl.frontier.counts()
            if crawl.limits.reached(counts):
                # Not sent yet, so not sent at all: only what is in flight may still add items.
                self._release_unstarted(crawl)
            elif hosts := crawl.frontier.ready_hosts():
                ready[crawl] = hosts, crawl.limits.pages_left(counts)
        if not ready:
            return
        rooms = self.scheduler.rooms({host for hosts, _ in ready.values() for host in hosts})
        for crawl, (hosts, pages_left) in ready.items():
            own_budget = budget if pages_left is None else min(budget, pages_left)
            wants: dict[str, int] = {}
            # The least busy hosts first, so a small budget is shared instead of spent on one host.
            for host in sorted(hosts, key=lambda name: -rooms.get(name, 0)) if len(hosts) > 1 else hosts:
                if (want := min(rooms.get(host, 0), hosts[host], own_budget)) > 0:
                    wants[host] = want
                    own_budget -= want
                    if not own_budget:
                        break
            if wants:
                leases = crawl.lease(wants)
                self.scheduler.put(leases)
                budget -= len(leases)
                for lease in leases:
                    rooms[lease.host] -= 1
            if budget <= 0:
                return

    def _release_unstarted(self, crawl: Crawl | None = None) -> None:
        """Take back leases not started yet: every crawl's, or one crawl's."""
        unstarted = self.scheduler.drain(None if crawl is None else crawl.name)
        by_crawl: defaultdict[str, list[Lease]] = defaultdict(list)
        for lease in unstarted:
            by_crawl[lease.spider].append(lease)
        for name, leases in by_crawl.items():
            self._by_name[name].release(leases)

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
            time.sleep(self.commit_gather)
        while len(batch) < _COMMIT_BATCH:
            try:
                batch.append(self._results.get_nowait())
            except queue.Empty:
                break
        return batch

    def _commit(self, batch: list[tuple[Lease, Completion | None]]) -> None:
        by_crawl: defaultdict[str, list[tuple[Lease, Completion | None]]] = defaultdict(list)
        for lease, completion in batch:
            by_crawl[lease.spider].append((lease, completion))
        for name, results in by_crawl.items():
            self._by_name[name].commit(results)


def previous_run_stats(frontier: Frontier) -> dict[str, Any]:
    """What earlier runs of this spider recorded (see ``Crawl.sync``)."""
    text = frontier.get_state(RUN_STATS)
    return json.loads(text) if text else {}
