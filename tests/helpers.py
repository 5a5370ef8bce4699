"""Small helpers shared by test modules (pytest puts this folder on sys.path)."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable


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
