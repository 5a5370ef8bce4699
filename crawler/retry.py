"""Retry policy, built from tenacity's parts.

The fetcher is the only layer that retries (the connection pools' own retries are off), so the
attempt counts stored in the checkpoint are the number of times the server saw the request.
Each strategy here is a small object or function, testable as a pure function of a call state.
"""

from __future__ import annotations

import email.utils
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from .exceptions import (
    ConnectError,
    CrawlInterrupted,
    HTTPStatusError,
    TransportError,
)

TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive one is read the same way
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    if seconds < 0 and not value[0].isalpha():  # a negative delay is malformed; a past date means now
        return None
    return max(0.0, seconds)


def is_transient(error: BaseException, statuses: frozenset[int] = TRANSIENT_STATUSES) -> bool:
    """Whether ``error`` may go away if the same request is sent again.

    A request that may have reached the server is retried only if it is idempotent (by method, or
    because the request says so), since sending a POST twice may do its effect twice. A 429 is
    always safe: the server says it did not process the request.
    """
    if isinstance(error, HTTPStatusError):
        if error.status not in statuses:
            return False
        return error.status == 429 or error.request.is_idempotent
    if isinstance(error, ConnectError):
        return True
    if isinstance(error, TransportError):
        return error.request.is_idempotent
    return False


def retry_if_transient(statuses: frozenset[int] = TRANSIENT_STATUSES) -> retry_if_exception:
    return retry_if_exception(lambda error: is_transient(error, statuses))


class wait_retry_after(wait_base):
    """Wait as long as the server's ``Retry-After`` asks (up to ``cap``), else fall back to ``backoff``."""

    def __init__(self, backoff: wait_base, cap: float) -> None:
        self.backoff = backoff
        self.cap = cap

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        if isinstance(error, HTTPStatusError) and error.retry_after is not None:
            return min(error.retry_after, self.cap)
        return float(self.backoff(retry_state))


def interruptible_sleep(stop: threading.Event) -> Callable[[float], None]:
    """A sleep that ends at once, raising CrawlInterrupted, when the crawl is asked to stop."""

    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise CrawlInterrupted("shutdown requested during retry backoff")

    return sleep


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times to try, and how long to wait between tries."""

    attempts: int = 4
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    jitter: float = 0.5
    max_retry_after: float = 120.0
    statuses: frozenset[int] = TRANSIENT_STATUSES

    def retrying(self, stop: threading.Event, before_sleep: Callable[[RetryCallState], Any]) -> Retrying:
        return Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_retry_after(
                wait_exponential_jitter(
                    multiplier=self.backoff_initial, max=self.backoff_max, jitter=self.jitter
                ),
                cap=self.max_retry_after,
            ),
            retry=retry_if_transient(self.statuses),
            sleep=interruptible_sleep(stop),
            before_sleep=before_sleep,
            reraise=True,
        )
