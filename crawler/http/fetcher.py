"""Fetching one request: the only place that retries, and the boundary where library errors
(requests, urllib3) become the framework's own (see ``crawler.exceptions``)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import requests
from tenacity import RetryCallState
from urllib3.exceptions import NewConnectionError, ReadTimeoutError

from .. import exceptions as exc
from ..request import Request
from ..response import Response
from ..retry import RetryPolicy, parse_retry_after
from ..stats import Stats
from .sessions import SessionRegistry

_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True)
class FetchOutcome:
    """The final response or error of a request, after ``attempts`` tries."""

    response: Response | None
    error: exc.FetchError | None
    attempts: int


def _root_cause(error: BaseException) -> BaseException | None:
    """The urllib3 error inside a requests error (requests wraps it, sometimes in MaxRetryError)."""
    inner = error.args[0] if error.args else None
    return getattr(inner, "reason", inner) if isinstance(inner, BaseException) else None


def translate_error(error: requests.RequestException, request: Request) -> exc.FetchError:
    """Map a requests error to the most specific error of ours."""
    text = str(error) or type(error).__name__
    if isinstance(error, requests.ConnectTimeout):
        return exc.ConnectTimeout(f"connect timeout: {text}", request)
    if isinstance(error, requests.ReadTimeout):
        return exc.ReadTimeout(f"read timeout: {text}", request)
    if isinstance(error, requests.exceptions.SSLError):
        # Certificate and handshake failures do not fix themselves between retries.
        return exc.InvalidRequest(f"TLS error: {text}", request)
    if isinstance(error, requests.TooManyRedirects):
        return exc.InvalidRequest(f"too many redirects: {text}", request)
    if isinstance(
        error,
        (
            requests.exceptions.MissingSchema,
            requests.exceptions.InvalidSchema,
            requests.exceptions.InvalidURL,
            requests.exceptions.InvalidHeader,
        ),
    ):
        return exc.InvalidRequest(f"invalid request: {text}", request)
    if isinstance(error, requests.ConnectionError):
        cause = _root_cause(error)
        if isinstance(cause, NewConnectionError):
            return exc.ConnectError(f"cannot connect: {cause}", request)
        if isinstance(cause, ReadTimeoutError):  # raised while streaming the body
            return exc.ReadTimeout(f"read timeout: {cause}", request)
    return exc.ConnectionLost(f"connection lost: {text}", request)


class Fetcher:
    """Sends requests through the calling thread's session, retrying transient failures."""

    def __init__(
        self,
        sessions: SessionRegistry,
        *,
        timeout: tuple[float, float],
        max_body_size: int,
        policy: RetryPolicy,
        stop: threading.Event,
        stats: Stats,
    ) -> None:
        self.sessions = sessions
        self.timeout = timeout
        self.max_body_size = max_body_size
        self.policy = policy
        self.stats = stats
        # One Retrying for all threads: tenacity keeps per-call state on the stack.
        self._retrying = policy.retrying(stop, before_sleep=self._count_retry)

    def _count_retry(self, retry_state: RetryCallState) -> None:
        self.stats.inc("retries")

    def fetch(self, request: Request) -> FetchOutcome:
        """Fetch with retries. Raises CrawlInterrupted if shutdown cuts a backoff short."""
        attempts = 0

        def attempt() -> Response:
            nonlocal attempts
            attempts += 1
            return self._send_once(request)

        try:
            return FetchOutcome(self._retrying(attempt), None, attempts)
        except exc.FetchError as error:
            return FetchOutcome(None, error, attempts)

    def _send_once(self, request: Request) -> Response:
        self.stats.inc("http_requests")
        try:
            raw = self.sessions.get().request(
                request.method,
                request.url,
                headers=request.headers,
                data=request.body,
                timeout=self.timeout,
                allow_redirects=True,
                stream=True,
            )
        except requests.RequestException as error:
            raise translate_error(error, request) from error
        try:
            if raw.history:
                self.stats.inc("http_requests", len(raw.history))
            body = self._read_body(raw, request)
        except requests.RequestException as error:
            raise translate_error(error, request) from error
        finally:
            raw.close()
        if raw.status_code in self.policy.statuses:
            retry_after = parse_retry_after(raw.headers.get("Retry-After"))
            raise exc.HTTPStatusError(request, raw.status_code, retry_after)
        return Response(raw.url, raw.status_code, raw.headers, body, request)

    def _read_body(self, raw: requests.Response, request: Request) -> bytes:
        """Read the body, refusing more than ``max_body_size`` bytes instead of filling memory."""
        declared = raw.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.max_body_size:
            raise exc.InvalidRequest(
                f"body of {declared} bytes exceeds the limit of {self.max_body_size}", request
            )
        chunks = []
        size = 0
        for chunk in raw.iter_content(_CHUNK):
            size += len(chunk)
            if size > self.max_body_size:
                raise exc.InvalidRequest(
                    f"body exceeds the limit of {self.max_body_size} bytes", request
                )
            chunks.append(chunk)
        return b"".join(chunks)
