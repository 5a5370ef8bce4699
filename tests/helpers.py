"""Small helpers shared by test modules (pytest puts this folder on sys.path)."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import requests

    from crawler.config import Config
    from crawler.practice import PracticeSite
    from crawler.runner import RunReport

TIMEOUT = 5  # every request to the practice site gets one, so a server bug fails fast instead of hanging


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.002)


def interrupt_when(condition: Callable[[], bool], timeout: float = 30.0) -> threading.Thread:
    """Send this process SIGINT (a real Ctrl-C) once ``condition()`` holds."""

    def watch() -> None:
        wait_until(condition, timeout)
        os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def in_thread(action: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=action, daemon=True)
    thread.start()
    return thread


def lease_from(frontier, limit: int) -> list:
    """Up to ``limit`` leases of every ready host (tests use one host, so: up to ``limit``)."""
    return frontier.lease({host: limit for host in frontier.ready_hosts()})


def site_get(http: requests.Session, site: PracticeSite, path: str, **kwargs: object) -> requests.Response:
    """GET a practice-site path, with a timeout unless the test gives its own."""
    kwargs.setdefault("timeout", TIMEOUT)
    return http.get(site.url + path, **kwargs)  # type: ignore[arg-type]


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Stop a crawl (a real Ctrl-C) that is still running after ``seconds``.

    A crawl that hangs must fail its test, not hang the suite: the crawl then returns
    interrupted. The watchdog is called off as soon as the crawl returns.
    """
    finished = threading.Event()

    def watch() -> None:
        if not finished.wait(seconds):
            os.kill(os.getpid(), signal.SIGINT)

    watchdog = threading.Thread(target=watch, daemon=True)
    watchdog.start()
    try:
        yield
    finally:
        finished.set()
        watchdog.join()


@dataclass(frozen=True)
class Crawled:
    """What a test crawl left: its report, the items of its output file, and its config."""

    report: RunReport
    items: list[dict[str, object]]
    config: Config | None = None

    @property
    def stats(self) -> dict[str, int]:
        return self.report.stats

    def item_for(self, url: str) -> dict[str, object]:
        [item] = [item for item in self.items if item["url"] == url]
        return item

    def urls(self) -> set[object]:
        return {item["url"] for item in self.items}
