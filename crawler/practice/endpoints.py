"""The practice site's request handler: catalogue pages, failure endpoints, the login area.

It serves the catalogue described in :mod:`crawler.practice.catalogue` plus
named failure endpoints (in the spirit of Scrapy's mock server). ``<key>`` is
any string chosen by the caller; every request to a keyed endpoint bumps
``counters.attempts(key)`` (one counter per key, shared by all keyed
endpoints), and that count decides whether the request fails:

``/status/<code>``
    Answers ``code`` (200-599) with a tiny text body.
``/flaky/<key>?fail=N&status=503``
    The first N requests answer ``status``; later ones 200 ``<p class="ok">ok</p>``.
``/retry-after/<key>?fail=N&seconds=S&status=429``
    Like flaky; failures carry ``Retry-After: S``, S echoed verbatim ("0.5").
``/retry-after-date/<key>?fail=N&seconds=S&status=429``
    Like flaky; ``Retry-After`` is the HTTP-date of now + S.
``/drop/<key>?fail=N``
    The first N requests get the connection shut down with no response at all.
``/delay?seconds=S``
    Sleeps S seconds (at most 600), then answers 200.
``/redirect?to=<url-or-path>&status=302``
    Redirects (301/302/303/307/308) to ``to``, used verbatim as ``Location``.
``/redirect-chain/<n>``
    302 to ``/redirect-chain/<n-1>``; ``/redirect-chain/0`` answers 200.
``/redirect-loop``
    302 to itself, forever.
``/echo``
    200 JSON ``{"method", "path" (request target with query), "headers", "body"}``.
``/links?n=K&repeat=R``
    K links to ``/links/target/0`` .. ``/links/target/K-1``, each written R times.
``/links/target/<i>``
    A tiny 200 page.

The login area (``/login``, ``/logout``, ``/members/``), the bearer-token API
(``/api/token``, ``/api/items/<n>``, ``/api/redirect``) and ``/set-cookie`` are
documented and served by :mod:`crawler.practice.members`; ``/robots.txt`` answers
as the site's ``robots`` says (:mod:`crawler.practice.robots`); the catalogue's sitemaps
(``/sitemap.xml``, ``/sitemap.txt``, ``/sitemaps/...``) are served by
:mod:`crawler.practice.sitemaps`.

Defaults: ``fail=1``, ``seconds=1``, ``n=10``, ``repeat=1``. A malformed query
parameter is a 400; any other path is a 404. Every response carries an exact
``Content-Length`` (none for 204/304), so keep-alive works for errors too.
"""

from __future__ import annotations

import json
import math
import socket
import time
from email.utils import formatdate
from html import escape
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from crawler.practice import hostile, members, sitemaps
from crawler.practice.catalogue import layout

if TYPE_CHECKING:
    from crawler.practice.site import _Server

_HTML = "text/html; charset=utf-8"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class _BadRequest(Exception):
    """A malformed query parameter; answered with a 400."""


def _nat(text: str) -> int | None:
    """Parse a canonical non-negative integer path segment ("0", "17", not "007")."""
    if text.isascii() and text.isdigit() and len(text) <= 9 and (text == "0" or text[0] != "0"):
        return int(text)
    return None


def _param(query: dict[str, list[str]], name: str, default: str) -> str:
    return query.get(name, [default])[-1].strip()


def _int_param(query: dict[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    text = _param(query, name, str(default))
    try:
        value = int(text)
    except ValueError:
        raise _BadRequest(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise _BadRequest(f"{name} must be between {low} and {high}")
    return value


def _seconds_param(query: dict[str, list[str]], high: float = 600.0) -> tuple[str, float]:
    """The ``seconds`` parameter as given (for echoing) and as a number."""
    text = _param(query, "seconds", "1")
    try:
        value = float(text)
    except ValueError:
        raise _BadRequest("seconds must be a number") from None
    if not (math.isfinite(value) and 0 <= value <= high):
        raise _BadRequest(f"seconds must be between 0 and {high:g}")
    return text, value


def _phrase(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:  # e.g. 299: still a valid status, just unnamed
        return ""


def _ok_page(message: str = "ok") -> bytes:
    return layout(message, f'<p class="ok">{escape(message)}</p>').encode("utf-8")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one TCP connection, many requests
    server_version = "PracticeSite/1.0"
    # Headers and body go out in separate writes; without TCP_NODELAY Nagle
    # plus delayed ACKs can add ~40 ms to every keep-alive response.
    disable_nagle_algorithm = True
    server: _Server
    _still_active = False  # this request is counted as being answered (see SiteCounters)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # a benchmark run would otherwise print a line per request

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    # -- plumbing ---------------------------------------------------------

    def _send(self, status: int, body: bytes = b"", content_type: str = _HTML,
              headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        # 204/304 must not carry a body; http.client would not read one.
        has_body = status not in (204, 304)
        if has_body:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        # Answered as the response starts to leave: once its last byte is out, the client may
        # send its next request before this thread runs again (on a busy machine, long before),
        # and counting this one as still active then would show a concurrency the client never had.
        self._answered()
        self.end_headers()
        if has_body and body and self.command != "HEAD":
            self.wfile.write(body)

    def _send_text(self, status: int, text: str) -> None:
        self._send(status, text.encode("utf-8"), "text/plain; charset=utf-8")

    def _not_found(self, path: str) -> None:
        body = layout("404 Not Found", f"<h1>404 Not Found</h1>\n<p>Nothing at {escape(path)}</p>")
        self._send(404, body.encode("utf-8"))

    def _redirect(self, status: int, location: str,
                  headers: tuple[tuple[str, str], ...] = ()) -> None:
        link = escape(location)
        body = layout("Redirect", f'<p>Moved to <a href="{link}">{link}</a></p>')
        self._send(status, body.encode("utf-8"), headers=(("Location", location), *headers))

    def _read_body(self) -> bytes:
        """Consume the request body so the next request on the connection parses."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                # "<hex size>[;extensions]\r\n"; int() raises ValueError if malformed.
                size = int(self.rfile.readline(65537).split(b";")[0], 16)
                if size < 0:
                    raise ValueError("negative chunk size")
                if size == 0:
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # the CRLF closing the chunk
            while self.rfile.readline(65537).strip():
                pass  # trailers, up to the blank line
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError("negative Content-Length")
        return self.rfile.read(length)

    # -- routing ----------------------------------------------------------

    def _dispatch(self) -> None:
        target = urlsplit(self.path)
        path = target.path or "/"
        self.server.counters.record_request(path)
        self._still_active = True
        try:
            self._answer(path, target.query)
        finally:
            self._answered()

    def _answered(self) -> None:
        if self._still_active:
            self._still_active = False
            self.server.counters.request_answered()

    def _answer(self, path: str, query_text: str) -> None:
        try:
            body = self._read_body()
        except ValueError:
            self.close_connection = True  # we no longer know where the next request starts
            self._send_text(400, "malformed request body framing\n")
            return
        query = parse_qs(query_text, keep_blank_values=True)
        try:
            self._route(path, query, body)
        except _BadRequest as error:
            self._send_text(400, f"{error}\n")

    def _route(self, path: str, query: dict[str, list[str]], body: bytes) -> None:
        match path.split("/")[1:]:
            case [""]:
                self._catalogue_page("home", 0)
            case ["robots.txt"]:
                self.server.robots.answer(self)
            case ["sitemap.xml" | "sitemap.xml.gz" | "sitemap.txt" | "sitemap.txt.gz"] | ["sitemaps", _]:
                if not sitemaps.route(self, path):
                    self._not_found(path)
            case ["catalogue"]:
                self._redirect(301, "/catalogue/page/1")
            case ["catalogue", "page", number] if (page := _nat(number)) is not None:
                self._catalogue_page("listing", page)
            case ["product", number] if (product_id := _nat(number)) is not None:
                self._catalogue_page("product", product_id)
            case ["status", number] if (code := _nat(number)) is not None:
                if not 200 <= code <= 599:
                    raise _BadRequest("status must be between 200 and 599")
                self._send_text(code, f"{code} {_phrase(code)}".rstrip() + "\n")
            case ["flaky" | "retry-after" | "retry-after-date" | "drop" as kind, key]:
                self._keyed_failure(kind, unquote(key), query)
            case ["delay"]:
                self._delay(query)
            case ["redirect"]:
                to = _param(query, "to", "")
                status = _int_param(query, "status", 302, 300, 308)
                if not to or status not in _REDIRECTS:
                    raise _BadRequest("need to=<url> and status in 301/302/303/307/308")
                if not to.isprintable():  # a decoded CR/LF would inject headers
                    raise _BadRequest("to must not contain control characters")
                self._redirect(status, to)
            case ["redirect-chain", number] if (remaining := _nat(number)) is not None:
                if remaining:
                    self._redirect(302, f"/redirect-chain/{remaining - 1}")
                else:
                    self._send(200, _ok_page("end of chain"))
            case ["redirect-loop"]:
                self._redirect(302, "/redirect-loop")
            case ["echo"]:
                self._echo(body)
            case ["links"]:
                self._links(query)
            case ["links", "target", number] if (index := _nat(number)) is not None:
                page = layout(f"Target {index}", f'<p class="target">target {index}</p>')
                self._send(200, page.encode("utf-8"))
            case ["hostile", *rest]:
                if not hostile.route(self, rest, query):
                    self._not_found(path)
            case ["login" | "logout" | "members" | "api" | "set-cookie", *_]:
                if not members.route(self, path, query, body):
                    self._not_found(path)
            case _:
                self._not_found(path)

    # -- endpoints --------------------------------------------------------

    def _catalogue_page(self, kind: str, number: int) -> None:
        page = self.server.render(kind, number)
        if self.server.latency:
            self.server.stopping.wait(self.server.latency)
        if page is None:
            self._not_found(self.path)
        else:
            self._send(200, page)

    def _keyed_failure(self, kind: str, key: str, query: dict[str, list[str]]) -> None:
        # Validate everything before counting, so a bad URL is not an attempt.
        fail = _int_param(query, "fail", 1, 0, 1_000_000)
        default_status = 503 if kind == "flaky" else 429
        status = _int_param(query, "status", default_status, 200, 599)
        seconds_text, seconds = _seconds_param(query, high=float(10**9))
        attempt = self.server.counters.next_attempt(key)
        if attempt > fail:
            self._send(200, _ok_page(), headers=(("X-Attempt", str(attempt)),))
            return
        if kind == "drop":
            # No status line at all: the client sees the connection die.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        headers: tuple[tuple[str, str], ...] = (("X-Attempt", str(attempt)),)
        if kind == "retry-after":
            headers += (("Retry-After", seconds_text),)
        elif kind == "retry-after-date":
            headers += (("Retry-After", formatdate(time.time() + seconds, usegmt=True)),)
        body = layout("Failure", f'<p class="fail">attempt {attempt} failed</p>')
        self._send(status, body.encode("utf-8"), headers=headers)

    def _delay(self, query: dict[str, list[str]]) -> None:
        _, seconds = _seconds_param(query)
        if self.server.stopping.wait(seconds):
            # Shutting down: do not hand out a response that never waited.
            self.close_connection = True
            return
        # If the client gave up meanwhile, the write fails with a
        # ConnectionError that the server's handle_error swallows.
        self._send(200, _ok_page(f"waited {seconds:g}s"))

    def _echo(self, body: bytes) -> None:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        payload = {
            "method": self.command,
            "path": self.path,  # the request target as sent, query included
            "headers": headers,
            "body": body.decode("utf-8", errors="replace"),
        }
        self._send(200, json.dumps(payload).encode("utf-8"), "application/json")

    def _links(self, query: dict[str, list[str]]) -> None:
        count = _int_param(query, "n", 10, 0, 10_000)
        repeat = _int_param(query, "repeat", 1, 1, 100)
        links = "\n".join(
            f'<li><a class="link" href="/links/target/{i}">target {i}</a></li>'
            for i in range(count) for _ in range(repeat)
        )
        page = layout(f"{count} links", f'<ul class="links">\n{links}\n</ul>')
        self._send(200, page.encode("utf-8"))
