"""The engine: runs one spider's crawl with a pool of worker threads over a frontier.

The engine thread is the only one that talks to the frontier. It leases work into a short queue
that worker threads drain, and commits what they hand back in batches (one transaction for many
pages), which is where a checkpointing crawler's speed is won.

The crawl is finished by one rule (``crawl_is_finished``), which ``crawler status`` applies to the
checkpoint on disk too; the engine adds only that it holds no lease itself.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass

from .exporters import OutputFile
from .frontier.base import SEEDED, Completion, Frontier, FrontierCounts, Lease, Pending, crawl_is_finished
from .spider import Spider
from .stats import Stats
from .stopping import StopSignal
from .worker import LeaseProcessor, checked_requests

logger = logging.getLogger(__name__)

_SEED_BATCH = 1000
_COMMIT_BATCH = 512
# After the first result arrives, wait this long for more before committing. Committing each page
# on its own means a dozen SQLite calls per page, each a GIL hand-off with every worker; workers
# do not starve meanwhile: the engine keeps their task queue topped up (see _lease_more).
_COMMIT_GATHER = 0.01
_OUTPUT_SYNC_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class CrawlResult:
    spider: str
    counts: FrontierCounts
    finished: bool
    already_finished: bool = False


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
        workers: int,
        shutdown_grace: float,
        stop: StopSignal,
    ) -> None:
        self.spider = spider
        self.frontier = frontier
        self.processor = processor
        self.output = output
        self.stats = stats
        self.workers = workers
        self.shutdown_grace = shutdown_grace
        self.stop = stop
        self.counts = frontier.counts()
        self._tasks: queue.SimpleQueue[Lease | None] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[tuple[Lease, Completion | None]] = queue.SimpleQueue()
        # Tasks kept waiting for the workers, so none waits on the engine between two pages; and a
        # bound on all leases out (waiting, being worked on, or done and awaiting commit).
        self._queue_depth = 4 * workers
        self._max_held = 8 * workers
        self._held = 0  # leases handed to workers and not yet come back
        self._seeded = frontier.get_state(SEEDED) is not None

    def seed(self) -> None:
        """Queue the start requests, once per crawl (a resumed crawl does not revisit them)."""
        if self._seeded:
            return
        batch: list[Pending] = []
        for request in checked_requests(self.spider.start_requests(), self.stats):
            batch.append(Pending(request, 0))
            if len(batch) >= _SEED_BATCH:
                self.frontier.add(batch)
                batch.clear()
        self.frontier.add(batch)
        # Set after the adds: if the process dies in between, the next run adds them again and
        # dedupe drops the ones already there.
        self.frontier.set_state(SEEDED, "1")
        self._seeded = True
        self.counts = self.frontier.counts()

    def is_finished(self) -> bool:
        return self._held == 0 and crawl_is_finished(self._seeded, self.frontier.counts())

    def run(self) -> CrawlResult:
        if self.is_finished():
            self.output.sync()
            return CrawlResult(self.spider.name, self.frontier.counts(), finished=True, already_finished=True)
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
            self.counts = self.frontier.counts()
        return CrawlResult(self.spider.name, self.counts, finished=self.is_finished())

    def _stop_workers(self, threads: list[threading.Thread], *, wait: bool) -> None:
        for _ in threads:
            self._tasks.put(None)
        if wait:
            for thread in threads:
                thread.join()

    def _work(self) -> None:
        while (lease := self._tasks.get()) is not None:
            if self.stop.graceful.is_set():
                self._results.put((lease, None))
                continue
            try:
                completion = self.processor.process(lease)
            except BaseException as error:  # noqa: BLE001 - a worker that dies would hold its lease forever
                # A bug of ours, not the site's or the spider's: fail the request (so it is not
                # retried into the same bug forever) and keep the worker alive.
                self.stats.inc("internal_errors")
                logger.exception("internal error while processing %s", lease.request.url)
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
                last_sync = now
            if self.is_finished():
                return

    def _lease_more(self) -> None:
        # Top up what the workers can take next. Results still waiting for the next commit do
        # not count against it: counting them left the workers idle while the engine caught up.
        want = min(self._queue_depth - self._tasks.qsize(), self._max_held - self._held)
        if want > 0:
            for lease in self.frontier.lease(want):
                self._tasks.put(lease)
                self._held += 1

    def _release_unstarted(self) -> None:
        unstarted: list[Lease] = []
        while True:
            try:
                lease = self._tasks.get_nowait()
            except queue.Empty:
                break
            if lease is not None:
                unstarted.append(lease)
        self.frontier.release(unstarted)
        self._held -= len(unstarted)

    def _collect(self) -> list[tuple[Lease, Completion | None]]:
        if self._held == 0:
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
