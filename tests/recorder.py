"""A small real HTTP(S) server for tests: it answers by route and remembers every request.

What a crawl sent is then read from the server's side, not from the crawler's own account::

    with Recorder("127.0.0.2") as site:
        site.redirect("/old", "http://127.0.0.3:8000/new")          # any raw Location bytes too
        site.route("/api", 200, {"Content-Type": "application/json"}, b"{}")
        site.page("/links", ["/a", "http://127.0.0.3:8000/b"])      # an HTML page of links
        site.robots = "User-agent: *\\nDisallow: /private\\n"       # None (default): 404
        ... crawl site.url + "/old" ...
        [hit] = site.received("/api")
        assert "x-api-token" not in hit.headers                     # case-insensitive
        assert hit.local == ("127.0.0.2", site.port)                # where it was received

- Any other path answers ``200`` with an HTML page listing ``links`` (empty by default).
- ``Recorder(host, port)`` binds ``host`` (any 127.0.0.x, or ``::1``) on ``port`` (0: a free
  one). Two recorders may share one port number on different addresses; :func:`recorders`
  makes such a group on a port free on all of them.
- ``tls=True`` serves HTTPS with a certificate from a ``trustme`` CA for the address and
  ``hostnames``; ``ca_pem`` is the path of the CA's PEM (for ``[http] ca_bundle``). Pass
  ``ca=`` to share one CA between recorders. A handshake the client gives up (an untrusted
  certificate) is counted in ``handshake_failures`` (read it after ``wait_for_handshakes()``);
  nothing else is recorded for it.
- Each request is kept as a :class:`Received`: ``method``, ``target`` (path and query as sent),
  ``path``, ``query``, ``headers`` (case-insensitive; ``headers.carries(secret)`` looks in every
  value), ``body``, ``local`` (the address and port it arrived on), ``peer``, ``tls``. Read them
  with ``requests``, ``received(path, method=)``, ``containing(marker)``, ``count(path)``,
  ``targets()``; ``clear()`` forgets them.
- Routes are ``path -> (status, headers, body)``: ``headers`` a mapping or a list of pairs whose
  values are ``str`` (sent as latin-1, else UTF-8) or ``bytes`` (sent as they are); ``body``
  ``str`` or ``bytes``; ``Content-Length`` is added unless given. A route may also be a callable
  taking the :class:`Received` request and returning that triple. A route is looked up by the
  request target (path and query) first, then by its path alone.

Thread-safe: the crawl's threads may hit it while the test reads it. Stopping is quick: idle
keep-alive connections are shut down rather than waited for.

Also here, for crawls against recorders: ``loopback_only_lookups(monkeypatch)`` (no DNS query
leaves the machine), ``addresses_of(host, port)``, ``has_ipv6_loopback()`` and
``toml_tables({...})`` (config tables as TOML text).
"""

from __future__ import annotations

import contextlib
import html
import shutil
import socket
import socketserver
import ssl
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Union
from urllib.parse import urlsplit

HeaderValue = Union[str, bytes]
HeaderList = list[tuple[str, HeaderValue]]
Answer = tuple[int, Union[Mapping[str, HeaderValue], Iterable[tuple[str, HeaderValue]], None], Union[str, bytes]]


class Headers(Mapping[str, str]):
    """Request headers as received: looked up case-insensitively, iterated with their names as
    sent; a header sent more than once has its values joined with ``", "``."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        for name, value in pairs:
            key = name.lower()
            if key in self._items:
                sent_as, earlier = self._items[key]
                self._items[key] = (sent_as, f"{earlier}, {value}")
            else:
                self._items[key] = (name, value)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._items

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({dict(self._items.values())!r})"

    def carries(self, secret: str) -> bool:
        """Whether any header's value contains ``secret``."""
        return any(secret in value for _, value in self._items.values())


@dataclass(frozen=True)
class Received:
    """One request as the server received it."""

    method: str
    target: str  # the request target as sent: path and query
    headers: Headers
    body: bytes
    local: tuple[str, int]  # the address and port it was received on
    peer: tuple[str, int]
    tls: bool

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> str:
        return urlsplit(self.target).query


def html_page(links: Iterable[str] = (), title: str = "page") -> bytes:
    """A UTF-8 HTML page with one ``<a>`` per link; hrefs are kept as written (only HTML-escaped,
    so tabs, backslashes and non-ASCII reach the parser as they are)."""
    anchors = "\n".join(f'<a href="{html.escape(href, quote=True)}">link {n}</a>' for n, href in enumerate(links))
    return (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>'
        f"<body><p>{html.escape(title)}</p>\n{anchors}\n</body></html>"
    ).encode("utf-8")


def _header_list(headers: Mapping[str, HeaderValue] | Iterable[tuple[str, HeaderValue]] | None) -> HeaderList:
    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return list(headers.items())
    return list(headers)


def _encoded(value: HeaderValue) -> bytes:
    if isinstance(value, bytes):
        return value
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode("utf-8")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the crawl's pooled sessions expect
    timeout = 10  # an idle keep-alive connection is closed after this, if the test has not ended it
    server_version = "recorder"
    sys_version = ""
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def _answer(self) -> None:
        recorder = self.server.recorder
        length = self.headers.get("Content-Length", "")
        body = self.rfile.read(int(length)) if length.isdigit() else b""
        received = Received(
            method=self.command,
            target=self.path,
            headers=Headers(self.headers.items()),
            body=body,
            local=tuple(self.connection.getsockname()[:2]),  # type: ignore[arg-type]
            peer=tuple(self.client_address[:2]),  # type: ignore[arg-type]
            tls=isinstance(self.connection, ssl.SSLSocket),
        )
        recorder._record(received)
        status, headers, payload = recorder._respond(received)
        self._send(status, headers, payload)

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _answer

    def _send(self, status: int, headers: HeaderList, payload: bytes) -> None:
        try:
            reason = HTTPStatus(status).phrase
        except ValueError:
            reason = "Unknown"
        names = {name.lower() for name, _ in headers}
        if "content-length" not in names and "transfer-encoding" not in names:
            headers = [*headers, ("Content-Length", str(len(payload)))]
        if self.headers.get("Connection", "").lower() == "close":
            self.close_connection = True
            headers = [*headers, ("Connection", "close")]
        head = [f"HTTP/1.1 {status} {reason}\r\n".encode("ascii")]
        head += [name.encode("ascii") + b": " + _encoded(value) + b"\r\n" for name, value in headers]
        self.wfile.write(b"".join(head) + b"\r\n" + (b"" if self.command == "HEAD" else payload))
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # stopping does not wait for connection threads (they are shut down)
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], recorder: Recorder) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.recorder = recorder
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind would look the address up with getfqdn(): a reverse DNS query.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Runs in the connection's own thread: the TLS handshake too, so one slow or failed
        handshake cannot hold up accepting the next connection."""
        recorder = self.recorder
        connection = request
        recorder._track(connection, True)
        try:
            if recorder._tls_context is not None:
                request.settimeout(10)
                recorder._handshaking(+1)
                try:
                    connection = recorder._tls_context.wrap_socket(request, server_side=True)
                except (ssl.SSLError, OSError):
                    recorder._handshake_failed()
                    return
                finally:
                    recorder._track(request, False)
                    recorder._handshaking(-1)
                recorder._track(connection, True)
            super().finish_request(connection, client_address)
        finally:
            recorder._track(connection, False)
            if connection is not request:
                with contextlib.suppress(OSError):
                    connection.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that hangs up mid-request is not the test's business


class Recorder:
    """A recording HTTP(S) server on ``host:port``; see the module docstring."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tls: bool = False,
        ca: Any | None = None,
        hostnames: Iterable[str] = (),
        routes: Mapping[str, Answer | Callable[[Received], Answer]] | None = None,
        robots: str | None = None,
        links: Iterable[str] = (),
    ) -> None:
        self.host = host
        self._lock = threading.Lock()
        self._requests: list[Received] = []
        self._routes: dict[str, Answer | Callable[[Received], Answer]] = dict(routes or {})
        self._connections: set[Any] = set()
        self._handshake_failures = 0
        self._handshakes = threading.Condition(self._lock)
        self._handshakes_in_progress = 0
        self.robots = robots
        self.links = list(links)
        self.ca: Any | None = None
        self.ca_pem: Path | None = None
        self._folder: Path | None = None
        self._tls_context: ssl.SSLContext | None = None
        if tls or ca is not None:
            self._tls_context = self._make_tls(ca, hostnames)
        self._server = _Server((host, port), self)
        self.port: int = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    def _make_tls(self, ca: Any | None, hostnames: Iterable[str]) -> ssl.SSLContext:
        import trustme

        self.ca = ca or trustme.CA()
        cert = self.ca.issue_cert(self.host, *hostnames)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        cert.configure_cert(context)
        self._folder = Path(tempfile.mkdtemp(prefix="recorder-"))
        self.ca_pem = self._folder / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_pem))
        return context

    # -- where it is --------------------------------------------------------------------------

    @property
    def scheme(self) -> str:
        return "https" if self._tls_context is not None else "http"

    @property
    def netloc(self) -> str:
        """``host:port`` as a URL writes it (an IPv6 address in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def url(self) -> str:
        """The origin: ``http://127.0.0.2:PORT`` (no trailing slash)."""
        return f"{self.scheme}://{self.netloc}"

    def url_for(self, path: str) -> str:
        return self.url + path

    # -- what it answers ----------------------------------------------------------------------

    def route(
        self,
        path: str,
        status: int = 200,
        headers: Mapping[str, HeaderValue] | Iterable[tuple[str, HeaderValue]] | None = None,
        body: str | bytes = b"",
    ) -> None:
        with self._lock:
            self._routes[path] = (status, headers, body)

    def handle(self, path: str, answer: Callable[[Received], Answer]) -> None:
        """Answer ``path`` with ``answer(received)``, computed for each request."""
        with self._lock:
            self._routes[path] = answer

    def redirect(self, path: str, location: str | bytes, status: int = 302) -> None:
        """``path`` redirects to ``location``, sent byte for byte (``str`` as UTF-8)."""
        raw = location if isinstance(location, bytes) else location.encode("utf-8")
        self.route(path, status, [("Location", raw)])

    def page(self, path: str, links: Iterable[str], headers: Mapping[str, HeaderValue] | None = None) -> None:
        """``path`` is an HTML page linking to ``links``."""
        self.route(path, 200, {"Content-Type": "text/html; charset=utf-8", **(headers or {})}, html_page(links, path))

    def json(self, path: str, document: object, status: int = 200) -> None:
        import json

        self.route(path, status, {"Content-Type": "application/json"}, json.dumps(document))

    def _respond(self, received: Received) -> tuple[int, HeaderList, bytes]:
        with self._lock:
            route = self._routes.get(received.target, self._routes.get(received.path))
            robots, links = self.robots, list(self.links)
        if route is None:
            if received.path == "/robots.txt":
                if robots is None:
                    return 404, [("Content-Type", "text/plain")], b"no robots.txt here"
                return 200, [("Content-Type", "text/plain; charset=utf-8")], robots.encode("utf-8")
            return 200, [("Content-Type", "text/html; charset=utf-8")], html_page(links, received.target)
        status, headers, body = route(received) if callable(route) else route
        return status, _header_list(headers), body.encode("utf-8") if isinstance(body, str) else body

    # -- what it received ---------------------------------------------------------------------

    def _record(self, received: Received) -> None:
        with self._lock:
            self._requests.append(received)

    @property
    def requests(self) -> list[Received]:
        """Every request received so far, in order of arrival."""
        with self._lock:
            return list(self._requests)

    def received(self, path: str | None = None, *, method: str | None = None) -> list[Received]:
        """The requests for ``path`` (matched against the target with its query, or the path
        alone), optionally of one method."""
        return [
            hit
            for hit in self.requests
            if (path is None or path in (hit.target, hit.path)) and (method is None or hit.method == method)
        ]

    def containing(self, marker: str) -> list[Received]:
        """The requests whose target contains ``marker`` anywhere."""
        return [hit for hit in self.requests if marker in hit.target]

    def count(self, path: str) -> int:
        return len(self.received(path))

    def targets(self) -> list[str]:
        return [hit.target for hit in self.requests]

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._handshake_failures = 0

    @property
    def handshake_failures(self) -> int:
        """TLS handshakes the client gave up (an untrusted certificate, say). Read it after
        :meth:`wait_for_handshakes`: the server may learn of a failure a moment after the client."""
        with self._lock:
            return self._handshake_failures

    def wait_for_handshakes(self, timeout: float = 5.0) -> None:
        """Wait until no TLS handshake is under way. A client cannot fail a handshake before the
        server has sent its certificate, so once the client is done, this is quick and exact."""
        with self._handshakes:
            self._handshakes.wait_for(lambda: self._handshakes_in_progress == 0, timeout)

    def _handshaking(self, change: int) -> None:
        with self._handshakes:
            self._handshakes_in_progress += change
            self._handshakes.notify_all()

    def _handshake_failed(self) -> None:
        with self._lock:
            self._handshake_failures += 1

    def _track(self, connection: Any, open_: bool) -> None:
        with self._lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    # -- running ------------------------------------------------------------------------------

    def start(self) -> Recorder:
        if self._thread is not None:
            return self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
            name=f"recorder {self.netloc}",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join()
            self._thread = None
        self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:  # idle keep-alive connections: end them now
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def __enter__(self) -> Recorder:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"Recorder({self.url})"


@contextlib.contextmanager
def recorders(*hosts: str, tls: bool = False, **options: Any) -> Iterator[tuple[Recorder, ...]]:
    """One running recorder per host, all on the same port number (free on every one of them).

    With ``tls`` they share one CA, so one ``ca_pem`` trusts them all."""
    ca = None
    if tls:
        import trustme

        ca = trustme.CA()
    for _ in range(50):
        made: list[Recorder] = []
        try:
            for host in hosts:
                made.append(Recorder(host, made[0].port if made else 0, ca=ca, **options))
        except OSError:
            for recorder in made:
                recorder.stop()
            continue
        break
    else:
        raise RuntimeError(f"no port number free on all of {hosts}")
    with contextlib.ExitStack() as stack:
        for recorder in made:
            stack.enter_context(recorder)
        yield tuple(made)


# -- for crawls against recorders ----------------------------------------------------------------


def loopback_only_lookups(monkeypatch: Any) -> list[str]:
    """Make ``socket.getaddrinfo`` refuse (as an unknown name) every host that is not a loopback
    address in some spelling (``127.0.0.2``, ``0x7f.1``, ``::1``) or ``localhost``, so a test
    never sends a DNS query off the machine; returns the list of refused names, for asserting
    that none was tried."""
    import ipaddress

    resolve = socket.getaddrinfo
    refused: list[str] = []

    def is_loopback(name: str) -> bool:
        if name == "localhost":
            return True
        try:
            return ipaddress.ip_address(name).is_loopback
        except ValueError:
            pass
        try:  # the legacy spellings the C library also accepts: 0x7f.1, 2130706433, 127.1
            return socket.inet_aton(name)[0] == 127
        except OSError:
            return False

    def loopback_only(host: Any, *args: Any, **kwargs: Any) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        if not is_loopback(name):
            refused.append(name)
            raise socket.gaierror(socket.EAI_NONAME, f"{name!r}: not a loopback host (refused by the test)")
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    return refused


def addresses_of(host: str, port: int) -> set[str]:
    """The addresses a client connecting to ``host`` may reach (unpatched resolver)."""
    return {info[4][0] for info in _real_getaddrinfo(host, port, type=socket.SOCK_STREAM)}


_real_getaddrinfo = socket.getaddrinfo


def has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


def toml_tables(tables: Mapping[str, Mapping[str, Any]]) -> str:
    """TOML text for ``{"robots": {"obey": False}, "http.timeout": {"read": 2}}`` (values are
    strings, numbers, booleans and lists of them: their JSON form is valid TOML)."""
    import json

    return "".join(
        f"\n[{name}]\n" + "".join(f"{key} = {json.dumps(value)}\n" for key, value in table.items())
        for name, table in tables.items()
    )
