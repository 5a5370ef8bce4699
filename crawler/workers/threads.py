"""Worker threads of this process, each with its own HTTP session (see ``SessionRegistry``)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from ..frontier.base import Completion, Lease
from ..processing import LeaseProcessor, Outcome
from ..stats import Once, Stats
from ..stopping import StopSignal
from . import Report, Take

logger = logging.getLogger(__name__)


class ThreadWorkers:
    """``count`` threads working on the leases of every spider in ``processors`` (by name)."""

    def __init__(
        self, processors: Mapping[str, LeaseProcessor], count: int, stop: StopSignal,
        *, sessions: Callable[[], int] = lambda: 0,
    ) -> None:
        self.processors = processors
        self.count = count
        self.stop_signal = stop
        self._sessions = sessions
        self._threads: list[threading.Thread] = []
        self._first_internal_error = Once()

    @property
    def sessions(self) -> int:
        return self._sessions()

    def start(self, take: Take, report: Report) -> None:
        self._threads = [
            threading.Thread(target=self._work, args=(take, report), name=f"crawler-worker-{n}", daemon=True)
            for n in range(self.count)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, *, wait: bool) -> None:
        # Without waiting, whatever still runs keeps its lease in flight for the next run to take
        # back; workers are daemon threads, so they cannot hold the process open.
        if wait:
            for thread in self._threads:
                thread.join()

    def _work(self, take: Take, report: Report) -> None:
        while (lease := take()) is not None:
            if self.stop_signal.graceful.is_set():
                report(lease, Outcome(None))
                continue
            processor = self.processors[lease.spider]
            try:
                outcome = processor.process(lease)
            except BaseException as error:  # noqa: BLE001 - a worker that dies would hold its lease forever
                outcome = Outcome(internal_error(lease, error, processor.stats, self._first_internal_error()))
            report(lease, outcome)


def internal_error(lease: Lease, error: BaseException, stats: Stats, first: bool) -> Completion:
    """A bug of ours, not the site's or the spider's: fail the request (so it is not retried into
    the same bug forever) and keep the worker alive."""
    for name in ("internal_errors", "failed", "failed:InternalError"):
        stats.inc(name)
    # The first with its traceback, for the bug report; the rest one line each.
    logger.error(
        "internal error (a bug in crawler) while processing %s: %r", lease.request.url, error, exc_info=first,
    )
    return Completion(lease, 0, f"internal error: {error!r}", "InternalError")
