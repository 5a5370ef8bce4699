"""Fetching one request, as a chain of short layers, each with one concern:

``fetch``          retries transient failures (the only layer that retries; tenacity)
``_send_once``     logs in if needed, and replays after a logout or a rejected token
``_follow``        follows redirects one hop at a time, deciding token headers per hop
``_send_hop``      sends one HTTP request through the thread's session

This module is also the boundary where library errors (requests, urllib3) become the
framework's own (see ``crawler.exceptions``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from tenacity import RetryCallState
from urllib3.exceptions import NewConnectionError, ReadTimeoutError

from .. import exceptions as exc
from ..auth.cookies import CookieAudit
from ..auth.login import LoginCoordinator
from ..auth.tokens import TokenAuth
from ..request import Request
from ..response import Response
from ..retry import RetryPolicy, parse_retry_after
from ..stats import Stats
from .redirects import CREDENTIAL_HEADERS, Hop, next_hop
from .sessions import SessionRegistry

logger = logging.getLogger(__name__)

_CHUNK = 64 * 1024
# Replays after a logout or a rejected token, per attempt: enough for a session revoked again
# while the replay was in flight, too few to loop on a site that never accepts us.
_MAX_REPLAYS = 5


@dataclass(frozen=True, slots=True)
class FetchOutcome:
    """The final response or error of a request, after ``attempts`` tries."""

    response: Response | None
    error: exc.FetchError | None
    attempts: int


@dataclass(frozen=True, slots=True)
class Auth:
    """What the fetcher needs to send a spider's requests as a logged-in client."""

    login: LoginCoordinator | None = None
    tokens: Sequence[TokenAuth] = ()


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
    """Sends one spider's requests through the calling thread's session."""

    def __init__(
        self,
        sessions: SessionRegistry,
        *,
        timeout: tuple[float, float],
        max_body_size: int,
        max_redirects: int,
        policy: RetryPolicy,
        stop: threading.Event,
        stats: Stats,
        auth: Auth = Auth(),
    ) -> None:
        self.sessions = sessions
        self.timeout = timeout
        self.max_body_size = max_body_size
        self.max_redirects = max_redirects
        self.policy = policy
        self.stats = stats
        self.auth = auth
        self.cookie_audit = CookieAudit(stats)
        # One Retrying for all threads: tenacity keeps per-call state on the stack.
        self._retrying = policy.retrying(stop, before_sleep=self._count_retry)
        self._overrides_reported: set[str] = set()
        self._overrides_lock = threading.Lock()

    def _count_retry(self, retry_state: RetryCallState) -> None:
        self.stats.inc("retries")

    def fetch(self, request: Request) -> FetchOutcome:
        """Fetch with retries. Raises CrawlInterrupted if shutdown cuts a backoff short, and
        LoginFailed if the crawl cannot log in."""
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
        session = self.sessions.get()
        if request.headers:
            self._report_overrides(request, session)
        login = self.auth.login
        generation = login.ensure() if login else 0
        for replay in range(_MAX_REPLAYS + 1):
            response, sent = self._follow(session, request)
            # A 401 to a request that carried a token is the token's problem first: refresh it.
            if response.status == 401 and replay < _MAX_REPLAYS and self._tokens_rejected(sent):
                pass
            elif login is not None and login.is_logged_out(response):
                if replay == _MAX_REPLAYS:
                    raise exc.LoginFailed(
                        f"still logged out after logging in again {_MAX_REPLAYS} times ({request.url})"
                    )
                generation = login.relogin(generation)
            else:
                break
            # A replay is not a retry: it does not spend the request's attempts.
            self.stats.inc("replayed_requests")
        if response.status in self.policy.statuses:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise exc.HTTPStatusError(request, response.status, retry_after)
        return response

    def _tokens_rejected(self, sent: Mapping[str, str]) -> bool:
        # Every source hears of the rejection (a list, not a generator that any() cuts short).
        return bool(sent) and any([auth.reject(sent) for auth in self.auth.tokens])

    def _follow(self, session: requests.Session, request: Request) -> tuple[Response, Mapping[str, str]]:
        """The final response, and the token headers sent with the hop that produced it."""
        hop = Hop.first(request)
        for _ in range(self.max_redirects + 1):
            tokens: dict[str, str] = {}
            for auth in self.auth.tokens:
                tokens.update(auth.headers_for(hop.method, hop.url, session))
            # The spider's own headers win over computed ones; _report_overrides said so once.
            headers = {**tokens, **hop.headers} if tokens or hop.headers else None
            raw = self._send_hop(session, hop, headers, request)
            try:
                if not raw.is_redirect:
                    body = self._read_body(raw, request)
                    return Response(raw.url, raw.status_code, raw.headers, body, request), tokens
                self._read_body(raw, request)  # drain it, so the connection can be reused
                hop = next_hop(hop, raw, session, request)
            except requests.RequestException as error:
                raise translate_error(error, request) from error
            finally:
                raw.close()
        raise exc.InvalidRequest(f"too many redirects: more than {self.max_redirects}", request)

    def _send_hop(
        self, session: requests.Session, hop: Hop, headers: Mapping[str, str] | None, request: Request
    ) -> requests.Response:
        self.stats.inc("http_requests")
        try:
            # headers=None, not {}: requests then skips merging them into the session's defaults.
            raw = session.request(
                hop.method,
                hop.url,
                headers=headers,
                data=hop.body,
                timeout=self.timeout,
                allow_redirects=False,
                stream=True,
            )
        except requests.RequestException as error:
            raise translate_error(error, request) from error
        set_cookies = raw.raw.headers.getlist("Set-Cookie") if raw.raw is not None else []
        if set_cookies:
            self.cookie_audit.inspect(_host(raw.url), set_cookies)
        return raw

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

    def _report_overrides(self, request: Request, session: requests.Session) -> None:
        """Warn once per header that a request's own header replaces a session default.

        It applies to that request only (session.headers is never changed), but a spider's own
        ``Cookie`` silently drops the login's cookies from it, which deserves saying out loud.
        """
        defaults = {name.lower() for name in session.headers} | CREDENTIAL_HEADERS
        for name in request.headers or {}:
            key = name.lower()
            if key not in defaults:
                continue
            with self._overrides_lock:
                if key in self._overrides_reported:
                    continue
                self._overrides_reported.add(key)
            self.stats.inc("header_overrides")
            logger.warning(
                "a request sets its own %r header: it replaces the session's %s for that request only "
                "(first seen on %s)",
                name,
                "cookies, so the login's cookies are not sent with it" if key == "cookie"
                else "credentials" if key in CREDENTIAL_HEADERS else "default",
                request.url,
            )


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()
