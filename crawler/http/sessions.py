"""One tuned ``requests.Session`` per worker thread, and a registry that can close them all.

requests' maintainers advise a Session per thread (a shared one is not safe when pools are
evicted), so each worker gets its own on first use. Pools are sized from the real load: a worker
holds at most one connection per host at a time, so each host pool keeps one connection, and the
pool manager keeps a pool for every host the crawl visits, so no pool (and its open connection) is
evicted and reopened. New connections and discarded connections are counted, because both are
silent costs that otherwise only show up as a debug log line.

Through a proxy (see ``crawler.http.proxies`` for which one) the same holds: urllib3's
ProxyManagers are made with the same counting pool classes, one pool per origin for plain http
too, sized within the same budget of kept connections.
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
from urllib3._collections import RecentlyUsedContainer
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.poolmanager import ProxyManager
from urllib3.util.retry import Retry

from ..stats import Stats
from .framing import ExchangeTimeout, FramingReporter, checked_connection_classes, deadline_of
from .proxies import Proxy, ProxyRoutes

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

    def per_proxy(self, proxies: int) -> int:
        """Host pools to keep through each of ``proxies`` proxies: as many in all as directly, so
        proxied connections stay within the same open-file budget (hosts spread over the
        proxies when each host sticks to one; rotated per request, more of them reconnect)."""
        return max(1, self.hosts // max(1, proxies))


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
        forwarded_origin: str | None = None  # set by _PoolPerOrigin on a pool to a proxy

        def _make_request(self, conn: Any, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
            conn.exchange_deadline = deadline_of(kwargs.get("timeout"))
            conn.forwarded_origin = self.forwarded_origin
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


class _PoolPerOrigin(ProxyManager):
    """A ProxyManager that keeps a pool per origin for plain http as for https. (urllib3's keeps
    one pool per proxy for every plain-http origin.) A connection to the proxy then carries one
    origin's requests, as a direct one does, so framing checks and reuse stay per origin, and a
    proxy that ties a client connection to the first origin it forwarded to (proxy.py 2.4 does)
    cannot hand one origin's requests, cookies and tokens to another."""

    def connection_from_host(
        self, host: str | None, port: int | None = None, scheme: str | None = "http", pool_kwargs: Any = None
    ) -> HTTPConnectionPool:
        if scheme == "https":
            return super().connection_from_host(host, port, scheme, pool_kwargs=pool_kwargs)
        proxy = self.proxy
        assert proxy is not None and proxy.scheme is not None
        context = self._merge_pool_kwargs(pool_kwargs)
        context.update(scheme=proxy.scheme, host=proxy.host, port=proxy.port)
        pool_key = self.key_fn_by_scheme[proxy.scheme](context)
        # The pool connects to the proxy; its key also names the origin it serves, and so does
        # the pool, for the framing checks of its connections.
        pool = self.connection_from_pool_key((pool_key, host, port), request_context=context)  # type: ignore[arg-type]
        pool.forwarded_origin = f"{host}:{port or 80}"  # type: ignore[attr-defined]
        return pool


# Proxies a session keeps connections through beyond the config's own: those requests name
# (``Request(proxy=...)``). Past them, the least recently used proxy's pools are closed.
_OTHER_PROXIES_KEPT = 8


class CountingAdapter(HTTPAdapter):
    """An HTTPAdapter with no retries of its own and pools that count their connections.

    Requests reach it in two ways: from the fetcher, which has chosen the proxy (``send_through``),
    and from ``requests.Session.send`` (a login's requests, a spider's own login), which knows
    nothing of the crawl's proxies: those go through the proxy ``routes`` give their URL first.
    """

    def __init__(
        self, sizing: PoolSizing, stats: Stats, connections: ConnectionClasses, routes: ProxyRoutes | None = None
    ) -> None:
        self._pool_classes = _counting_pool_classes(stats, connections)
        self._stats = stats
        self._closing = False
        self._routes = routes
        proxies = routes.proxy_count if routes is not None else 0
        self._pools_per_proxy = sizing.per_proxy(proxies)
        # Proxy-Authorization by proxy URL (requests would read it from credentials in the URL,
        # which never hold any here).
        self._authorizations: dict[str, str | None] = {}
        # Retries belong to the fetcher alone, so attempt counts are exact: none here.
        super().__init__(
            pool_connections=sizing.hosts,
            pool_maxsize=sizing.connections_per_host,
            max_retries=Retry(total=0, read=False, redirect=False),
            pool_block=False,
        )
        self.proxy_manager = RecentlyUsedContainer(proxies + _OTHER_PROXIES_KEPT, dispose_func=self._dispose_manager)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = self._pool_classes
        self.poolmanager.pools.dispose_func = self._dispose_pool

    def send(  # type: ignore[override]
        self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
        verify: bool | str = True, cert: Any = None, proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        if proxies or self._routes is None:  # proxies a spider's own code passed: as requests does
            return super().send(request, stream, timeout, verify, cert, proxies)
        return self.send_through(request, self._routes.first(request.url or ""), stream, timeout, verify, cert)

    def send_through(
        self, request: requests.PreparedRequest, proxy: Proxy | None, stream: bool = False, timeout: Any = None,
        verify: bool | str = True, cert: Any = None,
    ) -> requests.Response:
        """Send ``request`` through ``proxy`` (None: directly), with its credentials only."""
        if proxy is None:
            return super().send(request, stream, timeout, verify, cert, {})
        self._authorizations[proxy.url] = proxy.authorization
        return super().send(request, stream, timeout, verify, cert, {"all": proxy.url})

    def proxy_headers(self, proxy: str) -> dict[str, str]:
        if proxy not in self._authorizations:
            return super().proxy_headers(proxy)
        authorization = self._authorizations[proxy]
        return {"Proxy-Authorization": authorization} if authorization else {}

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> ProxyManager:
        manager: ProxyManager | None = self.proxy_manager.get(proxy)
        if manager is None:
            manager = _PoolPerOrigin(
                proxy,
                num_pools=self._pools_per_proxy,
                proxy_headers=self.proxy_headers(proxy),
                maxsize=self._pool_maxsize,
                block=self._pool_block,
                **proxy_kwargs,
            )
            manager.pool_classes_by_scheme = self._pool_classes  # type: ignore[assignment]
            manager.pools.dispose_func = self._dispose_pool
            self.proxy_manager[proxy] = manager
        return manager

    def _dispose_manager(self, manager: ProxyManager) -> None:
        manager.clear()  # each of its pools goes through _dispose_pool

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
        # HTTPAdapter.close, for a container of proxy managers that cannot be iterated.
        self._closing = True
        self.poolmanager.clear()
        self.proxy_manager.clear()


@dataclass(frozen=True, slots=True)
class SessionSettings:
    user_agent: str
    max_redirects: int
    verify: bool | str  # True, False, or a CA bundle path


def make_session_factory(
    settings: SessionSettings, sizing: PoolSizing, stats: Stats, routes: ProxyRoutes | None = None
) -> Callable[[RequestsCookieJar], requests.Session]:
    """Tuned sessions that keep their cookies in the jar they are given (workers share one), and
    send what ``requests.Session`` sends through the proxies of ``routes``."""
    # One set of connection classes for all of a crawl's sessions, so a host that broke framing
    # is known as such to every worker.
    connections = checked_connection_classes(_framing_reporter(stats), lambda: stats.inc("connections_opened"))

    def build(cookies: RequestsCookieJar) -> requests.Session:
        session = requests.Session()
        session.cookies = cookies
        adapter = CountingAdapter(sizing, stats, connections, routes)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["User-Agent"] = settings.user_agent
        session.max_redirects = settings.max_redirects
        session.verify = settings.verify
        # Proxies and CA bundles from the environment would make a crawl behave differently per
        # shell; the config says what to trust (http.trust_env reads them, in the wiring).
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
    headers and body, ends at its deadline. It goes through the proxy the session's routes give
    its URL first (``exchange_through`` sends through the one the caller chose).

    Below ``Session.send`` on purpose: no redirects followed, no proxies or CA bundles from the
    environment, and no cookies stored, so the caller decides which cookies an answer may set.
    """
    return session.get_adapter(prepared.url).send(
        prepared, stream=True, timeout=timeout, verify=session.verify, cert=session.cert, proxies=session.proxies
    )


def exchange_through(
    session: requests.Session,
    prepared: requests.PreparedRequest,
    timeout: ExchangeTimeout | tuple[float, float],
    proxy: Proxy | None,
) -> requests.Response:
    """``exchange`` through ``proxy`` (None: directly), as the caller chose."""
    adapter = session.get_adapter(prepared.url)
    assert isinstance(adapter, CountingAdapter), "a session made by make_session_factory"
    return adapter.send_through(prepared, proxy, stream=True, timeout=timeout, verify=session.verify, cert=session.cert)


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
