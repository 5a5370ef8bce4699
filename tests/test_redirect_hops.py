"""Every redirect hop is checked like a request: robots.txt of its own origin, allowed_domains,
dedupe, a row in the per-host table. Measured from what the servers received.

A redirect to another origin is not followed inside the fetch but put back through the frontier
(``redirects:requeued``); a same-origin one is followed inline only if robots.txt allows it.
And a robots.txt that cannot be fetched because its TLS handshake fails disallows the host for
now (RFC 9309: unreachable), instead of allowing everything.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest

from crawler.runner import run_crawl
from helpers import Crawled, deadline
from recorder import Recorder, loopback_only_lookups, recorders, toml_tables

CRAWL_DEADLINE = 20.0  # seconds; every crawl here takes well under one


@pytest.fixture(autouse=True)
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    return loopback_only_lookups(monkeypatch)


@pytest.fixture
def crawl(probe_config) -> Callable[..., Crawled]:
    """Crawl ``urls`` with the probe spider (an item ``{url, status}`` per page), robots.txt
    obeyed; ``extra`` TOML tables go after the defaults, ``entry`` into ``[[spiders]]``."""

    def crawl_urls(urls: list[str], *, extra: dict[str, dict[str, object]] | None = None, entry: str = "") -> Crawled:
        tables: dict[str, dict[str, object]] = {
            "crawl": {"workers": 4, "shutdown_grace": 1},
            "retry": {"attempts": 1},
            "http.timeout": {"connect": 2, "read": 5, "total": 10},
        }
        for name, table in (extra or {}).items():
            tables.setdefault(name, {}).update(table)
        config = probe_config(urls, toml_tables(tables), entry=entry)
        with deadline(CRAWL_DEADLINE):
            report = run_crawl(config)
        assert not report.interrupted, f"the crawl was still running after {CRAWL_DEADLINE:g}s"
        assert report.results[0].finished
        path = config.output_path("probe")
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        return Crawled(report, [json.loads(line) for line in lines])

    return crawl_urls


@pytest.fixture
def two_hosts() -> Iterator[tuple[Recorder, Recorder]]:
    with recorders("127.0.0.2", "127.0.0.3") as pair:
        yield pair  # type: ignore[misc]


def test_a_same_origin_redirect_into_a_disallowed_path_is_refused(crawl) -> None:
    with Recorder("127.0.0.2", robots="User-agent: *\nDisallow: /private\n") as site:
        site.redirect("/start", "/private/page")
        site.redirect("/elsewhere", "/public/page")  # allowed: followed inline, not re-queued
        crawled = crawl([site.url_for("/start"), site.url_for("/elsewhere")])
    assert site.count("/private/page") == 0
    assert site.count("/public/page") == 1
    assert site.count("/robots.txt") == 1
    assert crawled.stats.get("refused:robots") == 1
    assert crawled.stats.get("redirects:requeued") == 1
    assert crawled.urls() == {site.url_for("/public/page")}  # no item for the refused page


def test_a_redirect_to_another_host_obeys_that_hosts_robots_txt(crawl, two_hosts) -> None:
    first, second = two_hosts
    second.robots = "User-agent: *\nDisallow: /blocked\n"
    first.redirect("/to-allowed", second.url_for("/allowed"))
    first.redirect("/to-blocked", second.url_for("/blocked"))
    crawled = crawl([first.url_for("/to-allowed"), first.url_for("/to-blocked")])
    assert second.count("/robots.txt") == 1
    assert second.count("/allowed") == 1
    assert second.count("/blocked") == 0
    assert crawled.stats.get("refused:robots") == 1
    assert crawled.stats.get("redirects:requeued") == 2
    assert crawled.urls() == {second.url_for("/allowed")}
    assert second.netloc in crawled.report.hosts
    assert crawled.report.hosts[second.netloc]["requests"] >= 1


def test_a_redirect_to_a_host_outside_allowed_domains_sends_nothing_there(crawl, two_hosts) -> None:
    first, second = two_hosts
    first.redirect("/out", second.url_for("/offsite"))
    crawled = crawl([first.url_for("/out"), first.url_for("/home")], entry='allowed_domains = ["127.0.0.2"]')
    assert second.requests == []  # not the page, not its robots.txt
    assert crawled.stats.get("filtered:offsite") == 1
    assert crawled.urls() == {first.url_for("/home")}
    assert second.netloc not in crawled.report.hosts


def test_a_cross_origin_redirect_loop_ends_by_dedupe(crawl, two_hosts) -> None:
    first, second = two_hosts
    first.redirect("/loop", second.url_for("/loop"))
    second.redirect("/loop", first.url_for("/loop"))
    crawled = crawl([first.url_for("/loop")], extra={"http": {"max_redirects": 5}})
    assert first.count("/loop") == 1
    assert second.count("/loop") == 1
    assert crawled.stats.get("redirects:requeued", 0) >= 1
    assert crawled.stats.get("failed:TooManyRedirects", 0) == 0
    assert crawled.items == []


def test_a_robots_txt_behind_an_untrusted_certificate_disallows_the_host(crawl) -> None:
    # No ca_bundle: the crawl does not trust the recorder's CA.
    with Recorder("127.0.0.2", tls=True, robots="User-agent: *\nAllow: /\n") as untrusted:
        crawled = crawl(
            [untrusted.url_for("/page")],
            extra={
                "retry": {"attempts": 2},
                "retry.backoff": {"initial": 0.05, "max": 0.1, "jitter": 0},
                "robots": {"recheck_unavailable": 0.05},
            },
        )
        untrusted.wait_for_handshakes()
        handshakes = untrusted.handshake_failures
    stats = crawled.stats
    assert untrusted.requests == []  # no request got through the handshake
    assert stats.get("failed:RobotsUnavailable") == 1
    assert stats.get("robots:unavailable", 0) >= 1
    assert stats.get("failed:InvalidRequest", 0) == 0 and stats.get("failed:TLSError", 0) == 0
    # Every handshake the server saw was a robots.txt fetch: the page itself was never tried.
    assert handshakes == stats.get("robots:fetched") >= 1
    assert crawled.items == []


LOGIN_ELSEWHERE_SPIDER = """
from crawler import Request, Spider


class LoginElsewhere(Spider):
    '''Logs in on another origin; the site sends a logged-out session there.'''

    name = "login_elsewhere"
    urls = []
    login_url = ""
    site_host = ""

    def login(self, session):
        session_id = session.get(self.login_url, timeout=5).text
        session.cookies.set("sid", session_id, domain=self.site_host, path="/")

    def is_logged_out(self, response):
        return response.url.startswith(self.login_url)

    def start_requests(self):
        for url in self.urls:
            yield Request(url, callback=self.parse)

    def parse(self, response):
        yield {"url": response.url, "status": response.status}
"""


def test_a_logged_out_redirect_to_a_login_page_on_another_origin_logs_in_again(spider_config, two_hosts) -> None:
    site, login_host = two_hosts
    # The login host gives out numbered sessions for the site; the site turns away every page of
    # the first one (as if it were revoked) by sending it to the login host, on another origin.
    issued: list[str] = []

    def log_in(received) -> tuple[int, list[tuple[str, str]], bytes]:
        issued.append(f"s{len(issued) + 1}")
        return 200, [("Content-Type", "text/plain")], issued[-1].encode()

    def page(received) -> tuple[int, list[tuple[str, str]], bytes]:
        if received.headers.get("Cookie") == f"sid={issued[-1]}" and len(issued) > 1:
            return 200, [("Content-Type", "text/html")], b"<p>members only</p>"
        return 302, [("Location", login_host.url_for("/login"))], b""

    login_host.handle("/login", log_in)
    for n in range(1, 4):
        site.handle(f"/page/{n}", page)
    config = spider_config(
        "login_elsewhere",
        LOGIN_ELSEWHERE_SPIDER,
        toml_tables({"crawl": {"workers": 1}, "robots": {"obey": False}}),
        urls=[site.url_for(f"/page/{n}") for n in range(1, 4)],
        login_url=login_host.url_for("/login"),
        site_host=site.host,
    )
    with deadline(CRAWL_DEADLINE):
        report = run_crawl(config)
    items = [json.loads(line) for line in config.output_path("login_elsewhere").read_text().splitlines()]
    assert sorted(item["url"] for item in items) == [site.url_for(f"/page/{n}") for n in range(1, 4)]
    # The first login's pages were turned away once; one re-login, then each page once more.
    assert report.stats["logins"] == 2 and report.stats["relogins"] == 1
    assert [received.path for received in login_host.requests] == ["/login", "/login"]
    # The login page was never queued and fetched as a page of the crawl.
    assert report.stats.get("redirects:requeued", 0) == 0


@pytest.mark.parametrize(
    "location",
    [b"/caf\xe9\xff/page", b"http://[::1", b"http://127.0.0.2:99999/", b"ftp://127.0.0.2/file"],
    ids=["raw-non-utf8-bytes", "ipv6-without-bracket", "port-99999", "ftp"],
)
def test_an_unusable_location_fails_its_request_as_an_invalid_redirect(
    crawl, location: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with Recorder("127.0.0.2", robots="") as site:
        site.redirect("/jump", location)
        crawled = crawl([site.url_for("/jump"), site.url_for("/fine")])
    assert crawled.stats.get("failed:InvalidRedirect") == 1
    assert "internal_errors" not in crawled.stats
    assert crawled.urls() == {site.url_for("/fine")}
    failures = [record for record in caplog.records if "/jump" in record.getMessage()]
    assert len(failures) == 1 and failures[0].exc_info is None  # one line, no traceback
