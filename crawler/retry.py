"""Retry policy, built from tenacity's parts.

``RetryPolicy`` is the only place that decides retries (the connection pools' own retries are
off, and a fetch is one attempt), so the attempt counts stored in the checkpoint are the number
of times the server saw the request.
Each strategy here is a small object or function, testable as a pure function of a call state.
"""

from __future__ import annotations

import email.utils
import math
import time
from dataclasses import dataclass, field

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from .exceptions import ConnectError, HTTPStatusError, TransportError

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


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many times to try, and how long to wait between tries.

    The decisions are tenacity's strategies (stop, wait, retry); the waiting is not. A worker
    thread never sleeps on a retry: the engine puts the request back in the frontier with a
    not-before time and the worker moves on to other requests, so one slow or rate-limited host
    cannot tie up the crawl's threads.
    """

    attempts: int = 4
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    jitter: float = 0.5
    max_retry_after: float = 120.0
    statuses: frozenset[int] = TRANSIENT_STATUSES
    _strategies: Retrying = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        strategies = Retrying(
            stop=stop_after_attempt(self.attempts),
            wait=wait_retry_after(
                wait_exponential_jitter(
                    multiplier=self.backoff_initial, max=self.backoff_max, jitter=self.jitter
                ),
                cap=self.max_retry_after,
            ),
            retry=retry_if_transient(self.statuses),
        )
        object.__setattr__(self, "_strategies", strategies)

    def retry_in(self, error: BaseException, attempts: int) -> float | None:
        """Seconds to wait before trying again after ``attempts`` tries ended in ``error``, or
        None if the request should not be tried again."""
        state = RetryCallState(self._strategies, fn=None, args=(), kwargs={})
        state.attempt_number = attempts
        state.set_exception((type(error), error, error.__traceback__))
        if not self._strategies.retry(state) or self._strategies.stop(state):
            return None
        return float(self._strategies.wait(state))
