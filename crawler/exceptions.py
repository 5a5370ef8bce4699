"""Every error the framework raises on purpose.

::

    CrawlerError
    ├── ConfigError            the config file is missing, not TOML, or invalid (carries one line per problem)
    ├── CheckpointError        the checkpoint cannot be opened or written, is damaged, or is not ours
    │   ├── CheckpointInUse    another crawl holds it (``holder`` says which)
    │   └── CheckpointWriteFailed  a write to it failed (disk full); what was committed stays
    ├── OutputError            an output file cannot be written (disk full, permissions)
    ├── LoginFailed            logging in did not work; the crawl stops rather than loop
    │   └── LoginInterrupted   a login that did not complete (site error, revoked meanwhile): tried again
    ├── MalformedURL           a URL that parsers could read in more than one way (also a ValueError)
    ├── SpiderError            the spider's code failed where the crawl cannot go on (start_requests)
    └── FetchError             one request could not be fetched; carries the request it concerns
        ├── TransportError     no usable response came back
        │   ├── ConnectError   the request never reached the server (safe to retry for any method)
        │   │   ├── ConnectTimeout
        │   │   ├── RobotsUnavailable  the host's robots.txt could not be read, so nothing was sent
        │   │   └── ProxyError     no proxy could carry it (its attempts are not spent on that)
        │   ├── ReadTimeout    the server accepted the request but answered too slowly (or never finished)
        │   └── ConnectionLost the connection broke after the request may have been sent
        ├── HTTPStatusError    the server answered with a status the crawl treats as an error
        └── InvalidRequest     the request can never succeed as written (bad URL, TLS refused)
            ├── TLSError           the TLS handshake failed (untrusted certificate, wrong host)
            ├── InvalidRedirect    a redirect without a usable Location (malformed, not http(s))
            ├── TooManyRedirects   a redirect loop, or a chain longer than the limit
            └── ResponseTooLarge   a body over the size limit (cut off while streaming)

Library errors (requests, urllib3) are translated into this tree at one boundary, the fetcher,
so the engine and retry policy handle one family only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .request import Request
    from .runner import RunReport


class CrawlerError(Exception):
    """Base class of the framework's own errors.

    Each passes all its constructor's arguments to ``Exception``, so it survives pickling (a
    crawl's errors cross process boundaries) with every field it carries.

    One that stopped a crawl (a failed login, a checkpoint that cannot be written) carries the
    run's ``report`` up to that point: what every spider did, the finished ones' too.
    """

    report: RunReport | None = None


class ConfigError(CrawlerError):
    """The configuration cannot be used; ``problems`` holds one readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(problems)
        self.problems = problems

    def __str__(self) -> str:
        return "\n".join(self.problems)


class CheckpointError(CrawlerError):
    """The checkpoint file cannot be used as it is."""


class CheckpointInUse(CheckpointError):
    """Another crawl holds the checkpoint's lock: ``holder`` is its ``host:pid``."""

    def __init__(self, path: str, holder: str) -> None:
        super().__init__(path, holder)
        self.path = path
        self.holder = holder

    def __str__(self) -> str:
        return f"{self.path}: checkpoint is in use by another crawl ({self.holder})"


class CheckpointWriteFailed(CheckpointError):
    """A write to the checkpoint failed (a full disk, say); the failed transaction was rolled
    back, so what was committed before stays, and running again goes on from there."""


class OutputError(CrawlerError):
    """An output file cannot be written. Committed items stay in the checkpoint."""


class LoginFailed(CrawlerError):
    """Logging in failed, or the site still says we are logged out right after logging in.

    The message never holds a credential: it names the environment variables instead.
    """


class MalformedURL(CrawlerError, ValueError):
    """``url`` cannot be read one way only (``reason`` says why); it is never fetched."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(url, reason)
        self.url = url
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.reason}: {self.url[:200]!r}"


class LoginInterrupted(LoginFailed):
    """A login that did not complete for a reason that may pass (the site failed, the connection
    broke, the new session was revoked while being made); the crawl tries it again a few times."""


class SpiderError(CrawlerError):
    """``method`` of spider ``spider`` raised (``problem`` says what), where the crawl cannot go
    on without it. A callback that raises is not one: it fails its page and the crawl goes on."""

    def __init__(self, spider: str, method: str, problem: str) -> None:
        super().__init__(spider, method, problem)
        self.spider = spider
        self.method = method
        self.problem = problem

    def __str__(self) -> str:
        return f"spider {self.spider}: {self.method} raised {self.problem}"


class FetchError(CrawlerError):
    """A request failed. ``request`` is the request concerned."""

    def __init__(self, message: str, request: Request) -> None:
        super().__init__(message, request)
        self.message = message
        self.request = request

    def __str__(self) -> str:
        return self.message


class TransportError(FetchError):
    """No usable response: connection, timeout or protocol trouble."""


class ConnectError(TransportError):
    """The request never reached the server."""


class ConnectTimeout(ConnectError):
    """Connecting took longer than the connect timeout."""


class RobotsUnavailable(ConnectError):
    """The host's robots.txt answered 5xx or could not be reached. Until it can be read, the
    host counts as disallowed (RFC 9309), so the request was not sent and may be retried."""


class ProxyError(ConnectError):
    """The request's proxies failed it (could not be reached, refused the tunnel, asked for
    credentials), so it never reached the origin, and it spent none of its attempts on that.

    ``proxy`` is the last proxy that failed it (``host:port``, never credentials; empty when
    every proxy for it was set aside already). With ``retry_in`` it is tried again that many
    seconds later; without, it met ``http.max_proxy_failures`` proxy failures and fails.
    """

    def __init__(self, message: str, request: Request, proxy: str = "", retry_in: float | None = None) -> None:
        super().__init__(message, request)
        self.args = (message, request, proxy, retry_in)  # what pickling passes back to __init__
        self.proxy = proxy
        self.retry_in = retry_in


class ReadTimeout(TransportError):
    """The server went quiet for longer than the read timeout, or the whole response took longer
    than the total timeout (a body that never ends)."""


class ConnectionLost(TransportError):
    """The connection broke after the request may have reached the server."""


class BrokenFraming(ConnectionLost):
    """The server sent bytes past the end of a response on a connection that had served an
    earlier one, so the response cannot be told from the tail of that earlier one. The
    connection was closed; the request is tried again like any lost connection."""


class HTTPStatusError(FetchError):
    """The server answered with an error status.

    ``retry_after`` is the server's requested delay in seconds, if it sent a usable ``Retry-After``.
    """

    def __init__(self, request: Request, status: int, retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}", request)
        self.args = (request, status, retry_after)  # what pickling passes back to __init__
        self.status = status
        self.retry_after = retry_after


class InvalidRequest(FetchError):
    """The request cannot succeed as written; retrying would not help."""


class TLSError(InvalidRequest):
    """The TLS handshake failed: a certificate not trusted or not for the host, or no common
    protocol. It does not fix itself between retries."""


class InvalidRedirect(InvalidRequest):
    """A redirect whose Location is missing, cannot be read one way only, or is not http(s)."""


class TooManyRedirects(InvalidRequest):
    """A redirect loop, or more redirects than ``http.max_redirects``."""


class ResponseTooLarge(InvalidRequest):
    """The body exceeded ``http.max_body_size``; it was cut off, not read into memory."""
