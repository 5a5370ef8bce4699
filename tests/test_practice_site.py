"""Tests for the bundled practice site: a real server, exercised with requests."""

from __future__ import annotations

import html
import json
import os
import re
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import requests

from crawler.practice import PracticeSite
from crawler.practice.catalogue import Catalogue, product
from helpers import TIMEOUT
from helpers import site_get as get

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def site() -> Iterator[PracticeSite]:
    # 45 products at 10 per page: five pages, the last one only half full.
    with PracticeSite(products=45, per_page=10) as running:
        yield running




def field(page: str, css_class: str) -> str:
    """Text of the first element with ``class="css_class"``."""
    match = re.search(rf'class="{css_class}"[^>]*>(.*?)</', page, re.S)
    assert match, f"no element with class {css_class!r}"
    return html.unescape(match.group(1))


def links(page: str, css_class: str) -> list[str]:
    return re.findall(rf'<a class="{css_class}" href="([^"]+)"', page)


# -- catalogue ------------------------------------------------------------


def test_home_links_to_first_listing_page(site: PracticeSite, session: requests.Session) -> None:
    response = get(session, site, "/")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert '<meta charset="utf-8">' in response.text
    assert links(response.text, "catalogue") == ["/catalogue/page/1"]
    moved = get(session, site, "/catalogue")
    assert moved.url == site.url + "/catalogue/page/1"
    assert [r.status_code for r in moved.history] == [301]


def test_listing_pages_link_every_product_and_each_other(site: PracticeSite,
                                                         session: requests.Session) -> None:
    seen: list[str] = []
    path: str | None = "/catalogue/page/1"
    pages = 0
    while path:
        page = get(session, site, path).text
        pages += 1
        assert field(page, "current") == str(pages)
        assert field(page, "total") == "5"
        seen += links(page, "product-link")
        previous = re.search(r'<li class="previous"><a href="([^"]+)"', page)
        assert (previous.group(1) if previous else None) == (
            f"/catalogue/page/{pages - 1}" if pages > 1 else None)
        following = re.search(r'<li class="next"><a href="([^"]+)"', page)
        path = following.group(1) if following else None
    assert pages == 5
    assert seen == [f"/product/{i}" for i in range(1, 46)]
    for missing in ("/catalogue/page/0", "/catalogue/page/6", "/catalogue/page/01"):
        assert get(session, site, missing).status_code == 404


@pytest.mark.parametrize("product_id", [1, 10, 11, 45])
def test_product_page_matches_product_data(site: PracticeSite, session: requests.Session,
                                           product_id: int) -> None:
    expected = product(product_id)
    response = get(session, site, expected["url"])
    assert response.status_code == 200
    page = response.text
    scraped = {
        "id": product_id,
        "name": field(page, "name"),
        "price": field(page, "price"),
        "sku": field(page, "sku"),
        "category": field(page, "category"),
        "description": field(page, "description"),
        "stock": int(field(page, "stock")),
        "rating": int(field(page, "rating")),
        "url": response.url.removeprefix(site.url),
    }
    assert scraped == expected
    assert re.fullmatch(r"\d+\.\d\d", expected["price"])
    assert 1 <= expected["rating"] <= 5
    related = links(page, "related-link")
    assert len(related) == len(set(related)) == 3
    assert f"/product/{product_id}" not in related
    assert all(1 <= int(link.rsplit("/", 1)[1]) <= 45 for link in related)
    assert links(page, "back") == [f"/catalogue/page/{(product_id - 1) // 10 + 1}"]


def test_non_ascii_names_are_served_as_utf8(site: PracticeSite, session: requests.Session) -> None:
    fancy = [i for i in range(1, 46) if not product(i)["name"].isascii()]
    assert fancy, "the catalogue should exercise non-ASCII text"
    response = get(session, site, f"/product/{fancy[0]}")
    assert response.encoding == "utf-8"
    assert field(response.text, "name") == product(fancy[0])["name"]


def test_product_data_is_deterministic_across_processes() -> None:
    code = "import json; from crawler.practice.catalogue import product; print(json.dumps(product(7)))"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONHASHSEED": "random"}
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True, env=env, cwd=REPO_ROOT, timeout=TIMEOUT).stdout
    assert json.loads(output) == product(7)
    assert Catalogue(45, 10).related(7) == Catalogue(45, 10).related(7)


@pytest.mark.parametrize("path", ["/nope", "/product/0", "/product/46", "/product/007",
                                  "/product/1/", "/product/abc", "/catalogue/page"])
def test_unknown_paths_are_404_with_html(site: PracticeSite, session: requests.Session,
                                         path: str) -> None:
    response = get(session, site, path)
    assert response.status_code == 404
    assert "404 Not Found" in response.text


def test_latency_delays_catalogue_pages_only() -> None:
    with PracticeSite(products=5, latency=0.2) as slow, requests.Session() as http:
        started = time.monotonic()
        assert get(http, slow, "/product/1").status_code == 200
        assert time.monotonic() - started >= 0.2
        started = time.monotonic()
        assert get(http, slow, "/status/200").status_code == 200
        assert time.monotonic() - started < 0.2


# -- connections and counters ---------------------------------------------


def test_keep_alive_reuses_one_connection(site: PracticeSite, session: requests.Session) -> None:
    for i in range(20):
        # Error statuses must keep the connection alive too.
        path = f"/product/{i + 1}" if i % 4 else "/status/404"
        assert get(session, site, path).status_code == (404 if i % 4 == 0 else 200)
    assert site.counters.connections == 1
    assert site.counters.requests == 20
    assert site.counters.hits("/status/404") == 5
    assert site.counters.hits("/product/2") == 1


def test_counters_snapshot_and_reset(site: PracticeSite, session: requests.Session) -> None:
    get(session, site, "/product/3?ignored=1")
    get(session, site, "/flaky/k?fail=0")
    snapshot = site.counters.snapshot()
    assert snapshot == {"connections": 1, "requests": 2,
                        "hits": {"/product/3": 1, "/flaky/k": 1}, "attempts": {"k": 1}}
    site.reset_counters()
    assert site.counters.snapshot() == {"connections": 0, "requests": 0, "hits": {}, "attempts": {}}
    assert site.counters.hits("/product/3") == site.counters.attempts("k") == 0


def test_head_and_post_are_answered(site: PracticeSite, session: requests.Session) -> None:
    head = session.head(site.url + "/product/1", timeout=TIMEOUT)
    assert head.status_code == 200 and head.content == b""
    assert int(head.headers["Content-Length"]) == len(get(session, site, "/product/1").content)
    assert session.post(site.url + "/product/1", data=b"x" * 1000, timeout=TIMEOUT).status_code == 200
    assert site.counters.connections == 1


# -- failure endpoints ----------------------------------------------------


@pytest.mark.parametrize("code", [200, 204, 301, 404, 429, 500, 503])
def test_status_endpoint(site: PracticeSite, session: requests.Session, code: int) -> None:
    response = get(session, site, f"/status/{code}", allow_redirects=False)
    assert response.status_code == code
    assert (response.content == b"") == (code == 204)
    assert get(session, site, "/status/99").status_code == 400
    assert site.counters.connections == 1


def test_flaky_fails_exactly_n_times(site: PracticeSite, session: requests.Session) -> None:
    codes = [get(session, site, "/flaky/a?fail=3").status_code for _ in range(5)]
    assert codes == [503, 503, 503, 200, 200]
    assert site.counters.attempts("a") == 5
    custom = [get(session, site, "/flaky/b?fail=1&status=500") for _ in range(2)]
    assert [r.status_code for r in custom] == [500, 200]
    assert field(custom[1].text, "ok") == "ok"
    assert get(session, site, "/flaky/c?fail=-1").status_code == 400
    assert site.counters.attempts("c") == 0  # a malformed request is not an attempt


def test_flaky_counts_atomically_under_concurrency(site: PracticeSite) -> None:
    def fetch(_: int) -> int:
        return requests.get(site.url + "/flaky/busy?fail=10", timeout=TIMEOUT).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        codes = list(pool.map(fetch, range(40)))
    assert codes.count(503) == 10 and codes.count(200) == 30
    assert site.counters.attempts("busy") == 40


def test_retry_after_delta_seconds(site: PracticeSite, session: requests.Session) -> None:
    first = get(session, site, "/retry-after/r?fail=1&seconds=0.5")
    assert first.status_code == 429
    assert first.headers["Retry-After"] == "0.5"
    second = get(session, site, "/retry-after/r?fail=1&seconds=0.5")
    assert second.status_code == 200 and "Retry-After" not in second.headers
    assert get(session, site, "/retry-after/s?status=503&seconds=2").headers["Retry-After"] == "2"


def test_retry_after_http_date(site: PracticeSite, session: requests.Session) -> None:
    response = get(session, site, "/retry-after-date/d?fail=1&seconds=120")
    assert response.status_code == 429
    when = parsedate_to_datetime(response.headers["Retry-After"])
    assert response.headers["Retry-After"].endswith(" GMT")
    delta = (when - datetime.now(timezone.utc)).total_seconds()
    assert 115 <= delta <= 121
    assert get(session, site, "/retry-after-date/d?fail=1&seconds=120").status_code == 200


def test_drop_closes_the_connection_without_a_response(site: PracticeSite,
                                                       session: requests.Session) -> None:
    for _ in range(2):
        with pytest.raises(requests.ConnectionError):
            get(session, site, "/drop/x?fail=2")
    response = get(session, site, "/drop/x?fail=2")
    assert response.status_code == 200
    assert site.counters.attempts("x") == 3
    assert site.counters.connections == 3  # each drop cost the client its connection


def test_delay_and_an_abandoned_client_stay_quiet(site: PracticeSite, session: requests.Session,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    assert get(session, site, "/delay?seconds=0.2").status_code == 200
    assert time.monotonic() - started >= 0.2
    with pytest.raises(requests.ReadTimeout):
        get(session, site, "/delay?seconds=0.5", timeout=0.1)
    session.close()  # the client abandons the connection the handler will answer on
    deadline = time.monotonic() + 3
    while site.open_connections and time.monotonic() < deadline:
        time.sleep(0.02)
    assert site.open_connections == 0
    assert capsys.readouterr().err == ""


def test_redirects(site: PracticeSite, session: requests.Session) -> None:
    plain = get(session, site, "/redirect?to=/product/2")
    assert plain.url == site.url + "/product/2"
    assert [r.status_code for r in plain.history] == [302]
    absolute = get(session, site, f"/redirect?to={site.url}/product/3&status=301")
    assert absolute.url == site.url + "/product/3"
    assert [r.status_code for r in absolute.history] == [301]
    raw = get(session, site, "/redirect?to=/x&status=307", allow_redirects=False)
    assert raw.status_code == 307 and raw.headers["Location"] == "/x"
    assert get(session, site, "/redirect?to=/x&status=200").status_code == 400
    assert get(session, site, "/redirect?to=/x%0d%0aSet-Cookie:%20a=b").status_code == 400

    chain = get(session, site, "/redirect-chain/3")
    assert chain.status_code == 200 and chain.url == site.url + "/redirect-chain/0"
    assert [r.url.removeprefix(site.url) for r in chain.history] == [
        "/redirect-chain/3", "/redirect-chain/2", "/redirect-chain/1"]

    session.max_redirects = 5
    with pytest.raises(requests.TooManyRedirects):
        get(session, site, "/redirect-loop")
    assert site.counters.hits("/redirect-loop") == 6


def test_echo(site: PracticeSite, session: requests.Session) -> None:
    echoed = get(session, site, "/echo?q=1", headers={"X-Probe": "yes"})
    assert echoed.headers["Content-Type"] == "application/json"
    data = echoed.json()
    assert data["method"] == "GET" and data["path"] == "/echo?q=1" and data["body"] == ""
    assert data["headers"]["X-Probe"] == "yes"
    posted = session.post(site.url + "/echo", data="naïve=1".encode(), timeout=TIMEOUT).json()
    assert posted["method"] == "POST" and posted["body"] == "naïve=1"
    chunked = session.post(site.url + "/echo", data=iter([b"ab", b"cd"]), timeout=TIMEOUT).json()
    assert chunked["body"] == "abcd"
    assert site.counters.connections == 1  # bodies were consumed, so the stream stayed in sync


def test_links_page_and_targets(site: PracticeSite, session: requests.Session) -> None:
    page = get(session, site, "/links?n=4&repeat=2").text
    assert links(page, "link") == [f"/links/target/{i}" for i in range(4) for _ in range(2)]
    assert get(session, site, "/links/target/3").status_code == 200
    assert links(get(session, site, "/links").text, "link")[-1] == "/links/target/9"
    assert get(session, site, "/links?n=x").status_code == 400


# -- lifecycle ------------------------------------------------------------


def _read_response(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        body += sock.recv(65536)
    return head


def test_stop_closes_listener_and_idle_keep_alive_clients() -> None:
    site = PracticeSite(products=5).start()
    port = site.port
    client = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    abandoned: list[BaseException] = []

    def slow_request() -> None:
        try:
            requests.get(site.url + "/delay?seconds=30", timeout=TIMEOUT)
        except requests.ConnectionError as error:
            abandoned.append(error)

    waiter = threading.Thread(target=slow_request)
    try:
        client.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        assert _read_response(client).startswith(b"HTTP/1.1 200")
        waiter.start()
        while site.counters.hits("/delay") == 0:
            time.sleep(0.01)
        assert site.open_connections == 2
        started = time.monotonic()
        site.stop()
        assert time.monotonic() - started < 2  # neither connection held stop() up
        assert site.open_connections == 0
        assert not [t for t in threading.enumerate() if t.name.startswith(f"practice-site-{port}")]
        assert client.recv(1) == b""  # the server closed our idle keep-alive socket
        waiter.join(TIMEOUT)
        assert abandoned, "the pending /delay request should see its connection close"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT).close()
        site.stop()  # idempotent
    finally:
        client.close()
        site.stop()
        waiter.join(TIMEOUT)


def test_module_entry_point_serves_until_terminated() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "crawler.practice",
               "--port", "0", "--products", "12", "--per-page", "5"]
    with subprocess.Popen(command, cwd=REPO_ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
            assert ready, "the entry point did not print its URL"
            url = proc.stdout.readline().strip()
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url) and not url.endswith(":0")
            with requests.Session() as http:
                assert http.get(url + "/catalogue/page/2", timeout=TIMEOUT).status_code == 200
                assert http.get(url + "/catalogue/page/4", timeout=TIMEOUT).status_code == 404
        finally:
            proc.terminate()
            _, errors = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, errors  # SIGTERM is a clean shutdown, not a crash
