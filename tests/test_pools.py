"""Connection pools follow the hosts a crawl visits: W workers on H hosts keep at most W x H
connections and evict none, up to http.max_host_pools; past it, evictions are counted and
explained. Connections are counted by the servers themselves."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from crawler.http.sessions import PoolSizing
from crawler.runner import run_crawl

NO_ROBOTS = "[robots]\nobey = false\n"


class _Counting(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Page)
        self.connections = 0
        self.lock = threading.Lock()


class _Page(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so a reused connection is one connection
    server: _Counting

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        body = b"<p>page</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's signature
        pass


@pytest.fixture
def hosts() -> Iterator[list[_Counting]]:
    servers = [_Counting() for _ in range(120)]
    for server in servers:
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield servers
    for server in servers:
        server.shutdown()
        server.server_close()


def urls(servers: list[_Counting], pages: int) -> list[str]:
    # Page by page across all hosts, as a broad crawl meets them.
    return [f"http://127.0.0.1:{server.server_port}/p/{n}" for n in range(pages) for server in servers]


def test_workers_on_many_hosts_reuse_one_connection_each_and_evict_none(hosts, probe_config) -> None:
    workers = 4
    report = run_crawl(probe_config(urls(hosts, 30), f"[crawl]\nworkers = {workers}\n" + NO_ROBOTS))
    assert report.stats["pages"] == 120 * 30
    opened = sum(server.connections for server in hosts)
    assert opened <= workers * len(hosts), opened  # before: 766 connections for 120 x 30 pages
    assert opened == report.stats["connections_opened"]
    assert report.stats.get("pool_evictions", 0) == 0
    assert report.stats.get("pool_discards", 0) == 0


def test_more_hosts_than_max_host_pools_evict_and_the_summary_says_why(hosts, probe_config, capsys) -> None:
    from rich.console import Console

    from crawler.progress import print_summary

    # One worker: its session meets all 120 hosts, 20 more than it keeps pools for.
    config = probe_config(urls(hosts, 2), "[crawl]\nworkers = 1\n[http]\nmax_host_pools = 100\n" + NO_ROBOTS)
    report = run_crawl(config)
    assert report.host_pools == 100
    assert report.stats["pool_evictions"] > 0
    print_summary(Console(width=300, highlight=False), report, {})
    assert "more hosts than the 100 each worker keeps a connection to (http.max_host_pools" in capsys.readouterr().out


def test_pools_stay_within_the_open_file_limit() -> None:
    # 16 workers, 20,000 open files, 256 kept free: 1,234 hosts each, not the 2,000 asked for.
    assert PoolSizing.for_crawl(16, 2000, 20_000) == PoolSizing(hosts=1234)
    assert PoolSizing.for_crawl(16, 1024, 20_000) == PoolSizing(hosts=1024)
    assert PoolSizing.for_crawl(4, 1024, 100) == PoolSizing(hosts=1)


def test_the_ca_bundle_is_looked_up_once_per_pool_not_once_per_request(monkeypatch) -> None:
    import os.path

    import requests.adapters
    from requests.cookies import RequestsCookieJar

    from crawler.http.fetcher import Fetcher, Timeouts
    from crawler.http.sessions import SessionRegistry, SessionSettings, make_session_factory
    from crawler.request import Request
    from crawler.stats import Stats
    from recorder import Recorder

    looked_up: list[str] = []
    exists = os.path.exists

    def counting_exists(path: str) -> bool:
        looked_up.append(path)
        return exists(path)

    monkeypatch.setattr(requests.adapters.os.path, "exists", counting_exists)
    with Recorder("127.0.0.2", tls=True) as secure:
        stats = Stats()
        build = make_session_factory(SessionSettings("test", 5, str(secure.ca_pem)), PoolSizing(4), stats)
        fetcher = Fetcher(
            SessionRegistry(lambda: build(RequestsCookieJar())), timeouts=Timeouts(5, 5, 30),
            max_body_size=2**20, max_redirects=5, error_statuses=frozenset(), stats=stats,
        )
        for n in range(20):
            assert fetcher.fetch(Request(secure.url_for(f"/p/{n}"))).status == 200
    assert looked_up.count(str(secure.ca_pem)) == 1  # before: once per request, 20
