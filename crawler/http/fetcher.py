"""Fetching one request, once, as a chain of short layers, each with one concern:

``fetch``          logs in if needed, and replays after a logout or a rejected token
``_follow``        follows redirects one hop at a time, deciding token headers per hop
``_send_hop``      sends one HTTP request through the thread's session
``_read_body``     streams the body, within the size limit and the total deadline

A fetch is one attempt: whether and when to try again is the retry policy's call, and the wait
happens in the frontier, not in a sleeping worker (see ``crawler.retry``).

This module is also the boundary where library errors (requests, urllib3) become the
framework's own (see ``crawler.exceptions``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import DecodeError, HTTPError, NewConnectionError, ReadTimeoutError

from .. import exceptions as exc
from ..auth.cookies import CookieAudit
from ..auth.login import LoginCoordinator
from ..auth.tokens import TokenAuth
from ..content import TEXT, ContentTypes
from ..request import Request
from ..response import Response
from ..retry import parse_retry_after
from ..stats import Stats
from .redirects import CREDENTIAL_HEADERS, Hop, next_hop
from .sessions import SessionRegistry

logger = logging.getLogger(__name__)

_CHUNK = 64 * 1024
# Replays after a logout or a rejected token, per attempt: enough for a session revoked again
# while the replay was in flight, too few to loop on a site that never accepts us.
_MAX_REPLAYS = 5


# robots.txt parsers must read at least 500 KiB (RFC 9309); what is past that is cut off.
ROBOTS_MAX_SIZE = 512 * 1024
# A skipped body this small is read and dropped, so its connection can be reused; a larger one
# costs less as a new connection than as a download.
_DRAIN_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float
    """Seconds to wait for a connection."""
    read: float
    """Seconds the server may go quiet, before the headers or between body chunks."""
    total: float
    """Seconds a whole response may take, every redirect hop and body included."""


class UnwantedContent(Exception):
    """The response's content type is not one the callback accepts; its body was not read."""

    def __init__(self, content_type: str) -> None:
        super().__init__(f"content type {content_type!r} is not accepted")
        self.content_type = content_type


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
        timeouts: Timeouts,
        max_body_size: int,
        max_redirects: int,
        error_statuses: frozenset[int],
        stats: Stats,
        auth: Auth = Auth(),
    ) -> None:
        self.sessions = sessions
        self.timeouts = timeouts
        self.max_body_size = max_body_size
        self.max_redirects = max_redirects
        self.error_statuses = error_statuses
        self.stats = stats
        self.auth = auth
        self.cookie_audit = CookieAudit(stats)
        self._overrides_reported: set[str] = set()
        self._overrides_lock = threading.Lock()

    def fetch(self, request: Request, accept: ContentTypes = TEXT) -> Response:
        """Send ``request`` once (plus its redirects, and replays after a logout).

        Raises a FetchError (``HTTPStatusError`` for the statuses the retry policy handles),
        UnwantedContent if the final response is of a type ``accept`` does not allow, and
        LoginFailed if the crawl cannot log in.
        """
        session = self.sessions.get()
        if request.headers:
            self._report_overrides(request, session)
        login = self.auth.login
        generation = login.ensure() if login else 0
        for replay in range(_MAX_REPLAYS + 1):
            response, sent = self._follow(session, request, accept)
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
        if response.status in self.error_statuses:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise exc.HTTPStatusError(request, response.status, retry_after)
        return response

    def _tokens_rejected(self, sent: Mapping[str, str]) -> bool:
        # Every source hears of the rejection (a list, not a generator that any() cuts short).
        return bool(sent) and any([auth.reject(sent) for auth in self.auth.tokens])

    def fetch_robots(self, url: str) -> tuple[int, bytes]:
        """A robots.txt: its final status and at most ROBOTS_MAX_SIZE bytes of its body."""
        session = self.sessions.get()
        response, _ = self._follow(session, Request(url), None, body_limit=ROBOTS_MAX_SIZE)
        return response.status, response.body

    def _follow(
        self,
        session: requests.Session,
        request: Request,
        accept: ContentTypes | None,
        *,
        body_limit: int | None = None,
    ) -> tuple[Response, Mapping[str, str]]:
        """The final response, and the token headers sent with the hop that produced it.

        With ``body_limit`` a longer body is cut to that size instead of failing the request.
        """
        deadline = time.monotonic() + self.timeouts.total
        hop = Hop.first(request)
        for _ in range(self.max_redirects + 1):
            tokens: dict[str, str] = {}
            for auth in self.auth.tokens:
                tokens.update(auth.headers_for(hop.method, hop.url, session))
            # The spider's own headers win over computed ones; _report_overrides said so once.
            headers = {**tokens, **hop.headers} if tokens or hop.headers else None
            raw = self._send_hop(session, hop, headers, request, deadline)
            try:
                if not raw.is_redirect:
                    if accept is not None and not accept.allows(content_type := raw.headers.get("Content-Type")):
                        self._discard(raw, request, deadline)
                        raise UnwantedContent(content_type or "")
                    body = self._read_body(raw, request, deadline, body_limit)
                    return Response(raw.url, raw.status_code, raw.headers, body, request), tokens
                self._read_body(raw, request, deadline)  # drain it, so the connection can be reused
                hop = next_hop(hop, raw, session, request)
            except requests.RequestException as error:
                raise translate_error(error, request) from error
            finally:
                raw.close()
        raise exc.TooManyRedirects(f"too many redirects: more than {self.max_redirects}", request)

    def _send_hop(
        self,
        session: requests.Session,
        hop: Hop,
        headers: Mapping[str, str] | None,
        request: Request,
        deadline: float,
    ) -> requests.Response:
        self.stats.inc("http_requests")
        read_timeout = min(self.timeouts.read, deadline - time.monotonic())
        if read_timeout <= 0:
            raise exc.ReadTimeout(f"read timeout: no response within {self.timeouts.total:g}s in all", request)
        try:
            # headers=None, not {}: requests then skips merging them into the session's defaults.
            raw = session.request(
                hop.method,
                hop.url,
                headers=headers,
                data=hop.body,
                timeout=(self.timeouts.connect, read_timeout),
                allow_redirects=False,
                stream=True,
            )
        except requests.RequestException as error:
            raise translate_error(error, request) from error
        set_cookies = raw.raw.headers.getlist("Set-Cookie") if raw.raw is not None else []
        if set_cookies:
            self.cookie_audit.inspect(_host(raw.url), set_cookies)
        return raw

    def _read_body(
        self, raw: requests.Response, request: Request, deadline: float, cut_at: int | None = None
    ) -> bytes:
        """Stream the body in, refusing more than ``max_body_size`` bytes (or cutting it at
        ``cut_at``) instead of filling memory, and giving up at the deadline, so a body that
        never ends cannot hold a worker forever."""
        limit = cut_at if cut_at is not None else self.max_body_size
        declared = raw.headers.get("Content-Length", "")
        if cut_at is None and declared.isdigit() and int(declared) > limit:
            raise exc.ResponseTooLarge(f"body of {declared} bytes exceeds the limit of {limit}", request)
        chunks = []
        size = 0
        for chunk in _stream(raw, request):
            size += len(chunk)
            if size > limit:
                if cut_at is not None:
                    chunks.append(chunk[: len(chunk) - (size - limit)])
                    break
                raise exc.ResponseTooLarge(f"body exceeds the limit of {limit} bytes", request)
            chunks.append(chunk)
            if time.monotonic() > deadline:
                raise exc.ReadTimeout(
                    f"read timeout: the response took more than {self.timeouts.total:g}s in all", request
                )
        return b"".join(chunks)

    def _discard(self, raw: requests.Response, request: Request, deadline: float) -> None:
        """Drop a body nobody wants: drained if small (the connection stays usable), else the
        connection is closed unread."""
        declared = raw.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) <= _DRAIN_LIMIT:
            self._read_body(raw, request, deadline)

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


def _stream(raw: requests.Response, request: Request) -> Iterator[bytes]:
    """The body's chunks (decompressed) as they arrive.

    ``read1``, not requests' ``iter_content``: that waits for each chunk to fill, so a body that
    trickles in a byte at a time would never reach the deadline check between chunks.
    """
    reader = raw.raw
    while True:
        try:
            chunk = reader.read1(_CHUNK, decode_content=True)
        except ReadTimeoutError as error:
            raise exc.ReadTimeout(f"read timeout: {error}", request) from error
        except DecodeError as error:
            raise exc.InvalidRequest(f"cannot decode the body: {error}", request) from error
        except (HTTPError, OSError) as error:
            raise exc.ConnectionLost(f"connection lost: {error}", request) from error
        if not chunk:
            return
        yield chunk


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()
