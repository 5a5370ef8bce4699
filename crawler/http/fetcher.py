"""Fetching one request, once, as a chain of short layers, each with one concern:

``fetch``          logs in if needed, and replays after a logout or a rejected token
``_follow``        follows redirects one hop at a time, deciding token headers per hop; a hop
                   to another origin (or one ``may_follow`` refuses) ends the fetch as
                   ``Redirected``, for the caller to queue as a request of its own
``_send_hop``      sends one HTTP request through the thread's session, with the cookies
                   that belong to it, and stores the cookies its answer sets
``_exchange``      sends it through the proxy its URL goes by (``crawler.http.proxies``), and
                   through the next at once when one fails; a request whose proxies all failed
                   ends the fetch as ``ProxyError`` without spending an attempt
``_read_body``     streams the body, within the size limit and the total deadline

robots.txt is fetched without credentials: no token, no cookie, and nothing its answer sets is
stored, so a public file never carries or changes the login.

A fetch is one attempt: whether and when to try again is the retry policy's call, and the wait
happens in the frontier, not in a sleeping worker (see ``crawler.retry``).

This module is also the boundary where library errors (requests, urllib3) become the
framework's own (see ``crawler.exceptions``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, TypeVar
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests
from urllib3.exceptions import DecodeError, HTTPError, NewConnectionError, ProtocolError, ReadTimeoutError
from urllib3.exceptions import ProxyError as ProxyConnectError

from .. import exceptions as exc
from ..auth.cookies import CookieAudit, CrawlCookieJar
from ..auth.login import SharedLogin
from ..auth.tokens import TokenAuth
from ..content import TEXT, ContentTypes
from ..request import Request
from ..response import Response
from ..retry import parse_retry_after
from ..stats import Stats
from ..urls import scheme_of
from .redirects import CREDENTIAL_HEADERS, Hop, next_hop, origin
from .framing import ExchangeTimeout, IncompleteHeaders, TunnelRefused, UntrustedResponse
from .proxies import Proxy, ProxyFailure, ProxyRoutes
from .sessions import SessionRegistry, exchange_through, prepare

if TYPE_CHECKING:  # requests-cache is imported only by a crawl that caches
    from .cache import HttpCache, Lookup

logger = logging.getLogger(__name__)

E = TypeVar("E", bound=BaseException)

_CHUNK = 64 * 1024
# Names of headers that usually carry a secret (X-Api-Key, X-Auth-Token, Cookie, ...).
_CREDENTIAL_LOOKING = re.compile(r"auth|token|key|secret|session|cookie|passw|signature")
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


class Redirected(Exception):
    """A redirect the fetch did not follow itself: ``request`` is the next hop, as a request of
    its own (its headers already reduced to those allowed to go there)."""

    def __init__(self, request: Request) -> None:
        super().__init__(request)
        self.request = request

    def __str__(self) -> str:
        return f"redirected to {self.request.url}"


class UnwantedContent(Exception):
    """The response's content type is not one the callback accepts; its body was not read."""

    def __init__(self, content_type: str) -> None:
        super().__init__(content_type)
        self.content_type = content_type

    def __str__(self) -> str:
        return f"content type {self.content_type!r} is not accepted"


@dataclass(frozen=True, slots=True)
class Auth:
    """What the fetcher needs to send a spider's requests as a logged-in client."""

    login: SharedLogin | None = None
    tokens: Sequence[TokenAuth] = ()
    cookies: CrawlCookieJar = field(default_factory=CrawlCookieJar)


def _root_cause(error: BaseException) -> BaseException | None:
    """The urllib3 error inside a requests error (requests wraps it, sometimes in MaxRetryError)."""
    inner = error.args[0] if error.args else None
    return getattr(inner, "reason", inner) if isinstance(inner, BaseException) else None


def _carried(error: BaseException | None, kind: type[E]) -> E | None:
    """The ``kind`` of error (one of ``crawler.http.framing``'s) urllib3 wrapped in a ProtocolError."""
    if isinstance(error, ProtocolError) and error.args and isinstance(inner := error.args[-1], kind):
        return inner
    return None


def proxy_failure(error: requests.RequestException) -> ProxyFailure | None:
    """How the proxy failed, if ``error`` is the proxy's: it could not be reached (requests'
    ProxyError: urllib3 raises it only before the proxy answered), or it refused the tunnel
    (``TunnelRefused``, which urllib3 wraps one way or another). An error after that, the
    tunnel open or the request forwarded, is the origin's."""
    cause = _root_cause(error)
    if isinstance(cause, (ProtocolError, ProxyConnectError)) and cause.args and isinstance(
        refused := cause.args[-1], TunnelRefused
    ):
        return ProxyFailure(refused.status)
    if isinstance(error, requests.exceptions.ProxyError):
        return ProxyFailure()
    return None


def translate_error(error: requests.RequestException, request: Request) -> exc.FetchError:
    """Map a requests error to the most specific error of ours."""
    text = str(error) or type(error).__name__
    if isinstance(error, requests.ConnectTimeout):
        return exc.ConnectTimeout(f"connect timeout: {text}", request)
    if isinstance(error, requests.ReadTimeout):
        return exc.ReadTimeout(f"read timeout: {text}", request)
    if isinstance(error, requests.exceptions.SSLError):
        # Certificate and handshake failures do not fix themselves between retries.
        return exc.TLSError(f"TLS error: {text}", request)
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
        if (cut := _carried(cause, IncompleteHeaders)) is not None:
            return exc.ConnectionLost(f"connection lost: {cut}", request)
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
        cache: HttpCache | None = None,
        proxies: ProxyRoutes | None = None,
    ) -> None:
        self.sessions = sessions
        self.cache = cache
        self.proxies = proxies
        self.timeouts = timeouts
        self.max_body_size = max_body_size
        self.max_redirects = max_redirects
        self.error_statuses = error_statuses
        self.stats = stats
        self.auth = auth
        self.cookie_audit = CookieAudit(stats)
        self._overrides_reported: set[str] = set()
        self._overrides_lock = threading.Lock()

    def fetch(
        self, request: Request, accept: ContentTypes = TEXT, may_follow: Callable[[str], bool] = lambda url: True
    ) -> Response:
        """Send ``request`` once (plus its redirects, and replays after a logout).

        A redirect is followed here only within the request's origin, and only to URLs
        ``may_follow`` allows (robots.txt, say); any other ends the fetch as Redirected.

        Raises a FetchError (``HTTPStatusError`` for the statuses the retry policy handles),
        Redirected for a redirect the caller is to queue, UnwantedContent if the final response
        is of a type ``accept`` does not allow, and LoginFailed if the crawl cannot log in.
        """
        session = self.sessions.get()
        if request.headers:
            self._report_overrides(request, session)
        lookup = self._look_up(session, request)
        if lookup is not None and self.cache is not None and lookup.fresh is not None:
            response = self.cache.answer(lookup.fresh, request)
            if not accept.allows(content_type := response.headers.get("Content-Type")):
                raise UnwantedContent(content_type or "")
            return response
        login = self.auth.login
        if login is not None:
            login.ensure()
        token_replayed = False
        validators = lookup.validators if lookup is not None else {}
        for replay in range(_MAX_REPLAYS + 1):
            sent = self._follow(session, request, accept, may_follow, validators=validators)
            response = sent.response
            # A 401 to a request that carried a token is the token's problem first: refresh it,
            # and replay once.
            if response.status == 401 and not token_replayed and self._tokens_rejected(sent.tokens):
                token_replayed = True
            elif login is not None and login.is_logged_out(response):
                if replay == _MAX_REPLAYS:
                    raise exc.LoginFailed(
                        f"still logged out after logging in again {_MAX_REPLAYS} times ({request.url})"
                    )
                login.relogin(sent.generation)
            elif sent.redirect is not None:
                raise Redirected(sent.redirect)
            else:
                break
            # A replay is not a retry: it does not spend the request's attempts.
            self.stats.inc("replayed_requests")
        if response.status in self.error_statuses:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise exc.HTTPStatusError(request, response.status, retry_after)
        return self._kept(lookup, response, request)

    def _kept(self, lookup: Lookup | None, response: Response, request: Request) -> Response:
        """``response`` as the cache leaves it: kept, or (a 304) the stale entry it confirms."""
        if lookup is None or self.cache is None:
            return response
        if response.status == 304 and lookup.stale is not None:
            return self.cache.revalidated(lookup, response, request)
        self.cache.store(lookup, response)
        return response

    def _look_up(self, session: requests.Session, request: Request) -> Lookup | None:
        """The cache's entry for ``request``, keyed as it would be sent, without credentials."""
        if self.cache is None:
            return None
        return self.cache.look_up(prepare(session, request.method, request.url, headers=request.headers,
                                          body=request.body))

    def _tokens_rejected(self, sent: Sequence[tuple[TokenAuth, Mapping[str, str]]]) -> bool:
        # Every source that sent headers hears of the rejection (a list, not a generator that
        # any() cuts short).
        return any([auth.reject(headers) for auth, headers in sent])

    def fetch_robots(self, url: str) -> tuple[int, bytes]:
        """A robots.txt: its final status and at most ROBOTS_MAX_SIZE bytes of its body.

        It is public: sent without tokens or cookies, its redirects followed anywhere (RFC 9309)."""
        session = self.sessions.get()
        request = Request(url)
        lookup = self._look_up(session, request)
        if lookup is not None and self.cache is not None and lookup.fresh is not None:
            answer = self.cache.answer(lookup.fresh, request)
            return answer.status, answer.body
        validators = lookup.validators if lookup is not None else {}
        sent = self._follow(session, request, None, None, body_limit=ROBOTS_MAX_SIZE, validators=validators)
        response = self._kept(lookup, sent.response, request)
        return response.status, response.body

    def _follow(
        self,
        session: requests.Session,
        request: Request,
        accept: ContentTypes | None,
        may_follow: Callable[[str], bool] | None,
        *,
        body_limit: int | None = None,
        validators: Mapping[str, str] | None = None,
    ) -> _Sent:
        """The final response, with what was sent with the hop that produced it.

        With ``body_limit`` a longer body is cut to that size instead of failing the request.
        With ``may_follow`` (a request of the crawl) tokens and cookies go with each hop they
        belong to, and redirects are followed within the request's origin to what it allows;
        without it (robots.txt) nothing secret is sent and every redirect is followed.
        ``validators`` (If-None-Match, If-Modified-Since) go with the first hop only: they are
        its URL's.
        """
        credentials = may_follow is not None
        deadline = time.monotonic() + self.timeouts.total
        hop = Hop.first(request)
        # Redirected here from https: nothing secret goes on over http. (Hops followed inline
        # stay within the origin, so its scheme, and this answer, hold for all of them.)
        downgraded = scheme_of(request.url) == "http" and scheme_of(request.redirected_from or "") == "https"
        with_tokens = credentials and not downgraded
        # The login generation of the chain is that of its first hop: a logged-out session is
        # redirected to the login page, which is then fetched, maybe after another worker's
        # re-login, with newer cookies that are not the ones that were turned away.
        chain_generation = 0
        for followed in range(max(self.max_redirects - request.redirects, 0) + 1):
            tokens = self._token_headers(hop, session) if with_tokens else []
            headers: dict[str, str] = {}
            for _, computed in tokens:
                headers.update(computed)
            # The request's own headers win over computed ones; _report_overrides said so once.
            headers.update(hop.headers)
            if validators and not followed:
                headers.update(validators)
            raw, generation = self._send_hop(session, hop, headers, request, deadline, credentials)
            if not followed:
                chain_generation = generation
            try:
                if not raw.is_redirect:
                    if accept is not None and not accept.allows(content_type := raw.headers.get("Content-Type")):
                        self._discard(raw, request, deadline)
                        raise UnwantedContent(content_type or "")
                    body = self._read_body(raw, request, deadline, body_limit)
                    response = Response(raw.url, raw.status_code, raw.headers, body, request)
                    return _Sent(response, tokens, chain_generation)
                self._read_body(raw, request, deadline)  # drain it, so the connection can be reused
                previous, hop = hop, next_hop(hop, raw, request)
            except requests.RequestException as error:
                raise translate_error(error, request) from error
            finally:
                raw.close()
            if may_follow is not None and (origin(hop.url) != origin(previous.url) or not may_follow(hop.url)):
                # Not followed here. Seen from the login, it is a response that ends at its
                # target: a logged-out session sent to a login page on another origin (http to
                # https, say) is then noticed like one sent to a login page here.
                target = request.replace(
                    url=hop.url,
                    method=hop.method,
                    body=hop.body,
                    headers=hop.headers or None,
                    redirects=request.redirects + followed + 1,
                    redirected_from=previous.url,
                )
                response = Response(hop.url, raw.status_code, raw.headers, b"", request)
                return _Sent(response, tokens, chain_generation, target)
        raise exc.TooManyRedirects(f"too many redirects: more than {self.max_redirects}", request)

    def _token_headers(self, hop: Hop, session: requests.Session) -> list[tuple[TokenAuth, Mapping[str, str]]]:
        sent = []
        for auth in self.auth.tokens:
            if computed := auth.headers_for(hop.method, hop.url, session):
                sent.append((auth, computed))
        return sent

    def _send_hop(
        self,
        session: requests.Session,
        hop: Hop,
        headers: Mapping[str, str],
        request: Request,
        deadline: float,
        credentials: bool,
    ) -> tuple[requests.Response, int]:
        """Send one hop; its answer (body not read yet), and the login generation of the
        cookies that went with it."""
        self.stats.inc("http_requests")
        read_timeout = min(self.timeouts.read, deadline - time.monotonic())
        if read_timeout <= 0:
            raise exc.ReadTimeout(self._past_total(), request)
        jar = self.auth.cookies
        generation = jar.generation
        try:
            prepared = prepare(session, hop.method, hop.url, headers=headers, body=hop.body)
            # A request's own Proxy-Authorization is never sent: through a tunnel it would reach the
            # origin. Each proxy gets the credentials configured for it alone (see _exchange).
            prepared.headers.pop("Proxy-Authorization", None)
            if credentials and "Cookie" not in prepared.headers:
                cookie, generation = jar.header_for(prepared)
                if cookie:
                    prepared.headers["Cookie"] = cookie
            timeout = ExchangeTimeout(self.timeouts.connect, read_timeout, deadline)
            raw = self._exchange(session, prepared, timeout, request)
        except requests.RequestException as error:
            if time.monotonic() >= deadline:
                raise exc.ReadTimeout(self._past_total(), request) from error
            raise translate_error(error, request) from error
        set_cookies = raw.raw.headers.getlist("Set-Cookie") if raw.raw is not None else []
        if set_cookies:
            self.cookie_audit.inspect(_host(raw.url), set_cookies)
            if credentials and (ignored := jar.extract_from(raw, prepared, generation)):
                # An answer to a request sent before the latest login, which would have undone it.
                self.stats.inc("stale_cookies_ignored", ignored)
        return raw, generation

    def _exchange(
        self, session: requests.Session, prepared: requests.PreparedRequest, timeout: ExchangeTimeout, request: Request
    ) -> requests.Response:
        """``prepared`` sent through the proxies its URL goes by, in turn, or directly.

        A proxy that fails is counted and set aside, and the next one is tried at once; when
        none is left, or the request met ``max_failures`` proxy failures, ProxyError (the
        origin saw nothing: the request's attempts are not spent). A 407 is the proxy's own
        answer, over plain http as to CONNECT.
        """
        routes = self.proxies
        candidates = routes.candidates(prepared.url or "", request.proxy) if routes is not None else None
        if routes is None or candidates is None:
            return exchange_through(session, prepared, timeout, None)
        key = (request.method, request.url, request.body)  # the request across its leases
        failed: tuple[Proxy, ProxyFailure] | None = None
        for proxy in candidates:
            self.stats.inc("proxied_requests")
            try:
                raw = exchange_through(session, prepared, timeout, proxy)
            except requests.RequestException as error:
                if (failure := proxy_failure(error)) is None:
                    routes.worked(proxy)
                    routes.forget(key)
                    raise
            else:
                if raw.status_code != 407:
                    routes.worked(proxy)
                    routes.forget(key)
                    return raw
                raw.close()
                failure = ProxyFailure(407)
            routes.failed(proxy, failure)
            failed = (proxy, failure)
            if not routes.charge(key):
                raise exc.ProxyError(
                    f"proxy error: {routes.max_failures} proxy failures (http.max_proxy_failures), the last: "
                    f"proxy {proxy.key} {failure}", request, proxy.key,
                )
        if failed is None and not routes.charge(key):  # every proxy set aside: waiting counts too
            raise exc.ProxyError(
                f"proxy error: {routes.max_failures} proxy failures (http.max_proxy_failures), the last: "
                "every proxy for it was set aside after failures", request,
            )
        wait = routes.retry_in(prepared.url or "", request.proxy, key)
        what = f"proxy {failed[0].key} {failed[1]}" if failed else "every proxy for it is set aside after failures"
        raise exc.ProxyError(
            f"proxy error: {what}; tried again in {wait:.1f}s (its attempts are not spent)",
            request, failed[0].key if failed else "", wait,
        )

    def _read_body(
        self, raw: requests.Response, request: Request, deadline: float, cut_at: int | None = None
    ) -> bytes:
        """Stream the body in, refusing more than ``max_body_size`` bytes (or cutting it at
        ``cut_at``) instead of filling memory. The connection gives up at the deadline, so a
        body that never ends cannot hold a worker forever."""
        limit = cut_at if cut_at is not None else self.max_body_size
        declared = raw.headers.get("Content-Length", "")
        if cut_at is None and declared.isdigit() and int(declared) > limit:
            raise exc.ResponseTooLarge(f"body of {declared} bytes exceeds the limit of {limit}", request)
        chunks = []
        size = 0
        try:
            for chunk in _stream(raw, request):
                size += len(chunk)
                if size > limit:
                    if cut_at is not None:
                        chunks.append(chunk[: len(chunk) - (size - limit)])
                        break
                    raise exc.ResponseTooLarge(f"body exceeds the limit of {limit} bytes", request)
                chunks.append(chunk)
        except exc.ReadTimeout:
            if time.monotonic() >= deadline:
                raise exc.ReadTimeout(self._past_total(), request) from None
            raise
        return b"".join(chunks)

    def _past_total(self) -> str:
        return f"read timeout: the response took more than http.timeout.total ({self.timeouts.total:g}s) in all"

    def _discard(self, raw: requests.Response, request: Request, deadline: float) -> None:
        """Drop a body nobody wants: drained if small (the connection stays usable), else the
        connection is closed unread."""
        declared = raw.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) <= _DRAIN_LIMIT:
            self._read_body(raw, request, deadline)

    def _report_overrides(self, request: Request, session: requests.Session) -> None:
        """Warn once per header name about a request's own headers that deserve it.

        One that replaces a session default applies to that request only (session.headers is
        never changed), but a spider's own ``Cookie`` silently drops the login's cookies from it.
        One that looks like a credential is stored with the request in the checkpoint while it
        waits, and is the same for every request however long the crawl runs.
        """
        defaults = {name.lower() for name in session.headers} | CREDENTIAL_HEADERS
        for name in request.headers or {}:
            key = name.lower()
            overrides, secret = key in defaults, _CREDENTIAL_LOOKING.search(key) is not None
            if not (overrides or secret):
                continue
            with self._overrides_lock:
                if key in self._overrides_reported:
                    continue
                self._overrides_reported.add(key)
            if secret:
                self.stats.inc("credential_headers")
                logger.warning(
                    "a request sets its own %r header, which looks like a credential: it is stored with "
                    "the request in the checkpoint until it is sent. Compute it as each request is sent "
                    "instead, with a HeaderAuth from the spider's token_auth() (first seen on %s)",
                    name,
                    request.url,
                )
            if overrides and key == "proxy-authorization":
                self.stats.inc("header_overrides")
                logger.warning(
                    "a request sets its own %r header: it is never sent; a proxy's credentials come from "
                    "http.proxy_username_env and http.proxy_password_env (first seen on %s)",
                    name,
                    request.url,
                )
            elif overrides:
                self.stats.inc("header_overrides")
                logger.warning(
                    "a request sets its own %r header: it replaces the session's %s for that request only "
                    "(first seen on %s)",
                    name,
                    "cookies, so the login's cookies are not sent with it" if key == "cookie"
                    else "credentials" if key in CREDENTIAL_HEADERS else "default",
                    request.url,
                )


@dataclass(frozen=True, slots=True)
class _Sent:
    """The final response of a fetch (for a redirect not followed: the redirect, its ``url``
    the target), the token headers its hop carried (by source), and the login generation of the
    cookies the chain's first hop carried."""

    response: Response
    tokens: Sequence[tuple[TokenAuth, Mapping[str, str]]]
    generation: int
    redirect: Request | None = None
    """The next hop, when the response is a redirect the fetch does not follow itself."""


def _stream(raw: requests.Response, request: Request) -> Iterator[bytes]:
    """The body's chunks (decompressed) as they arrive, so the size limit is checked as they
    come (``read1``, not requests' ``iter_content``, which waits for each chunk to fill). The
    connection's reads end at the exchange's deadline (see ``crawler.http.framing``)."""
    reader = raw.raw
    while True:
        try:
            chunk = reader.read1(_CHUNK, decode_content=True)
        except ReadTimeoutError as error:
            raise exc.ReadTimeout(f"read timeout: {error}", request) from error
        except DecodeError as error:
            raise exc.InvalidRequest(f"cannot decode the body: {error}", request) from error
        except (HTTPError, OSError) as error:
            if (untrusted := _carried(error, UntrustedResponse)) is not None:
                raise exc.BrokenFraming(f"broken framing: {untrusted}", request) from error
            raise exc.ConnectionLost(f"connection lost: {error}", request) from error
        if not chunk:
            return
        yield chunk


def _host(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()
