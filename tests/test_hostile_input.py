"""Whole crawls that meet hostile input: each must finish, fetch everything else, count the
problem by kind, and say which URL it was in one log line.

Every crawl here also fetches a healthy page (``HEALTHY``) and checks its item arrived, so a
problem that spoils more than its own page shows. Limits are small so the suite stays fast.

A known limit is asserted as it is, with why it is there as the assertion's message: a test
fails when the limit goes away, so the statement cannot go stale.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import socket
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from crawler.cli import main
from crawler.config import Config
from crawler.frontier.sqlite import Checkpoint
from crawler.practice import PracticeSite
from crawler.practice.hostile import LEAK_LINK, OFFSITE_LINK
from crawler.request import canonical_url
from crawler.runner import run_crawl
from conftest import PROBE_SPIDER
from helpers import Crawled, deadline, interrupt_when

HEALTHY = "/links/target/7"
MIB = 1024 * 1024
CRAWL_DEADLINE = 20.0  # seconds; each crawl here takes under two

# Known limits, stated where a test meets them.
DEPTH_LIMIT = ("lxml (libxml2) stops building the tree about 2,046 elements deep, even with "
               "huge_tree: the deep text, the link below it and the rest of the page are lost, "
               "no longer silently (counted as malformed:too_deep, and warned about once)")


def limits(*, max_body_size: int = MIB, read: float = 0.5, total: float | None = None,
           max_redirects: int | None = None) -> str:
    """Small limits as TOML, so a hostile page costs a crawl little time."""
    http = f"max_body_size = {max_body_size}\n"
    if max_redirects is not None:
        http += f"max_redirects = {max_redirects}\n"
    timeout = f"read = {read}\n" + (f"total = {total}\n" if total is not None else "")
    # A short shutdown grace lets a crawl stopped by ``deadline`` return despite a hung request.
    return (f"[crawl]\nworkers = 4\nshutdown_grace = 0.5\n[http]\n{http}[http.timeout]\n{timeout}"
            "[retry]\nattempts = 1\n")


@pytest.fixture(autouse=True)
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Host names the crawl tried to resolve other than loopback ones.

    Hostile links name other hosts; a crawl that tries to fetch one must not reach the network
    (these tests talk to 127.0.0.1 only). Such a lookup is refused as if the name did not exist,
    and recorded, so a test can also assert it never happened. HTTP itself is not touched.
    """
    resolve = socket.getaddrinfo
    refused: list[str] = []

    def loopback_only(host: str | bytes | None, *args: object, **kwargs: object) -> object:
        name = host.decode() if isinstance(host, bytes) else str(host)
        try:
            loopback = name == "localhost" or ipaddress.ip_address(name).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            refused.append(name)
            raise socket.gaierror(socket.EAI_NONAME, f"{name}: not a loopback host (refused by the test)")
        return resolve(host, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(socket, "getaddrinfo", loopback_only)
    return refused


@pytest.fixture(autouse=True)
def info_logs(caplog: pytest.LogCaptureFixture) -> None:
    """Capture INFO too: a skipped page may be reported at INFO."""
    caplog.set_level(logging.INFO)


def run(config: Config, spider: str) -> Crawled:
    with deadline(CRAWL_DEADLINE):
        report = run_crawl(config)
    assert not report.interrupted, f"the crawl was still running after {CRAWL_DEADLINE:g} s"
    assert report.results[0].finished
    path = config.output_path(spider)
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return Crawled(report, [json.loads(line) for line in lines], config)


@pytest.fixture
def probe_crawl(probe_config) -> Callable[..., Crawled]:
    """Crawl ``urls`` with the probe spider (which yields ``{"url", "status"}`` per page)."""

    def crawl(urls: list[str], extra: str = "", **args: object) -> Crawled:
        return run(probe_config(urls, extra, **args), "probe")

    return crawl


@pytest.fixture
def spider_crawl(spider_config) -> Callable[..., Crawled]:
    """Crawl with a spider named "hostile" written for the test; the other arguments are
    ``spider_config``'s."""

    def crawl(source: str, urls: list[str], extra: str = "", entry: str = "") -> Crawled:
        return run(spider_config("hostile", source, extra, entry=entry, urls=urls), "hostile")

    return crawl


# Records the text under test of every page and follows a.link links.
READER_SPIDER = """
from crawler import Request, Spider


class Reader(Spider):
    name = "hostile"
    urls = []

    def start_requests(self):
        for url in self.urls:
            yield Request(url, callback=self.parse)

    def parse(self, response):
        yield {
            "url": response.url,
            "text": response.css("p.text::text").get(),
            "deep": response.css("p.deep::text").get(),
        }
        yield from response.follow_all(response.css("a.link::attr(href)").getall(), self.parse)
"""


def lines_naming(caplog: pytest.LogCaptureFixture, url: str, level: int = logging.WARNING) -> list[str]:
    """The framework's log lines at ``level`` or above that mention ``url``."""
    return [record.getMessage() for record in caplog.records
            if record.name.startswith("crawler") and record.levelno >= level
            and url in record.getMessage()]


def assert_healthy_page_fetched(crawled: Crawled, site: PracticeSite) -> None:
    assert site.url + HEALTHY in crawled.urls()
    assert site.counters.hits(HEALTHY) == 1


def assert_failed_once(crawled: Crawled, caplog: pytest.LogCaptureFixture, url: str, kind: str) -> None:
    """``url`` failed with ``kind``: counted in total and by kind, recorded, and logged once."""
    assert crawled.stats["failed"] == 1
    assert crawled.stats[f"failed:{kind}"] == 1
    with Checkpoint(crawled.config.resolve(crawled.config.checkpoint.path), "test") as checkpoint:
        [failed] = checkpoint.frontier("probe").failed(100)
    assert (failed.url, failed.error_kind) == (url, kind)
    assert len(lines_naming(caplog, url)) == 1
    assert url not in crawled.urls()


# -- responses that fail ------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "extra", "kind"), [
    pytest.param("/hostile/huge?mb=2", limits(), "ResponseTooLarge", id="huge-with-length"),
    pytest.param("/hostile/huge?mb=2&framing=chunked", limits(), "ResponseTooLarge", id="huge-chunked"),
    pytest.param("/hostile/huge?mb=2&framing=close", limits(), "ResponseTooLarge", id="huge-close-delimited"),
    pytest.param("/hostile/endless", limits(), "ResponseTooLarge", id="endless"),
    pytest.param("/hostile/endless?framing=chunked", limits(), "ResponseTooLarge", id="endless-chunked"),
    pytest.param("/hostile/stall", limits(), "ReadTimeout", id="stall"),
    pytest.param("/redirect-loop", limits(), "TooManyRedirects", id="redirect-loop"),
    pytest.param("/redirect-chain/4", limits(max_redirects=3), "TooManyRedirects", id="redirect-chain"),
    pytest.param("/redirect?to=ftp://x/", limits(), "InvalidRedirect", id="redirect-to-ftp"),
    pytest.param("/hostile/cut?size=5000&sent=1000", limits(), "ConnectionLost", id="cut"),
    pytest.param("/hostile/bad-status", limits(), "ConnectionLost", id="bad-status-line"),
    pytest.param("/hostile/bad-status?kind=long", limits(), "ConnectionLost", id="status-line-too-long"),
])
def test_a_failing_response_is_counted_by_kind_and_the_crawl_goes_on(
        site: PracticeSite, probe_crawl, caplog: pytest.LogCaptureFixture,
        path: str, extra: str, kind: str) -> None:
    url = site.url + path
    crawled = probe_crawl([url, site.url + HEALTHY], extra)
    assert_failed_once(crawled, caplog, url, kind)
    assert_healthy_page_fetched(crawled, site)


def test_a_trickling_body_is_cut_off_by_the_total_deadline(site: PracticeSite, probe_crawl,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    # Each line arrives well within the read timeout; only the deadline for the whole stops it.
    url = site.url + "/hostile/trickle?interval=0.1"
    crawled = probe_crawl([url, site.url + HEALTHY], limits(read=0.5, total=1.5))
    assert_failed_once(crawled, caplog, url, "ReadTimeout")
    assert 1.5 <= crawled.report.elapsed < 4
    assert_healthy_page_fetched(crawled, site)


def test_a_redirect_chain_as_long_as_the_limit_is_followed(site: PracticeSite, probe_crawl) -> None:
    crawled = probe_crawl([site.url + "/redirect-chain/3"], limits(max_redirects=3))
    assert crawled.urls() == {site.url + "/redirect-chain/0"}
    assert "failed" not in crawled.stats


def test_a_body_exactly_at_the_limit_is_read(site: PracticeSite, probe_crawl) -> None:
    crawled = probe_crawl([site.url + "/hostile/huge?mb=1&framing=chunked"], limits(max_body_size=MIB))
    assert crawled.urls() == {site.url + "/hostile/huge?mb=1&framing=chunked"}
    assert "failed" not in crawled.stats


# -- encodings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("case", "text"), [
    ("missing", "Crème brûlée, 日本語"),  # no charset anywhere: UTF-8 is the default
    ("meta", "Привет, мир"),  # the <meta charset> is believed when the header has none
])
def test_a_decodable_page_is_decoded_right(site: PracticeSite, spider_crawl,
                                           caplog: pytest.LogCaptureFixture, case: str, text: str) -> None:
    url = f"{site.url}/hostile/encoding/{case}"
    crawled = spider_crawl(READER_SPIDER, [url, site.url + HEALTHY], limits())
    assert crawled.item_for(url)["text"] == text
    assert "malformed:encoding" not in crawled.stats
    assert lines_naming(caplog, url) == []
    assert_healthy_page_fetched(crawled, site)


@pytest.mark.parametrize(("case", "text"), [
    pytest.param("wrong", "caf\ufffd na\ufffdve", id="cp1252-under-a-utf8-header"),
    pytest.param("invalid", "readable \ufffd\ufffd\ufffd text", id="stray-bytes"),
])
def test_undecodable_bytes_are_replaced_counted_and_the_callback_still_runs(
        site: PracticeSite, spider_crawl, caplog: pytest.LogCaptureFixture, case: str, text: str) -> None:
    url = f"{site.url}/hostile/encoding/{case}"
    crawled = spider_crawl(READER_SPIDER, [url, site.url + HEALTHY], limits())
    assert crawled.item_for(url)["text"] == text
    assert crawled.stats["malformed:encoding"] == 1
    assert "failed" not in crawled.stats
    assert len(lines_naming(caplog, url)) == 1
    assert_healthy_page_fetched(crawled, site)


# -- binary -------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/hostile/binary/png", "/hostile/binary/pdf", "/hostile/binary/octet"])
def test_binary_is_not_given_to_a_callback_that_did_not_ask_for_it(
        site: PracticeSite, probe_crawl, caplog: pytest.LogCaptureFixture, path: str) -> None:
    url = site.url + path
    crawled = probe_crawl([url, site.url + HEALTHY], limits(), follow_links=True)
    assert url not in crawled.urls()
    # The body holds the bytes of an <a class="link">: parsed as HTML, it would be followed.
    assert site.counters.hits(LEAK_LINK) == 0
    assert crawled.stats["skipped:content_type"] == 1
    assert "failed" not in crawled.stats
    assert crawled.report.results[0].counts.done == 2  # skipped is done, not failed
    assert len(lines_naming(caplog, url, logging.INFO)) == 1
    assert_healthy_page_fetched(crawled, site)


def test_a_large_binary_is_skipped_not_downloaded(site: PracticeSite, probe_crawl) -> None:
    # 8 MiB against a 1 MiB limit: reading the body would fail the request as too large.
    url = site.url + "/hostile/binary/octet?kb=8192"
    crawled = probe_crawl([url, site.url + HEALTHY], limits(max_body_size=MIB))
    assert crawled.stats["skipped:content_type"] == 1
    assert "failed" not in crawled.stats
    assert url not in crawled.urls()
    assert_healthy_page_fetched(crawled, site)


ACCEPTING_SPIDER = """
import hashlib

from crawler import Request, Spider, accepts


class Accepting(Spider):
    name = "hostile"
    urls = []

    def start_requests(self):
        image, anything, page = self.urls
        yield Request(image, callback=self.parse_image)
        yield Request(anything, callback=self.parse_anything)
        yield Request(page, callback=self.parse)

    def describe(self, response):
        return {"url": response.url, "type": response.headers["Content-Type"],
                "sha256": hashlib.sha256(response.body).hexdigest()}

    @accepts("image/png")
    def parse_image(self, response):
        yield self.describe(response)

    @accepts("*/*")
    def parse_anything(self, response):
        yield self.describe(response)

    def parse(self, response):
        yield self.describe(response)
"""


def test_a_callback_that_accepts_a_type_gets_the_body_intact(site: PracticeSite, spider_crawl) -> None:
    image, octets = site.url + "/hostile/binary/png", site.url + "/hostile/binary/octet?kb=200"
    crawled = spider_crawl(ACCEPTING_SPIDER, [image, octets, site.url + HEALTHY], limits())
    for url, content_type in [(image, "image/png"), (octets, "application/octet-stream")]:
        served = requests.get(url, timeout=5).content
        assert crawled.item_for(url) == {"url": url, "type": content_type,
                                         "sha256": hashlib.sha256(served).hexdigest()}
    assert "skipped:content_type" not in crawled.stats
    assert_healthy_page_fetched(crawled, site)


# -- broken HTML --------------------------------------------------------------------------------


def test_links_in_malformed_html_are_found_and_followed(site: PracticeSite, probe_crawl) -> None:
    crawled = probe_crawl([site.url + "/hostile/malformed-html", site.url + HEALTHY], limits(),
                          follow_links=True)
    assert all(site.counters.hits(f"/links/target/{n}") == 1 for n in (1, 2, 3, 4))
    assert site.counters.hits("/links/target/5") == 0  # only inside the unclosed <script>
    assert site.url + "/hostile/malformed-html" in crawled.urls()
    assert "failed" not in crawled.stats
    assert_healthy_page_fetched(crawled, site)


def too_deep_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records
            if record.name.startswith("crawler") and record.levelno >= logging.WARNING
            and "malformed:too_deep" in record.getMessage()]


def test_deeply_nested_html_is_parsed_to_the_bottom(site: PracticeSite, spider_crawl,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    url = f"{site.url}/hostile/nested?depth=1000"
    crawled = spider_crawl(READER_SPIDER, [url, site.url + HEALTHY], limits(max_body_size=2 * MIB))
    assert crawled.item_for(url)["deep"] == "deep"
    assert site.counters.hits("/links/target/0") == 1
    assert "malformed:too_deep" not in crawled.stats
    assert lines_naming(caplog, url) == []
    assert_healthy_page_fetched(crawled, site)


def test_html_too_deep_for_the_parser_is_counted_and_warned_about(site: PracticeSite, spider_crawl,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    url = f"{site.url}/hostile/nested?depth=100000"
    crawled = spider_crawl(READER_SPIDER, [url, site.url + HEALTHY], limits(max_body_size=2 * MIB))
    assert crawled.item_for(url)["deep"] is None, DEPTH_LIMIT
    assert site.counters.hits("/links/target/0") == 0, DEPTH_LIMIT
    assert crawled.stats["malformed:too_deep"] == 1
    assert "failed" not in crawled.stats
    assert too_deep_warnings(caplog) == lines_naming(caplog, url)
    assert len(lines_naming(caplog, url)) == 1
    assert_healthy_page_fetched(crawled, site)


def test_every_page_too_deep_is_counted_and_the_warning_given_once(site: PracticeSite, spider_crawl,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    urls = [f"{site.url}/hostile/nested?depth={depth}" for depth in (3000, 100_000)]
    crawled = spider_crawl(READER_SPIDER, [*urls, site.url + HEALTHY], limits(max_body_size=2 * MIB))
    assert crawled.stats["malformed:too_deep"] == 2
    [warning] = too_deep_warnings(caplog)
    assert any(url in warning for url in urls)
    assert_healthy_page_fetched(crawled, site)


MANY_LINKS_SPIDER = """
from crawler import Request, Spider


class ManyLinks(Spider):
    name = "hostile"
    urls = []

    def start_requests(self):
        for url in self.urls:
            yield Request(url, callback=self.parse)

    def parse(self, response):
        yield {"url": response.url}
        links = response.css("a.link::attr(href)").getall()
        yield from response.follow_all(links, self.parse)
        # Seen again on the same page: the frontier must queue each only once.
        yield from response.follow_all(links[:1000], self.parse)
        yield response.follow(response.url, self.parse)
"""


def test_a_page_of_100k_links_queues_each_once(site: PracticeSite, spider_config, tmp_path: Path) -> None:
    config = spider_config("hostile", MANY_LINKS_SPIDER, urls=[site.url + "/hostile/many-links", site.url + HEALTHY])
    # Fetching 100,000 pages would take minutes: stop (a real Ctrl-C) once the links are queued,
    # which the first target fetched proves, then count what the checkpoint holds.
    watcher = interrupt_when(lambda: site.counters.requests - site.counters.hits("/robots.txt") >= 3)
    assert run_crawl(config).interrupted
    watcher.join()
    with Checkpoint(tmp_path / "checkpoint.db", "test") as checkpoint:
        counts = checkpoint.frontier("hostile").counts()
    assert counts.queued + counts.in_flight + counts.done + counts.failed == 100_000 + 2
    # The page of links is done (its links were queued); the target fetched before the stop may
    # have gone back to the queue, which a stop under load does with work not finished in time.
    assert counts.done >= 1 and counts.failed == 0
    assert max(site.counters.hits(f"/hostile/many-links/target/{i}") for i in range(100_000)) <= 1


# -- broken links -------------------------------------------------------------------------------


@pytest.fixture
def bad_links_crawl(site: PracticeSite, probe_crawl) -> Callable[[], Crawled]:
    """Crawl /hostile/bad-links (without its off-site link) and everything it links to."""

    def crawl() -> Crawled:
        page = site.url + "/hostile/bad-links?offsite=0"
        return probe_crawl([page, site.url + HEALTHY], limits(), follow_links=True)

    return crawl


def test_the_good_links_next_to_bad_ones_are_followed(site: PracticeSite, bad_links_crawl) -> None:
    crawled = bad_links_crawl()
    assert site.url + "/hostile/bad-links?offsite=0" in crawled.urls()
    assert {site.url + "/links/target/1", site.url + "/links/target/2"} <= crawled.urls()
    assert "failed" not in crawled.stats and "callback_errors" not in crawled.stats
    assert_healthy_page_fetched(crawled, site)


def test_bad_percent_escapes_and_spaces_in_a_path_are_encoded_and_fetched(
        site: PracticeSite, bad_links_crawl) -> None:
    crawled = bad_links_crawl()
    # Each is fetched once, with what cannot stand in a URL percent-encoded: a "%" that escapes
    # nothing becomes "%25", a space "%20", and non-ASCII its UTF-8 bytes.
    target = "/hostile/bad-links/target/"
    for path in ["%25zz", "%25", "%203", "a%20b", "%C3%BCn%C3%AF", "long"]:
        assert site.counters.hits(target + path) == 1, path
    fetched = {url for url in crawled.urls() if target in str(url)}
    assert len(fetched) == 6


def test_links_to_other_schemes_are_filtered_by_scheme(bad_links_crawl) -> None:
    stats = bad_links_crawl().stats
    for scheme in ("javascript", "mailto", "tel", "data"):
        assert stats[f"filtered:scheme:{scheme}"] == 1
    assert not [name for name in stats if name.startswith("dropped:scheme")]


def test_unparseable_links_are_counted_and_dropped(bad_links_crawl, lookups: list[str]) -> None:
    crawled = bad_links_crawl()
    # http://[::1, http://exa mple.com/, http://127.0.0.1:99999/, and two without a host:
    # "http://" and "//" (by RFC 3986 "//" resolves to "http://", not to the page itself).
    assert crawled.stats["malformed:url"] == 5
    assert "failed" not in crawled.stats
    assert lookups == []  # "exa mple.com" was never looked up


def test_links_off_the_allowed_domains_are_filtered_and_never_resolved(
        site: PracticeSite, spider_crawl, lookups: list[str]) -> None:
    crawled = spider_crawl(READER_SPIDER, [site.url + "/hostile/bad-links", site.url + HEALTHY], limits(),
                           entry='allowed_domains = ["127.0.0.1"]')
    assert crawled.stats["filtered:offsite"] == 1  # http://bücher.example/
    assert lookups == []
    assert {site.url + "/links/target/1", site.url + "/links/target/2"} <= crawled.urls()
    assert_healthy_page_fetched(crawled, site)


def test_a_unicode_host_has_an_idna_canonical_form() -> None:
    assert canonical_url(OFFSITE_LINK) == "http://xn--bcher-kva.example/"


def test_an_unparseable_start_url_is_counted_not_fatal(site: PracticeSite, probe_crawl) -> None:
    crawled = probe_crawl(["http://127.0.0.1:99999/", "http://[::1", site.url + HEALTHY], limits())
    assert crawled.stats["malformed:url"] == 2
    assert_healthy_page_fetched(crawled, site)


BAD_PORT_SPIDER = """
from crawler import Request, Spider


class BadPort(Spider):
    name = "hostile"
    urls = []

    def start_requests(self):
        for url in self.urls:
            yield Request(url, callback=self.parse)

    def parse(self, response):
        yield {"url": response.url}
        if response.url.endswith("/links/target/1"):
            yield Request("http://127.0.0.1:99999/nowhere", callback=self.parse)
"""


def test_a_request_with_a_bad_port_does_not_kill_the_crawl(site: PracticeSite, spider_crawl) -> None:
    crawled = spider_crawl(BAD_PORT_SPIDER, [site.url + "/links/target/1", site.url + HEALTHY], limits())
    assert crawled.stats["malformed:url"] == 1
    assert site.url + "/links/target/1" in crawled.urls()  # the page that yielded it is not failed
    assert "failed" not in crawled.stats
    assert_healthy_page_fetched(crawled, site)


# -- callbacks that misbehave -------------------------------------------------------------------


FRAGILE_SPIDER = """
from crawler import Request, Spider


class Fragile(Spider):
    name = "hostile"
    urls = []

    def start_requests(self):
        for url in self.urls:
            yield Request(url, callback=self.parse)

    def parse(self, response):
        if response.url.endswith("/links/target/1"):
            raise ValueError("boom")
        if response.url.endswith("/links/target/2"):
            yield 42
        yield {"url": response.url}
"""


def test_a_callback_that_raises_fails_its_page_only(site: PracticeSite, spider_crawl,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    url = site.url + "/links/target/1"
    crawled = spider_crawl(FRAGILE_SPIDER, [url, site.url + HEALTHY], limits())
    assert crawled.stats["callback_errors"] == 1
    assert crawled.stats["failed"] == crawled.stats["failed:CallbackError"] == 1
    assert len(lines_naming(caplog, url)) == 1
    assert_healthy_page_fetched(crawled, site)


def test_a_callback_that_yields_an_int_is_counted_as_malformed_output(
        site: PracticeSite, spider_crawl, caplog: pytest.LogCaptureFixture) -> None:
    url = site.url + "/links/target/2"
    crawled = spider_crawl(FRAGILE_SPIDER, [url, site.url + HEALTHY], limits())
    assert crawled.stats["malformed:output"] == 1
    assert "dropped:unsupported_output" not in crawled.stats
    assert url in crawled.urls()  # the page's other output is kept
    assert len(lines_naming(caplog, url)) == 1
    assert_healthy_page_fetched(crawled, site)


# -- hostile config values ----------------------------------------------------------------------


def check(tmp_path: Path, toml: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    """Run ``crawler check`` on a project with the probe spider and ``toml`` after its entry."""
    spiders = tmp_path / "spiders"
    spiders.mkdir()
    (spiders / "__init__.py").touch()
    (spiders / "probe.py").write_text(PROBE_SPIDER)
    path = tmp_path / "config.toml"
    path.write_text('[[spiders]]\nspider = "probe"\n' + textwrap.dedent(toml))
    code = main(["check", str(path)])
    return code, capsys.readouterr().err.splitlines()


@pytest.mark.parametrize(("toml", "field"), [
    ("[crawl]\nworkers = 0\n", "crawl.workers"),
    ("[http]\nbogus = 1\n", "http.bogus"),
    ("[politeness]\ndelay = -1\n", "politeness.delay"),
    ("[politeness]\nconcurrency = 0\n", "politeness.concurrency"),
    ('[robots]\nobey = "yes"\n', "robots.obey"),
])
def test_check_rejects_a_hostile_value_naming_its_field(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                        toml: str, field: str) -> None:
    code, lines = check(tmp_path, toml, capsys)
    assert code == 2
    [line] = lines
    assert f"config.toml: {field}: " in line
    if field != "http.bogus":
        assert "unknown key" not in line  # the key exists; its value is what is wrong


def test_check_accepts_sane_values_for_the_new_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines = check(tmp_path, """
        allowed_domains = ["127.0.0.1"]
        [politeness]
        delay = 0.5
        [robots]
        obey = true
        [http.timeout]
        total = 60
        """, capsys)
    assert (code, lines) == (0, [])
