"""The HTTP cache (``[http_cache]``, ``--cache``): a second run answered from disk, checked from
what the servers received, against our practice site and against httpbin's own cache endpoints
(ETag, Last-Modified, Cache-Control), which we did not write."""

from __future__ import annotations

import json
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from crawler.config import Config
from crawler.practice import PracticeSite
from crawler.runner import run_crawl
from serverproc import serve
from test_cli import assert_clean_failure, crawl_project, crawler_cli, output_lines

# Records each page's status, body and the headers the spider saw.
RECORDER = """
from crawler import Request, Spider


class Recorder(Spider):
    name = "recorder"
    urls = []

    def start_requests(self):
        for url in self.urls:
            yield Request(url, callback=self.parse)

    def parse(self, response):
        yield {"url": response.url, "status": response.status, "text": response.text,
               "set_cookie": response.headers.get("Set-Cookie")}
"""


@pytest.fixture(scope="module")
def httpbin() -> Iterator[str]:
    with serve("httpbin_server.py") as url:
        yield url


def recorder(spider_config, tmp_path: Path, urls: list[str], cache: str) -> Config:
    return spider_config(
        "recorder", RECORDER,
        f"""
        [robots]
        obey = false

        [http_cache]
        enabled = true
        path = "{tmp_path / 'cache.sqlite'}"
        {cache}
        """,
        urls=urls,
    )


def items(config: Config) -> list[dict[str, object]]:
    lines = config.output_path("recorder").read_text().splitlines()
    return sorted((json.loads(line) for line in lines), key=lambda item: str(item["url"]))


def test_a_second_run_is_answered_from_the_cache_without_a_request(tmp_path: Path, site: PracticeSite) -> None:
    config = crawl_project(tmp_path, site)
    first = crawler_cli("run", str(config), "--cache", cwd=tmp_path)
    assert first.code == 0, first
    served = site.counters.requests
    kept = sorted(output_lines(tmp_path), key=lambda item: int(item["id"]))
    assert len(kept) == 120

    second = crawler_cli("run", str(config), "--cache", "--fresh", cwd=tmp_path)
    assert second.code == 0, second
    # robots.txt (a 404 here, and only 200s are kept) is all the site saw again.
    assert site.counters.requests - served == 1
    assert site.counters.hits("/robots.txt") == 2
    assert sorted(output_lines(tmp_path), key=lambda item: int(item["id"])) == kept
    pages = 120 // 20 + 120 + 1  # listing pages, products, the start page's redirect target
    assert f"HTTP cache: {pages} hits" in second.out

    cache = tmp_path / ".crawler" / "http-cache.sqlite"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    third = crawler_cli("run", str(config), "--fresh", cwd=tmp_path)  # without --cache: the site again
    assert third.code == 0 and "HTTP cache" not in third.out
    assert site.counters.requests - served > 120


def test_a_stale_entry_is_revalidated_by_etag_and_the_304_keeps_its_body(
    spider_config, tmp_path: Path, httpbin: str
) -> None:
    config = recorder(spider_config, tmp_path, [f"{httpbin}/etag/v1"], "expire_after = 0.5")
    first = run_crawl(config)
    assert first.stats.get("cache_stores") == 1
    time.sleep(1.0)  # past expire_after: the entry is stale, and has an ETag
    again = run_crawl(config, fresh=True)
    # httpbin answered 304 to our If-None-Match: the spider saw the kept 200 and its body.
    assert again.stats.get("cache_revalidated") == 1 and again.stats.get("http_requests") == 1
    (item,) = items(config)
    assert item["status"] == 200 and '"origin"' in str(item["text"])


def test_honoured_cache_headers_decide_over_expire_after(spider_config, tmp_path: Path, httpbin: str) -> None:
    # /cache/60 says max-age=60; /response-headers says no-store. expire_after alone would
    # make both stale at once.
    urls = [f"{httpbin}/cache/60", f"{httpbin}/response-headers?Cache-Control=no-store"]
    config = recorder(spider_config, tmp_path, urls, "expire_after = 0.001\nhonour_headers = true")
    assert run_crawl(config).stats.get("cache_stores") == 1
    again = run_crawl(config, fresh=True)
    assert again.stats.get("cache_hits") == 1 and again.stats.get("http_requests") == 1
    assert len(items(config)) == 2


def test_ignored_cache_headers_leave_it_to_expire_after(spider_config, tmp_path: Path, httpbin: str) -> None:
    urls = [f"{httpbin}/response-headers?Cache-Control=no-store"]
    config = recorder(spider_config, tmp_path, urls, "expire_after = 3600")
    run_crawl(config)
    again = run_crawl(config, fresh=True)
    assert again.stats.get("cache_hits") == 1 and not again.stats.get("http_requests")


def test_only_the_listed_statuses_are_kept(spider_config, tmp_path: Path, httpbin: str) -> None:
    urls = [f"{httpbin}/status/404", f"{httpbin}/status/410", f"{httpbin}/get"]
    config = recorder(spider_config, tmp_path, urls, "statuses = [200, 410]")
    run_crawl(config)
    again = run_crawl(config, fresh=True)
    assert again.stats.get("cache_hits") == 2 and again.stats.get("http_requests") == 1


def test_set_cookie_is_neither_kept_nor_replayed(spider_config, tmp_path: Path, httpbin: str) -> None:
    secret = "sessionid=s3cr3t-v4lue"
    urls = [f"{httpbin}/response-headers?Set-Cookie={secret}"]
    config = recorder(spider_config, tmp_path, urls, "")
    run_crawl(config)
    assert items(config)[0]["set_cookie"] == secret  # the live answer had it
    again = run_crawl(config, fresh=True)
    assert again.stats.get("cache_hits") == 1
    assert items(config)[0]["set_cookie"] is None
    # (The URL and httpbin's body name the value too, so the file is read as requests-cache would.)
    from requests_cache import SQLiteCache

    stored = SQLiteCache(tmp_path / "cache.sqlite", serializer="json")
    try:
        (entry,) = stored.responses.values()
        assert "Set-Cookie" not in entry.headers and entry.headers["Content-Type"] == "application/json"
    finally:
        stored.close()


def test_a_retried_status_cannot_be_cached(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text(
        '[[spiders]]\nspider = "products"\n[http_cache]\nstatuses = [200, 503]\n'
    )
    result = crawler_cli("check", "config.toml", cwd=tmp_path)
    (line,) = assert_clean_failure(result, 2)
    assert "http_cache.statuses: 503 retried (retry.statuses)" in line


def test_a_damaged_cache_file_is_one_clear_line(tmp_path: Path, site: PracticeSite) -> None:
    config = crawl_project(tmp_path, site)
    cache = tmp_path / ".crawler" / "http-cache.sqlite"
    cache.parent.mkdir()
    cache.write_bytes(b"this is not a database" * 100)
    result = crawler_cli("run", str(config), "--cache", cwd=tmp_path)
    (line,) = assert_clean_failure(result, 1)
    assert line.startswith(f"crawler: {cache}: cannot open the HTTP cache") and "delete it" in line
