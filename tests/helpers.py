"""Small helpers shared by test modules (pytest puts this folder on sys.path)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import requests

    from crawler.practice import PracticeSite

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
