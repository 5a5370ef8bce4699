"""The framing checks against servers we did not write: httpbin served by Django's development
server, which keeps HTTP/1.1 connections open. Its framing is right (Content-Length, a 204 and
a 304 without a body, a stream that ends with the connection), so a crawl of it must count
nothing as broken framing and reuse its connections, as the server's own log of connections
and requests shows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from crawler.runner import run_crawl
from helpers import deadline
from serverproc import serve

WORKERS = 2
# Answered without a Content-Length, so the server closes the connection after it.
ENDS_WITH_THE_CONNECTION = {"/stream/20"}
PAGES = ["/links/30/0", "/status/204", "/status/304", "/stream/20", "/bytes/5000", "/html",
         "/drip?duration=0.3&numbytes=30&code=200", "/range/2000"]


@pytest.fixture
def httpbin(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    log = tmp_path / "werkzeug.log"
    with serve("httpbin_server.py", "--keep-alive", "--log", str(log), host="127.0.0.2") as url:
        yield url, log


def test_a_keep_alive_server_with_correct_framing_counts_none_as_broken(httpbin, probe_config) -> None:
    url, log = httpbin
    config = probe_config(
        [url + page for page in PAGES],
        f"[crawl]\nworkers = {WORKERS}\n[robots]\nobey = false\n[politeness]\nconcurrency = {WORKERS}\n",
        entry='allowed_domains = ["127.0.0.2"]',
        follow_links=True,
    )
    with deadline(60):
        report = run_crawl(config)
    assert not report.interrupted
    stats = report.stats
    assert "malformed:framing" not in stats and "failed" not in stats, stats
    lines = log.read_text().splitlines()
    connections = [line for line in lines if line.startswith("connection ")]
    requests = Counter(line.split()[3] for line in lines if not line.startswith("connection "))
    # /links/30/0 links to /links/30/1..29 (and back to itself): 29 more pages, each once.
    assert len(requests) == len(PAGES) + 29 and set(requests.values()) == {1}, requests
    assert report.whole_crawl.done == len(requests)
    # Every worker kept its one connection for all of its requests, but where the server ended it.
    assert len(connections) <= WORKERS + len(ENDS_WITH_THE_CONNECTION), lines
    assert stats["connections_opened"] == len(connections)
