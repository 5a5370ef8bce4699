"""How a crawl is told to stop, by a signal or by a failure that makes going on pointless."""

from __future__ import annotations

import threading

from .exceptions import CrawlerError


class StopSignal:
    """``graceful``: finish what is in flight, take nothing new. ``immediate``: stop at once.

    ``error`` is set when the crawl stops because it cannot go on (a login that fails); the run
    then reports it instead of "stopped".
    """

    def __init__(self) -> None:
        self.graceful = threading.Event()
        self.immediate = threading.Event()
        self.error: CrawlerError | None = None

    def request(self) -> None:
        """First call: stop gracefully. Second call: stop at once."""
        if self.graceful.is_set():
            self.immediate.set()
        self.graceful.set()

    def fail(self, error: CrawlerError) -> None:
        """Stop gracefully because of ``error`` (the first one is kept)."""
        if self.error is None:
            self.error = error
        self.graceful.set()
