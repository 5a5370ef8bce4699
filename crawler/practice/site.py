"""The practice site: a real local HTTP/1.1 server for examples, tests and benchmarks.

It serves the catalogue of :mod:`crawler.practice.catalogue`, the named failure endpoints of
:mod:`crawler.practice.endpoints` and the login area and bearer-token API of
:mod:`crawler.practice.members`, and a ``/robots.txt`` set by tests
(:mod:`crawler.practice.robots`); counts connections, requests, per-key attempts, logins,
tokens and revocations for tests; and on ``stop()`` closes idle keep-alive sockets and joins
its connection threads.
"""

from __future__ import annotations

import functools
import math
import socket
import socketserver
import sys
import threading
import time
from collections import deque
from http.server import ThreadingHTTPServer
from typing import Any

from crawler.practice.accounts import Accounts, TokenRequest, check_token_error
from crawler.practice.catalogue import Catalogue
from crawler.practice.endpoints import Handler
from crawler.practice.robots import RobotsFile

_EVENTS = ("logins", "failed_logins", "token_grants", "revocations", "member_pages",
           "api_requests")


class SiteCounters:
    """Thread-safe request accounting, read by tests to prove crawler behaviour."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connections = 0
        self._requests = 0
        self._hits: dict[str, int] = {}
        self._attempts: dict[str, int] = {}
        # When each request arrived (the latest ones), and how many were being answered at
        # once: what per-host delays and concurrency limits look like from the server's side.
        self._arrivals: deque[tuple[float, str]] = deque(maxlen=100_000)
        self._active = 0
        self._max_active = 0
        self._events = dict.fromkeys(_EVENTS, 0)
        self._token_requests: list[TokenRequest] = []

    @property
    def connections(self) -> int:
        """TCP connections accepted (not requests: this is how reuse is proven)."""
        with self._lock:
            return self._connections

    @property
    def requests(self) -> int:
        """HTTP requests received, on all connections."""
        with self._lock:
            return self._requests

    def hits(self, path: str) -> int:
        """Requests for ``path`` (the URL path, without query string)."""
        with self._lock:
            return self._hits.get(path, 0)

    def arrivals(self, prefix: str = "/") -> list[float]:
        """``time.monotonic()`` of each recent request whose path starts with ``prefix``."""
        with self._lock:
            return [when for when, path in self._arrivals if path.startswith(prefix)]

    @property
    def max_concurrent(self) -> int:
        """The most requests being answered at the same moment."""
        with self._lock:
            return self._max_active

    def attempts(self, key: str) -> int:
        """Requests made to keyed failure endpoints with ``key``."""
        with self._lock:
            return self._attempts.get(key, 0)

    @property
    def logins(self) -> int:
        """Successful logins (``POST /login`` with the right credentials)."""
        return self._event("logins")

    @property
    def failed_logins(self) -> int:
        """``POST /login`` answers that failed: a bad CSRF token or wrong credentials."""
        return self._event("failed_logins")

    @property
    def token_grants(self) -> int:
        """Bearer tokens granted by ``POST /api/token``."""
        return self._event("token_grants")

    @property
    def revocations(self) -> int:
        """Session revocations: ``revoke_sessions()`` calls plus automatic ``revoke_after`` ones."""
        return self._event("revocations")

    @property
    def member_pages(self) -> int:
        """Member pages served (200) to a logged-in session."""
        return self._event("member_pages")

    @property
    def api_requests(self) -> int:
        """API requests answered with a valid bearer token (items and redirects)."""
        return self._event("api_requests")

    @property
    def token_requests(self) -> list[TokenRequest]:
        """Every ``POST /api/token`` received (granted or not), oldest first: a copy."""
        with self._lock:
            return list(self._token_requests)

    def record_token_request(self, request: TokenRequest) -> None:
        with self._lock:
            self._token_requests.append(request)

    def _event(self, name: str) -> int:
        with self._lock:
            return self._events[name]

    def record(self, event: str) -> None:
        """Count one ``event`` (one of the login/token counters above)."""
        with self._lock:
            self._events[event] += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "connections": self._connections,
                "requests": self._requests,
                "hits": dict(self._hits),
                "attempts": dict(self._attempts),
            }

    def reset(self) -> None:
        with self._lock:
            self._connections = self._requests = 0
            self._hits.clear()
            self._attempts.clear()
            self._arrivals.clear()
            self._max_active = self._active
            self._events = dict.fromkeys(_EVENTS, 0)
            self._token_requests.clear()

    def record_connection(self) -> None:
        with self._lock:
            self._connections += 1

    def record_request(self, path: str) -> None:
        with self._lock:
            self._requests += 1
            self._hits[path] = self._hits.get(path, 0) + 1
            self._arrivals.append((time.monotonic(), path))
            self._active += 1
            self._max_active = max(self._max_active, self._active)

    def request_answered(self) -> None:
        with self._lock:
            self._active -= 1

    def next_attempt(self, key: str) -> int:
        """Increment and return the attempt number for ``key`` atomically."""
        with self._lock:
            self._attempts[key] = attempt = self._attempts.get(key, 0) + 1
            return attempt


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # A crawler opening many connections at once must not see refused SYNs.
    request_queue_size = 1024

    def __init__(self, address: tuple[str, int], catalogue: Catalogue, accounts: Accounts,
                 counters: SiteCounters, latency: float, robots: RobotsFile,
                 api_latency: float = 0.0) -> None:
        self.catalogue = catalogue
        self.accounts = accounts
        self.counters = counters
        self.latency = latency
        self.api_latency = api_latency
        self.robots = robots
        # Set by stop(); sleeping handlers wait on it so shutdown is immediate.
        self.stopping = threading.Event()
        self._clients: set[socket.socket] = set()
        self._workers: list[threading.Thread] = []
        self._clients_lock = threading.Lock()  # guards _clients and _workers
        # Pages are pure functions of their number, so render each once; the
        # bound keeps memory sane for huge catalogues.
        self.render = functools.lru_cache(maxsize=16384)(self._render)
        super().__init__(address, Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() also resolves the host's FQDN, which can
        # stall for seconds where reverse DNS is slow; nothing here needs it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def _render(self, kind: str, number: int) -> bytes | None:
        if kind == "home":
            page: str | None = self.catalogue.render_home()
        elif kind == "listing":
            page = self.catalogue.render_listing(number)
        else:
            page = self.catalogue.render_product(number)
        return None if page is None else page.encode("utf-8")

    def process_request(self, request: Any, client_address: Any) -> None:
        # Called once per accepted connection, in the serving thread: the
        # right place to count it. ThreadingMixIn does not keep daemon
        # threads for server_close() to join, so track them here instead.
        thread = threading.Thread(target=self.process_request_thread,
                                  args=(request, client_address), daemon=True,
                                  name=f"practice-site-{self.server_address[1]}-connection")
        with self._clients_lock:
            self._clients.add(request)
            self._workers = [worker for worker in self._workers if worker.is_alive()]
            self._workers.append(thread)
        self.counters.record_connection()
        thread.start()

    def shutdown_request(self, request: Any) -> None:
        with self._clients_lock:
            self._clients.discard(request)
        super().shutdown_request(request)

    @property
    def open_clients(self) -> int:
        with self._clients_lock:
            return len(self._clients)

    def close_clients(self) -> None:
        """Wake every handler blocked on an idle keep-alive connection."""
        with self._clients_lock:
            clients = list(self._clients)
        for sock in clients:
            # shutdown() (unlike close()) interrupts a recv() blocked in
            # another thread; the handler thread then closes the socket itself.
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def join_workers(self, timeout: float) -> None:
        """Wait (bounded) for the connection threads woken by close_clients()."""
        deadline = time.monotonic() + timeout
        with self._clients_lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.join(max(0.0, deadline - time.monotonic()))

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients vanishing (timeouts, dropped pools, stop()) are routine here.
        error = sys.exc_info()[1]
        if isinstance(error, ConnectionError) or (
            self.stopping.is_set() and isinstance(error, OSError)
        ):
            return
        super().handle_error(request, client_address)


class PracticeSite:
    """The practice site on a background thread; use as a context manager.

    ``port=0`` picks a free port; ``port`` and ``url`` hold the real values once
    started (any 127.x.y.z ``host`` works on Linux: 127.0.0.2 is "another host").
    ``latency`` seconds are added to every catalogue and member page, ``api_latency`` seconds
    to every ``/api/items/<n>`` request. The login and token options (``token_ttl``,
    ``send_expires_in``, ``token_error``, the credentials) are those of
    :class:`crawler.practice.accounts.Accounts`; ``token_error`` and ``send_expires_in`` can
    also be set on the running site. ``robots`` is what ``/robots.txt`` answers (none until a
    test sets it).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, products: int = 1000,
                 per_page: int = 20, latency: float = 0.0, members: int = 200,
                 api_items: int = 200, revoke_after: int | None = None,
                 token_ttl: float = 60.0, username: str = "demo",
                 password: str = "demo-password", client_id: str = "demo-client",
                 client_secret: str = "demo-secret", api_latency: float = 0.0,
                 send_expires_in: bool = True, token_error: int | None = None) -> None:
        if latency < 0:
            raise ValueError("latency must be >= 0")
        if not (math.isfinite(api_latency) and api_latency >= 0):
            raise ValueError("api_latency must be a finite number of seconds >= 0")
        self.host = host
        self.port = port
        self.latency = latency
        self.api_latency = api_latency
        self.catalogue = Catalogue(products, per_page)  # validates the sizes
        self.counters = SiteCounters()
        self.accounts = Accounts(  # validates the login options
            self.counters, members=members, api_items=api_items, revoke_after=revoke_after,
            token_ttl=token_ttl, username=username, password=password, client_id=client_id,
            client_secret=client_secret, send_expires_in=send_expires_in, token_error=token_error)
        self._robots = RobotsFile()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL without trailing slash, e.g. ``http://127.0.0.1:54321``."""
        if self.port == 0:
            raise RuntimeError("the practice site has not been started")
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"

    @property
    def robots(self) -> RobotsFile:
        """The ``/robots.txt`` answer; set its fields (the server holds this very object)."""
        return self._robots

    @property
    def demo_credentials(self) -> dict[str, str]:
        """A copy of ``username``/``password`` (``/login``), ``client_id``/``client_secret``."""
        return dict(self.accounts.credentials)

    def revoke_sessions(self) -> int:
        """Log every session out server-side; return how many were live. Counts a revocation."""
        return self.accounts.revoke_sessions()

    def expire_tokens(self) -> int:
        """Invalidate every bearer token now; return how many were still valid."""
        return self.accounts.expire_tokens()

    @property
    def token_error(self) -> int | None:
        """The status ``POST /api/token`` answers instead of granting (None: it grants)."""
        return self.accounts.token_error

    @token_error.setter
    def token_error(self, status: int | None) -> None:
        check_token_error(status)
        self.accounts.token_error = status

    @property
    def send_expires_in(self) -> bool:
        """Whether a granted token's answer announces its ``expires_in``."""
        return self.accounts.send_expires_in

    @send_expires_in.setter
    def send_expires_in(self, send: bool) -> None:
        self.accounts.send_expires_in = bool(send)

    @property
    def open_connections(self) -> int:
        """Client connections currently open (0 once stopped)."""
        return 0 if self._server is None else self._server.open_clients

    def start(self) -> PracticeSite:
        if self._thread is not None:
            raise RuntimeError("the practice site is already running")
        server = _Server((self.host, self.port), self.catalogue, self.accounts, self.counters,
                         self.latency, self._robots, self.api_latency)
        self.port = server.server_address[1]
        # A short poll interval keeps stop() (which waits for the loop) quick.
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"practice-site-{self.port}", daemon=True,
        )
        self._server = server
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every client connection and join all threads."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        # The (closed) server is kept so open_connections stays truthful.
        self._thread = None
        server.stopping.set()  # wakes handlers sleeping in /delay or latency
        server.shutdown()  # no new connections are accepted after this
        server.close_clients()  # idle keep-alive handlers would block forever
        server.server_close()  # closes the listening socket
        server.join_workers(timeout=5.0)  # each closes its socket on the way out
        thread.join()

    def reset_counters(self) -> None:
        """Zero all counters (already-open connections are not re-counted).

        Sessions and tokens survive, and so does the ``revoke_after`` page count.
        """
        self.counters.reset()

    def __enter__(self) -> PracticeSite:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
