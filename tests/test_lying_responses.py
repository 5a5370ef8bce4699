"""Responses that lie about where they end, crawled for real from a raw TCP server.

No HTTP server library would send these, so the server here writes its bytes by hand: a status
line and headers that trickle in forever, a header block cut off by the connection closing, and
bytes past the end a response announced (after ``Content-Length``, after a body-less 204), sent
with the response or only once the client's next request is in. Each test checks what the crawl
kept and what the server saw: how long the client stayed, and which connection each request
came in on.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from crawler.runner import run_crawl
from helpers import Crawled, deadline, wait_until

TRICKLE_FOR = 60.0  # seconds the endless header block would go on; the crawl must not wait for it
INJECTED_STATUS = 299  # the status of the answer smuggled past a response's end: no page may get it


def http_response(status: int, body: bytes, *, reason: str = "OK", length: int | None = None) -> bytes:
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/html\r\nContent-Length: {len(body) if length is None else length}\r\n\r\n"
    return head.encode() + body


INJECTED = http_response(INJECTED_STATUS, b'<a href="/evil">the answer to a request nobody made</a>', reason="Injected")


def page(path: str) -> bytes:
    return http_response(200, f'<p class="path">{path}</p>'.encode())


@dataclass
class LyingServer:
    """Answers each path its own way; records every request with the connection it came on."""

    sock: socket.socket = field(default_factory=socket.socket)
    requests: list[tuple[int, str]] = field(default_factory=list)  # (connection number, path)
    held: list[float] = field(default_factory=list)  # seconds each /trickle-headers client stayed
    _connections: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return "http://127.0.0.1:%d" % self.sock.getsockname()[1]

    def hits(self, path: str) -> int:
        return sum(1 for _, seen in self.requests if seen == path)

    def connection_of(self, path: str) -> list[int]:
        return [number for number, seen in self.requests if seen == path]

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self._connections += 1
                number = self._connections
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        reader = conn.makefile("rb")
        try:
            while (path := self._read_request(reader)) is not None:
                with self._lock:
                    self.requests.append((number, path))
                if not self._answer(conn, reader, path):
                    return
        except OSError:
            pass  # the client hung up: what the tests are about
        finally:
            reader.close()
            conn.close()

    @staticmethod
    def _read_request(reader) -> str | None:
        line = reader.readline()
        if not line:
            return None
        while reader.readline() not in (b"\r\n", b""):
            pass
        return line.split()[1].decode()

    def _answer(self, conn: socket.socket, reader, path: str) -> bool:
        """Send the answer to ``path``; False to close the connection after it."""
        if path == "/trickle-headers":
            started = time.monotonic()
            try:
                for byte in b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nX-Padding: ":
                    conn.sendall(bytes([byte]))
                    time.sleep(0.05)
                while time.monotonic() - started < TRICKLE_FOR:
                    conn.sendall(b"x")
                    time.sleep(0.05)
            finally:
                self.held.append(time.monotonic() - started)
            return False
        if path == "/cut-headers":
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Le")
            return False
        if path == "/extra-with-body":  # the answer and the smuggled one in one write
            conn.sendall(page(path) + INJECTED)
        elif path == "/no-content-with-body":
            conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n" + INJECTED)
        elif path == "/extra-after-next-request":
            # The extra bytes come only once the client's next request has arrived, the worst
            # moment: the client can only take them for the answer to that request. Its real
            # answer follows them.
            conn.sendall(page(path))
            following = self._read_request(reader)
            if following is None:
                return False
            with self._lock:
                self.requests.append((-1, following))  # answered by the smuggled bytes
            conn.sendall(INJECTED + page(following))
        elif path == "/robots.txt":
            conn.sendall(http_response(404, b"", reason="Not Found"))
        else:
            conn.sendall(page(path))
        return True

    def stop(self) -> None:
        self.sock.close()


@pytest.fixture
def lying() -> Iterator[LyingServer]:
    server = LyingServer()
    server.start()
    yield server
    server.stop()


RECORDER = """
from crawler import Request, Spider


class Recorder(Spider):
    '''Records, per page, the path the server says it answered, and follows its links.'''

    name = "lying"
    urls = []

    def start_requests(self):
        for url in self.urls:
            yield Request(url, callback=self.parse)

    def parse(self, response):
        yield {"url": response.url, "status": response.status, "path": response.css("p.path::text").get()}
        for href in response.css("a::attr(href)").getall():
            yield response.follow(href, self.parse)
"""


def one_connection(*, read: float = 5.0, total: float = 30.0, attempts: int = 2) -> str:
    """One worker, one request at a time: every request reuses the one connection it can."""
    return f"""
        [crawl]
        workers = 1
        shutdown_grace = 0.5
        [politeness]
        concurrency = 1
        [http.timeout]
        read = {read}
        total = {total}
        [retry]
        attempts = {attempts}
        [retry.backoff]
        initial = 0.01
        max = 0.01
        """


def crawl(spider_config, urls: list[str], extra: str) -> Crawled:
    config = spider_config("lying", RECORDER, extra, urls=urls)
    with deadline(30):
        report = run_crawl(config)
    assert not report.interrupted, "the crawl was still running after 30 s"
    path = config.output_path("lying")
    items = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return Crawled(report, items, config)


def test_headers_that_never_end_are_cut_at_the_total_timeout(lying: LyingServer, spider_config) -> None:
    crawled = crawl(spider_config, [lying.url + "/trickle-headers", lying.url + "/after"],
                    one_connection(read=1.0, total=2.0, attempts=1))
    # Every byte came within the read timeout; only the total one bounds the header block.
    assert crawled.stats["failed:ReadTimeout"] == 1
    assert [item["path"] for item in crawled.items] == ["/after"]
    assert crawled.report.results[0].counts.failed == 1
    # The client hung up at the total timeout, not after the minute the server would go on for.
    wait_until(lambda: bool(lying.held), timeout=10)
    assert len(lying.held) == 1 and 1.9 <= lying.held[0] < TRICKLE_FOR / 2


def test_a_header_block_cut_off_by_the_connection_closing_is_never_a_page(lying: LyingServer, spider_config) -> None:
    crawled = crawl(spider_config, [lying.url + "/cut-headers", lying.url + "/after"], one_connection(attempts=2))
    assert lying.hits("/cut-headers") == 2  # lost like any broken connection, so tried again
    assert crawled.stats["failed:ConnectionLost"] == 1
    assert [item["path"] for item in crawled.items] == ["/after"]


@pytest.mark.parametrize("path", ["/extra-with-body", "/no-content-with-body"])
def test_bytes_past_the_end_of_a_response_close_its_connection(lying: LyingServer, spider_config, path: str) -> None:
    others = ["/after", "/later", "/last"]
    crawled = crawl(spider_config, [lying.url + path] + [lying.url + other for other in others], one_connection())
    assert crawled.stats["malformed:framing"] >= 1
    # Once the host broke framing, no connection to it served a second request: each answer
    # was the first on its connection, so none could be what the one before left behind.
    first_broken = [seen for _, seen in lying.requests].index(path)
    broken_on, _ = lying.requests[first_broken]
    after = [number for number, _ in lying.requests[first_broken + 1:]]
    assert broken_on not in after and len(set(after)) == len(after) == len(others) + 1  # + the retry
    assert {item["path"] for item in crawled.items} >= set(others)
    assert path in {item["url"].removeprefix(lying.url) for item in crawled.items}
    assert INJECTED_STATUS not in {item["status"] for item in crawled.items}
    assert lying.hits("/evil") == 0


def test_bytes_past_the_end_that_arrive_after_the_next_request_are_not_its_answer(
    lying: LyingServer, spider_config
) -> None:
    pages = ["/extra-after-next-request", "/after", "/later", "/last"]
    crawled = crawl(spider_config, [lying.url + path for path in pages], one_connection(attempts=3))
    # The request that was sent when the smuggled bytes came is not answered by them: it is
    # tried again on a new connection, and gets its own page.
    assert any(number == -1 for number, _ in lying.requests), "the server did not get to smuggle its bytes in"
    assert crawled.stats["malformed:framing"] >= 1
    assert "failed:BrokenFraming" not in crawled.stats
    assert sorted(item["path"] for item in crawled.items) == sorted(pages)
    assert all(item["status"] == 200 and item["url"].endswith(item["path"]) for item in crawled.items)
    assert lying.hits("/evil") == 0
