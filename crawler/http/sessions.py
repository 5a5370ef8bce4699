"""One tuned ``requests.Session`` per worker thread, and a registry that can close them all.

requests' maintainers advise a Session per thread (a shared one is not safe when pools are
evicted), so each worker gets its own on first use. Pools are sized from the real load: a worker
holds at most one connection per host at a time, so each host pool keeps one connection, and the
pool manager keeps a pool for every host the crawl visits, so no pool (and its open connection) is
evicted and reopened. New connections and discarded connections are counted, because both are
silent costs that otherwise only show up as a debug log line.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from requests.cookies import RequestsCookieJar
from requests.sessions import merge_setting
from requests.structures import CaseInsensitiveDict
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.util.retry import Retry

from ..stats import Stats
from .framing import ExchangeTimeout, FramingReporter, checked_connection_classes, deadline_of

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PoolSizing:
    """Connection pool sizes for one worker's session.

    ``hosts``: how many host pools to keep (one per host the crawl visits, up to this many).
    ``connections_per_host``: connections kept per host; a session serves one request at a time.
    """

    hosts: int
    connections_per_host: int = 1

    @classmethod
    def for_crawl(cls, workers: int, max_hosts: int, open_files: int) -> PoolSizing:
        """A pool for every host the crawl visits, up to ``max_hosts``: pools are made as hosts
        are met, so a large bound costs nothing until it is used. W workers on H hosts then
        keep W x H connections and evict none, as long as the open-file limit lets them: each
        kept connection is an open socket, and ``open_files`` is the process's limit."""
        by_files = (open_files - _FILES_KEPT_FREE) // max(1, workers)
        return cls(hosts=max(1, min(max_hosts, by_files)))


# Open files left for everything but pooled connections: the checkpoint, output files, logs,
# sockets being opened, the practice site's own sockets when it is served.
_FILES_KEPT_FREE = 256


ConnectionClasses = tuple[type[HTTPConnection], type[HTTPSConnection]]


def _counting_pool_classes(stats: Stats, connections: ConnectionClasses) -> dict[str, type[HTTPConnectionPool]]:
    """Connection pool classes that count discarded connections into ``stats``, and make
    ``connections`` (plain, TLS), which check the framing of every response."""
    plain, tls = connections

    class CountingPool(HTTPConnectionPool):
        ConnectionCls = plain

        def _make_request(self, conn: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            conn.exchange_deadline = deadline_of(kwargs.get("timeout"))
            return super()._make_request(conn, method, url, *args, **kwargs)

        def _put_conn(self, conn: Any) -> None:
            # urllib3 closes a returned connection when the pool is already full; count it so an
            # undersized pool is visible in the stats instead of in a debug log.
            if conn is not None and self.pool is not None and self.pool.full():
                stats.inc("pool_discards")
            super()._put_conn(conn)

    class CountingHTTPSPool(CountingPool, HTTPSConnectionPool):
        ConnectionCls = tls

    return {"http": CountingPool, "https": CountingHTTPSPool}


class CountingAdapter(HTTPAdapter):
    """An HTTPAdapter with no retries of its own and pools that count their connections."""

    def __init__(self, sizing: PoolSizing, stats: Stats, connections: ConnectionClasses) -> None:
        self._pool_classes = _counting_pool_classes(stats, connections)
        self._stats = stats
        self._closing = False
        # Retries belong to the fetcher alone, so attempt counts are exact: none here.
        super().__init__(
            pool_connections=sizing.hosts,
            pool_maxsize=sizing.connections_per_host,
            max_retries=Retry(total=0, read=False, redirect=False),
            pool_block=False,
        )

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pool_classes
        self.poolmanager.pools.dispose_func = self._dispose_pool

    def _dispose_pool(self, pool: HTTPConnectionPool) -> None:
        # A pool pushed out because the crawl visits more hosts than the manager keeps takes its
        # open connection with it; count that (it means reconnecting), but not the closing at shutdown.
        if not self._closing:
            self._stats.inc("pool_evictions")
        pool.close()

    def cert_verify(self, conn: Any, url: str, verify: bool | str, cert: Any) -> None:
        # requests looks the CA bundle up on disk (two or three stat calls) before every
        # request; a pool serves one scheme and host with the settings of one session, so it
        # is set up once for them.
        settings = (verify, cert)
        if getattr(conn, "verified_with", None) != settings:
            super().cert_verify(conn, url, verify, cert)
            conn.verified_with = settings

    def close(self) -> None:
        self._closing = True
        super().close()


@dataclass(frozen=True, slots=True)
class SessionSettings:
    user_agent: str
    max_redirects: int
    verify: bool | str  # True, False, or a CA bundle path


def make_session_factory(
    settings: SessionSettings, sizing: PoolSizing, stats: Stats
) -> Callable[[RequestsCookieJar], requests.Session]:
    """Tuned sessions that keep their cookies in the jar they are given (workers share one)."""
    # One set of connection classes for all of a crawl's sessions, so a host that broke framing
    # is known as such to every worker.
    connections = checked_connection_classes(_framing_reporter(stats), lambda: stats.inc("connections_opened"))

    def build(cookies: RequestsCookieJar) -> requests.Session:
        session = requests.Session()
        session.cookies = cookies
        adapter = CountingAdapter(sizing, stats, connections)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["User-Agent"] = settings.user_agent
        session.max_redirects = settings.max_redirects
        session.verify = settings.verify
        # Proxies and CA bundles from the environment would make a crawl behave differently per
        # shell; the config says what to trust.
        session.trust_env = False
        return session

    return build


def _framing_reporter(stats: Stats) -> FramingReporter:
    """Counts each connection closed for bytes past a response's end, and warns once per host:
    a server that does it is broken, and any client that reused the connection would have
    taken those bytes for the next page."""
    warned: set[str] = set()
    lock = threading.Lock()

    def report(host: str) -> None:
        stats.inc("malformed:framing")
        with lock:
            if host in warned:
                return
            warned.add(host)
        logger.warning(
            "%s sent bytes past the end of a response: the connection was closed instead of reused, "
            "so they cannot pass for the next page (counted as malformed: framing)",
            host,
        )

    return report


def prepare(
    session: requests.Session,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str] | None = None,
    body: bytes | Mapping[str, str] | None = None,
    json: Any = None,
) -> requests.PreparedRequest:
    """A request with the session's default headers and ``headers`` over them, and no cookies:
    the caller adds those that belong to it (see ``CrawlCookieJar.header_for``)."""
    prepared = requests.PreparedRequest()
    prepared.prepare(
        method=method,
        url=url,
        headers=merge_setting(headers, session.headers, dict_class=CaseInsensitiveDict),
        data=body,
        json=json,
    )
    return prepared


def exchange(
    session: requests.Session, prepared: requests.PreparedRequest, timeout: ExchangeTimeout | tuple[float, float]
) -> requests.Response:
    """Send ``prepared`` once through the session's connection pools, and return as soon as the
    headers are in (the body is streamed by the caller). With an ``ExchangeTimeout`` every read,
    headers and body, ends at its deadline.

    Below ``Session.send`` on purpose: no redirects followed, no proxies or CA bundles from the
    environment, and no cookies stored, so the caller decides which cookies an answer may set.
    """
    return session.get_adapter(prepared.url).send(
        prepared, stream=True, timeout=timeout, verify=session.verify, cert=session.cert, proxies=session.proxies
    )


class SessionRegistry:
    """Gives each thread its own session, made on first use, and knows every session it made."""

    def __init__(self, factory: Callable[[], requests.Session]) -> None:
        self._factory = factory
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    def get(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._factory()
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    def __len__(self) -> int:
        with self._lock:
            return len(self._sessions)

    def close_all(self) -> None:
        """Close every session (and so every pooled connection) made by this registry."""
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for session in sessions:
            session.close()
