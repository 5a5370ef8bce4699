"""What a crawl takes in and how far it goes: allowed domains, allow/deny patterns, depth, page and
item caps, priorities, ``dont_filter`` and URL canonicalisation for dedupe.

Rules and canonical URLs are pure functions and are tested directly; everything else is tested by
crawling the real practice site and counting what reached it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from crawler.cli import main as crawler_main
from crawler.config import Config, load_config
from crawler.frontier.base import FrontierCounts
from crawler.practice import PracticeSite
from crawler.practice.catalogue import Catalogue
from crawler.request import Request, canonical_url, fingerprint
from crawler.rules import CrawlRules
from crawler.runner import RunReport, run_crawl

# Robots.txt would add one request per host to every count below; these tests are about which
# pages a crawl takes, so they do without it.
NO_ROBOTS = "\n[robots]\nobey = false\n"
# One worker and one request at a time: requests reach the site in the order the crawl picks them.
ONE_AT_A_TIME = "\n[crawl]\nworkers = 1\n[politeness]\nconcurrency = 1\n"

#: A fixture's factory: spider arguments and TOML in, a loaded Config out.
MakeConfig = Callable[..., Config]

HOPS_SPIDER = """
from crawler import Request, Spider


class Hops(Spider):
    '''Fetches ``start`` (with ``start_priorities``, if given); from every start page follows
    exactly ``links`` (with ``priorities``, if given); from a followed page follows its own <a>
    links only if ``follow_deeper``.'''

    name = "hops"
    start = []
    start_priorities = []
    links = []
    priorities = []
    follow_deeper = False

    def start_requests(self):
        for position, url in enumerate(self.start):
            priority = self.start_priorities[position] if self.start_priorities else 0
            yield Request(url, callback=self.parse_start, priority=priority)

    def parse_start(self, response):
        yield {"url": response.url}
        for position, url in enumerate(self.links):
            priority = self.priorities[position] if self.priorities else 0
            yield Request(url, callback=self.parse, priority=priority)

    def parse(self, response):
        yield {"url": response.url}
        if self.follow_deeper:
            yield from response.follow_all(response.css("a::attr(href)").getall())


class HomeHops(Hops):
    '''The same, but the spider itself keeps to 127.0.0.1.'''

    name = "home_hops"
    allowed_domains = ("127.0.0.1",)
"""


@pytest.fixture
def other_site() -> Iterator[PracticeSite]:
    """A second site on another loopback address: another host, as far as rules and politeness go."""
    with PracticeSite(host="127.0.0.2", products=5) as practice_site:
        yield practice_site


@pytest.fixture
def hops_config(spider_config: MakeConfig) -> MakeConfig:
    """A config running one spider of ``HOPS_SPIDER``; ``entry`` is TOML added to its
    ``[[spiders]]`` table, ``extra`` TOML sections appended."""

    def make(*, spider: str = "hops", entry: str = "", extra: str = NO_ROBOTS, **args: object) -> Config:
        return spider_config(spider, HOPS_SPIDER, extra, entry=entry, module="hops", **args)

    return make


@pytest.fixture
def entry_probe_config(probe_config: MakeConfig) -> MakeConfig:
    """``probe_config`` with ``entry`` (TOML) in the probe's ``[[spiders]]`` table of config.toml
    itself, so the keys go through the same parsing and validation as a user's; no robots.txt."""

    def make(urls: list[str], entry: str, extra: str = NO_ROBOTS, **args: object) -> Config:
        return probe_config(urls, extra, entry=entry, **args)

    return make


def output_items(config: Config, spider: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in config.output_path(spider).read_text().splitlines()]


def counts_of(report: RunReport) -> FrontierCounts:
    [result] = report.results
    return result.counts


def status_cli(folder: Path) -> subprocess.CompletedProcess[str]:
    """``crawler status config.toml``, run as the user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "crawler.cli", "status", "config.toml"],
        cwd=folder,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )


# -- rules, as pure functions -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "refusal"),
    [
        ("http://example.com/", None),
        ("http://shop.example.com/cart", None),
        ("https://a.b.example.com:8443/x", None),  # any depth of subdomain, any scheme or port
        ("http://badexample.com/", "offsite"),  # a suffix of the name is not a subdomain
        ("http://example.com.evil.org/", "offsite"),
        ("http://evil.org/?next=http://example.com/", "offsite"),  # only the host counts
        ("http://example.org/", "offsite"),
    ],
)
def test_an_allowed_domain_covers_its_subdomains_and_nothing_else(url: str, refusal: str | None) -> None:
    assert CrawlRules.build(["example.com"]).refusal(url, 0) == refusal
    # Written with a leading dot, as some crawlers want it, it means the same.
    assert CrawlRules.build([".example.com"]).refusal(url, 0) == refusal


@pytest.mark.parametrize(
    ("domain", "url"),
    [
        ("example.com", "http://SHOP.Example.COM/"),
        ("EXAMPLE.com", "http://shop.example.com/"),
        # A fully qualified name ends with a dot; it is the same host.
        ("example.com", "http://shop.example.com./"),
        ("example.com.", "http://shop.example.com/"),
        # IDNA: the Unicode and the ASCII (punycode) spellings of a name are one domain.
        ("bücher.example", "http://xn--bcher-kva.example/"),
        ("bücher.example", "http://shop.xn--bcher-kva.example/"),
        ("xn--bcher-kva.example", "http://bücher.example/"),
        ("BÜCHER.example", "http://xn--bcher-kva.example/"),
    ],
)
def test_hosts_match_whatever_their_spelling(domain: str, url: str) -> None:
    rules = CrawlRules.build([domain])
    assert rules.refusal(url, 0) is None
    # The same rules still refuse another host, so the match above is not "anything goes".
    assert rules.refusal("http://elsewhere.example/", 0) == "offsite"


def test_no_rules_refuse_nothing() -> None:
    rules = CrawlRules.build()
    assert rules.refusal("http://anywhere.example/any/path?q=1", 10_000) is None


def test_a_url_must_match_one_allow_pattern_and_no_deny_pattern() -> None:
    rules = CrawlRules.build(allow=[r"/product/\d+$", r"/catalogue/"], deny=[r"/product/1\d$"])
    assert rules.refusal("http://h/product/7", 0) is None
    assert rules.refusal("http://h/catalogue/page/2", 0) is None
    assert rules.refusal("http://h/about", 0) == "not_allowed"
    # Matched by an allow pattern and a deny pattern: deny wins.
    assert rules.refusal("http://h/product/12", 0) == "denied"
    # A deny pattern alone leaves every other URL in.
    assert CrawlRules.build(deny=["logout"]).refusal("http://h/about", 0) is None
    assert CrawlRules.build(deny=["logout"]).refusal("http://h/logout?next=/", 0) == "denied"


def test_patterns_search_the_whole_url() -> None:
    # Patterns are searched, not anchored at the start, and see the host and query too.
    rules = CrawlRules.build(allow=[r"[?&]page=\d"], deny=[r"^https://"])
    assert rules.refusal("http://h/list?page=2", 0) is None
    assert rules.refusal("http://h/list", 0) == "not_allowed"
    assert rules.refusal("https://h/list?page=2", 0) == "denied"


@pytest.mark.parametrize(("depth", "refusal"), [(0, None), (1, None), (2, None), (3, "depth"), (50, "depth")])
def test_max_depth_is_the_deepest_link_kept(depth: int, refusal: str | None) -> None:
    assert CrawlRules.build(max_depth=2).refusal("http://h/", depth) == refusal


def test_max_depth_zero_keeps_only_start_requests() -> None:
    rules = CrawlRules.build(max_depth=0)
    assert rules.refusal("http://h/", 0) is None
    assert rules.refusal("http://h/", 1) == "depth"


# -- canonical URLs, as pure functions ------------------------------------------------------------


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("http://h/p?a=1#section", "http://h/p?a=1"),  # the fragment never reaches the server
        ("http://h/p?b=2&a=1", "http://h/p?a=1&b=2"),
        ("http://h:80/p", "http://h/p"),
        ("https://h:443/p", "https://h/p"),
        ("http://h/a%7Eb", "http://h/a~b"),  # an unreserved character, escaped or not
        ("http://h/a%7eb", "http://h/a~b"),  # hex digits in either case
        ("http://h/targ%65t", "http://h/target"),
        ("http://h/a b", "http://h/a%20b"),
        ("http://h/?q=a b", "http://h/?q=a%20b"),
        ("http://h/?q=a+b", "http://h/?q=a%20b"),  # in a query, + is a space
        ("HTTP://H.Example.COM/p", "http://h.example.com/p"),
        ("http://h/café", "http://h/caf%C3%A9"),
    ],
)
def test_spellings_of_one_url_have_one_canonical_form(one: str, other: str) -> None:
    assert canonical_url(one) == canonical_url(other)
    assert fingerprint("spider", Request(one)) == fingerprint("spider", Request(other))


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("http://h:8080/p", "http://h/p"),  # not the default port: another server
        ("https://h:80/p", "https://h/p"),  # 80 is not https's default
        ("http://h/p", "https://h/p"),
        ("http://h/P", "http://h/p"),  # paths are case-sensitive
        ("http://h/a%2Fb", "http://h/a/b"),  # an escaped slash is not a path separator
        ("http://h/p?a=1", "http://h/p?a=2"),
        ("http://h/p?a=1", "http://h/p?a=1&b="),
    ],
)
def test_different_urls_stay_different(one: str, other: str) -> None:
    assert canonical_url(one) != canonical_url(other)
    assert fingerprint("spider", Request(one)) != fingerprint("spider", Request(other))


def test_the_canonical_form_is_the_one_w3lib_gives_without_the_default_port() -> None:
    assert canonical_url("http://h:80/p?b=2&a=1#f") == "http://h/p?a=1&b=2"
    assert canonical_url("https://user:pw@h:443/p") == "https://user:pw@h/p"
    assert canonical_url("http://[::1]:80/x") == "http://[::1]/x"
    assert canonical_url("http://[::1]:8080/x") == "http://[::1]:8080/x"


def test_fingerprints_tell_methods_bodies_and_spiders_apart_and_dont_filter_is_always_new() -> None:
    url = "http://h/p?a=1"
    plain = fingerprint("spider", Request(url))
    assert fingerprint("spider", Request(url, method="POST")) != plain
    assert fingerprint("spider", Request(url, method="POST", body="x")) != fingerprint(
        "spider", Request(url, method="POST", body="y")
    )
    assert fingerprint("other", Request(url)) != plain
    # dont_filter: a new fingerprint every time, so the seen-set never matches it.
    unfiltered = {fingerprint("spider", Request(url, dont_filter=True)) for _ in range(5)}
    assert len(unfiltered) == 5 and plain not in unfiltered


# -- config validation ----------------------------------------------------------------------------

VALID_ENTRY = {
    "allow": 'allow = ["/product/"]',
    "deny": 'deny = ["/logout"]',
    "allowed_domains": 'allowed_domains = ["example.com"]',
    "max_pages": "max_pages = 1",
    "max_items": "max_items = 1",
    "max_depth": "max_depth = 0",
}
DOMAINS_ONLY = "domains only, without scheme, port or path: "


@pytest.mark.parametrize(
    ("field", "bad", "message"),
    [
        ("allow", 'allow = ["("]', "'(' is not a valid regular expression"),
        ("deny", r'deny = ["[a-"]', "'[a-' is not a valid regular expression"),
        ("allowed_domains", 'allowed_domains = ["http://x.com/"]', f"{DOMAINS_ONLY}'http://x.com/'"),
        ("allowed_domains", 'allowed_domains = ["x.com:8080"]', f"{DOMAINS_ONLY}'x.com:8080'"),
        ("allowed_domains", 'allowed_domains = [""]', f"{DOMAINS_ONLY}''"),  # would refuse every host
        ("max_pages", "max_pages = 0", "must be greater than or equal to 1"),
        ("max_items", "max_items = 0", "must be greater than or equal to 1"),
        ("max_depth", "max_depth = -1", "must be greater than or equal to 0"),
    ],
)
def test_check_rejects_a_bad_crawl_control_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], field: str, bad: str, message: str
) -> None:
    path = tmp_path / "config.toml"
    # The same entry with a good value passes, so the failure below is this field's alone.
    path.write_text(f'[[spiders]]\nspider = "crawler.spider:Spider"\n{VALID_ENTRY[field]}\n')
    assert getattr(load_config(path).spiders[0], field) not in (None, [])

    path.write_text(f'[[spiders]]\nspider = "crawler.spider:Spider"\n{bad}\n')
    assert crawler_main(["check", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith(f"{path}: spiders[0].{field}: ")
    assert message in line
    assert "Traceback" not in captured.err


# -- allowed domains, allow and deny, in a crawl ----------------------------------------------------


@pytest.mark.parametrize(
    ("spider", "entry", "home_fetched", "other_fetched", "offsite"),
    [
        ("hops", 'allowed_domains = ["127.0.0.1"]', 1, 0, 2),
        ("home_hops", "", 1, 0, 2),  # the spider's own allowed_domains is the default
        ("home_hops", 'allowed_domains = ["127.0.0.2"]', 0, 1, 2),  # the config's replaces it
        ("home_hops", "allowed_domains = []", 1, 1, 0),  # an empty list lifts the restriction
        ("hops", "", 1, 1, 0),
    ],
)
def test_followed_links_keep_to_the_allowed_domains(
    site: PracticeSite,
    other_site: PracticeSite,
    hops_config: MakeConfig,
    spider: str,
    entry: str,
    home_fetched: int,
    other_fetched: int,
    offsite: int,
) -> None:
    config = hops_config(
        spider=spider,
        entry=entry,
        # One start page on each host, each linking to a page on each host.
        start=[f"{site.url}/links?n=0", f"{other_site.url}/links?n=0"],
        links=[f"{site.url}/links/target/1", f"{other_site.url}/links/target/2"],
    )
    report = run_crawl(config)
    assert counts_of(report).failed == 0
    # Start requests are the user's explicit choice: fetched on either host, whatever the rules.
    assert site.counters.hits("/links") == 1
    assert other_site.counters.hits("/links") == 1
    assert site.counters.hits("/links/target/1") == home_fetched
    assert other_site.counters.hits("/links/target/2") == other_fetched
    # Filtered as yielded, before dedupe: each start page yields the off-site link once.
    assert report.stats.get("filtered:offsite", 0) == offsite
    assert report.results[0].finished


def test_start_requests_are_only_checked_for_being_fetchable(site: PracticeSite, hops_config: MakeConfig) -> None:
    config = hops_config(
        entry='allowed_domains = ["example.com"]\nallow = ["/nothing-matches-this/"]\ndeny = ["/links"]\nmax_depth = 0',
        start=[f"{site.url}/links?n=3", "mailto:someone@example.com", "ftp://example.com/file"],
    )
    report = run_crawl(config)
    # Off-site, not allowed, denied: fetched all the same, being a start request.
    assert site.counters.hits("/links") == 1
    assert report.stats["filtered:scheme:mailto"] == 1
    assert report.stats["filtered:scheme:ftp"] == 1
    assert counts_of(report).done == 1


def test_allow_and_deny_patterns_pick_the_links_followed(site: PracticeSite, hops_config: MakeConfig) -> None:
    config = hops_config(
        # Targets 0-19 are allowed, of which 15-19 are denied too; 20-29 match no allow pattern.
        entry='allow = ["/links/target/\\\\d$", "/links/target/1\\\\d$"]\ndeny = ["/target/1[5-9]$"]',
        start=[f"{site.url}/links?n=30"],
        links=[f"{site.url}/links/target/{n}" for n in range(30)],
    )
    report = run_crawl(config)
    fetched = [n for n in range(30) if site.counters.hits(f"/links/target/{n}")]
    assert fetched == list(range(15))
    assert report.stats["filtered:denied"] == 5  # deny wins over a matching allow pattern
    assert report.stats["filtered:not_allowed"] == 10
    assert report.stats["pages"] == 16  # the start page matches no allow pattern, yet is fetched
    assert site.counters.requests == 16


# -- depth ----------------------------------------------------------------------------------------


def catalogue_links(catalogue: Catalogue, path: str) -> int:
    """How many <a href> a catalogue page has (duplicates included): what a spider that follows
    every link yields from it."""
    if path == "/":
        return 1  # the catalogue's first page
    kind, _, number = path.strip("/").rpartition("/")
    if kind == "catalogue/page":
        page = int(number)
        on_page = min(page * catalogue.per_page, catalogue.products) - (page - 1) * catalogue.per_page
        return 1 + on_page + (page > 1) + (page < catalogue.pages)  # home, products, pager
    return 1 + len(catalogue.related(int(number))) + 1  # home, related products, back


@pytest.mark.parametrize(
    ("max_depth", "shallower", "deepest"),
    [
        (0, [], ["/"]),
        (1, ["/"], ["/catalogue/page/1"]),
        (2, ["/", "/catalogue/page/1"], ["/catalogue/page/2", *(f"/product/{n}" for n in range(1, 21))]),
    ],
)
def test_max_depth_stops_following_links_that_deep(
    site: PracticeSite, entry_probe_config: MakeConfig, max_depth: int, shallower: list[str], deepest: list[str]
) -> None:
    # Home (depth 0) -> listing page 1 (1) -> products 1-20 and listing page 2 (2) -> ...
    config = entry_probe_config([f"{site.url}/"], f"max_depth = {max_depth}", follow_links=True)
    report = run_crawl(config)
    fetched = shallower + deepest
    assert counts_of(report).done == len(fetched)
    assert site.counters.requests == len(fetched)
    assert all(site.counters.hits(path) == 1 for path in fetched)
    # Every link the deepest pages yield is filtered (duplicates too: filtering comes before dedupe).
    assert report.stats["filtered:depth"] == sum(catalogue_links(site.catalogue, path) for path in deepest)
    assert report.results[0].finished


# -- max_pages and max_items ----------------------------------------------------------------------


def test_max_pages_caps_the_crawl_and_raising_it_continues(site: PracticeSite, entry_probe_config: MakeConfig) -> None:
    def capped(max_pages: int) -> Config:
        # Many workers racing for the last pages under the cap.
        extra = NO_ROBOTS + "\n[crawl]\nworkers = 8\n"
        return entry_probe_config([f"{site.url}/"], f"max_pages = {max_pages}", extra, follow_links=True)

    first = run_crawl(capped(10))
    assert counts_of(first).done == 10
    assert counts_of(first).queued > 0  # stopped by the cap, not by running out of work
    assert site.counters.requests == 10
    assert first.results[0].finished

    again = run_crawl(capped(10))
    assert again.results[0].already_finished
    assert site.counters.requests == 10

    config = capped(30)
    raised = run_crawl(config)
    assert not raised.results[0].already_finished
    assert raised.results[0].finished
    assert counts_of(raised).done == 30
    assert site.counters.requests == 30
    assert all(count == 1 for count in site.counters.snapshot()["hits"].values())  # none fetched twice
    assert len(output_items(config, "probe")) == 30


def test_max_pages_counts_failed_requests_too(site: PracticeSite, entry_probe_config: MakeConfig) -> None:
    urls = [f"{site.url}/status/404", f"{site.url}/status/410", *(f"{site.url}/links/target/{n}" for n in range(5))]
    report = run_crawl(entry_probe_config(urls, "max_pages = 3"))
    counts = counts_of(report)
    assert counts.done + counts.failed == 3
    assert site.counters.requests == 3
    assert report.results[0].finished


def test_max_items_stops_the_crawl_and_raising_it_continues(site: PracticeSite, entry_probe_config: MakeConfig) -> None:
    # One item per page: the links page, then 50 targets.
    def capped(max_items: int) -> Config:
        return entry_probe_config(
            [f"{site.url}/links?n=50"], f"max_items = {max_items}", NO_ROBOTS + ONE_AT_A_TIME, follow_links=True
        )

    first = run_crawl(capped(5))
    items = counts_of(first).items
    assert 5 <= items < 51  # at the cap (a few more may come), far from the end
    assert counts_of(first).queued > 0
    assert site.counters.requests == items
    assert len(output_items(capped(5), "probe")) == items
    assert first.results[0].finished

    again = run_crawl(capped(5))
    assert again.results[0].already_finished
    assert site.counters.requests == items

    raised = run_crawl(capped(20))
    assert not raised.results[0].already_finished and raised.results[0].finished
    assert 20 <= counts_of(raised).items < 51
    assert all(count == 1 for count in site.counters.snapshot()["hits"].values())  # none fetched twice


def test_max_items_sends_nothing_that_was_not_in_flight_when_the_cap_was_reached(
    site: PracticeSite, entry_probe_config: MakeConfig
) -> None:
    # One item per page. One request at a time, each taking 0.5 s: the second item is committed
    # while the third page is in flight, so that one may still come, and no other.
    urls = [f"{site.url}/delay?seconds=0.5&page={n}" for n in range(20)]
    report = run_crawl(entry_probe_config(urls, "max_items = 2", NO_ROBOTS + ONE_AT_A_TIME))
    assert report.results[0].finished
    assert site.counters.hits("/delay") <= 3
    assert counts_of(report).items <= 3


# -- priorities and dont_filter -------------------------------------------------------------------


@pytest.mark.parametrize("yielded_by", ["start_requests", "a callback"])
def test_higher_priority_requests_are_fetched_first(
    site: PracticeSite, hops_config: MakeConfig, yielded_by: str
) -> None:
    priorities = [0, 5, -1, 10, 5, 3]
    targets = [f"{site.url}/links/target/{n}" for n in range(len(priorities))]
    if yielded_by == "start_requests":
        config = hops_config(extra=NO_ROBOTS + ONE_AT_A_TIME, start=targets, start_priorities=priorities)
    else:
        config = hops_config(
            extra=NO_ROBOTS + ONE_AT_A_TIME, start=[f"{site.url}/links?n=0"], links=targets, priorities=priorities
        )
    run_crawl(config)
    arrivals = {n: site.counters.arrivals(f"/links/target/{n}") for n in range(len(priorities))}
    assert all(len(times) == 1 for times in arrivals.values())
    order = sorted(arrivals, key=lambda n: arrivals[n][0])
    # Highest first; equal priorities in the order they were yielded.
    assert order == [3, 1, 4, 5, 0, 2]


DONT_FILTER_SPIDER = """
from crawler import Request, Spider


class Again(Spider):
    name = "again"
    base = ""

    def start_requests(self):
        yield Request(self.base + "/links/target/1", callback=self.parse_first)
        yield Request(self.base + "/links/target/1", callback=self.parse_first)  # a duplicate: dropped
        yield Request(self.base + "/links/target/2", callback=self.parse)
        yield Request(self.base + "/links/target/2", callback=self.parse, dont_filter=True)

    def parse_first(self, response):
        yield {"url": response.url}
        # Both already fetched (or queued): only the one with dont_filter goes again.
        yield Request(self.base + "/links/target/1", callback=self.parse)
        yield Request(self.base + "/links/target/1", callback=self.parse, dont_filter=True)
        yield Request(self.base + "/links/target/2", callback=self.parse)

    def parse(self, response):
        yield {"url": response.url}
"""


def test_dont_filter_fetches_a_seen_request_again(site: PracticeSite, spider_config: MakeConfig) -> None:
    config = spider_config("again", DONT_FILTER_SPIDER, NO_ROBOTS, base=site.url)
    report = run_crawl(config)
    assert site.counters.hits("/links/target/1") == 2
    assert site.counters.hits("/links/target/2") == 2
    assert counts_of(report).done == 4
    assert len(output_items(config, "again")) == 4


# -- canonical URLs, in a crawl -------------------------------------------------------------------


def test_spellings_of_one_url_are_fetched_once(site: PracticeSite, hops_config: MakeConfig) -> None:
    spellings = [
        f"{site.url}/echo?b=2&a=1&t=x~y&q=a b#top",
        f"{site.url}/echo?a=1&b=2&q=a%20b&t=x%7Ey",
        f"{site.url}/echo?q=a+b&t=x%7ey&b=2&a=1#bottom",
        f"{site.url}/e%63ho?a=1&b=2&q=a%20b&t=x~y",
        f"HTTP://127.0.0.1:{site.port}/echo?a=1&b=2&q=a+b&t=x~y",
    ]
    different = f"{site.url}/echo?a=1&b=3"  # a different query: a different page
    config = hops_config(start=[f"{site.url}/links?n=0"], links=[*spellings, different])
    report = run_crawl(config)
    assert site.counters.hits("/echo") == 2
    assert site.counters.hits("/e%63ho") == 0
    assert site.counters.requests == 3  # the start page and two /echo
    # The first spelling yielded is the one fetched; the different page is fetched too.
    echoed = [urlsplit(str(item["url"])) for item in output_items(config, "hops") if "/echo" in str(item["url"])]
    queries = sorted(json.dumps(parse_qs(url.query), sort_keys=True) for url in echoed)
    expected = [{"a": ["1"], "b": ["2"], "t": ["x~y"], "q": ["a b"]}, {"a": ["1"], "b": ["3"]}]
    assert queries == sorted(json.dumps(query, sort_keys=True) for query in expected)
    assert counts_of(report).done == 3


# -- crawler status -------------------------------------------------------------------------------


def test_status_shows_filtered_counts_and_the_host_table(site: PracticeSite, tmp_path: Path) -> None:
    (tmp_path / "spiders").mkdir()
    (tmp_path / "spiders" / "__init__.py").touch()
    (tmp_path / "spiders" / "hops.py").write_text(HOPS_SPIDER)
    args = {
        "start": [f"{site.url}/links?n=0"],
        # Followed (depth 1): a page of 12 links (each at depth 2: filtered), a 404, a 410, three
        # off-site links.
        "links": [
            f"{site.url}/links?n=12",
            f"{site.url}/status/404",
            f"{site.url}/status/410",
            *(f"http://off{n}.example/" for n in range(3)),
        ],
        "follow_deeper": True,
    }
    arg_text = ", ".join(f"{key} = {json.dumps(value)}" for key, value in args.items())
    (tmp_path / "config.toml").write_text(
        f'[[spiders]]\nspider = "hops"\nargs = {{ {arg_text} }}\nallowed_domains = ["127.0.0.1"]\nmax_depth = 1\n'
        '[checkpoint]\npath = "checkpoint.db"\n' + NO_ROBOTS
    )
    report = run_crawl(load_config(tmp_path / "config.toml"))
    assert report.stats["filtered:depth"] == 12 and report.stats["filtered:offsite"] == 3

    status = status_cli(tmp_path)
    assert status.returncode == 0, status.stderr
    lines = [line.strip() for line in status.stdout.splitlines()]
    assert any(line.startswith("hops: finished; 2 done, 0 queued, 0 in flight, 2 failed,") for line in lines), lines
    assert "Filtered: depth 12, offsite 3" in lines
    assert "Failed: HTTPStatusError 2" in lines
    assert "Failed by HTTP status: 404 1, 410 1" in lines  # one kind, told apart by status
    # Four requests reached the host: the start page, the page of links, the 404 and the 410.
    assert f"Host 127.0.0.1:{site.port}: 4 requests, 2 failed attempts, delay 0.00s" in lines


def test_status_says_a_crawl_stopped_by_max_pages_is_finished(
    site: PracticeSite, entry_probe_config: MakeConfig, tmp_path: Path
) -> None:
    report = run_crawl(entry_probe_config([f"{site.url}/"], "max_pages = 5", follow_links=True))
    assert counts_of(report).done == 5 and counts_of(report).queued > 0

    capped = status_cli(tmp_path)
    assert capped.returncode == 0, capped.stderr
    assert "probe: finished; 5 done, " in capped.stdout

    # `crawler status` takes the cap from the config: under a higher one, the same checkpoint is
    # work still to do.
    entry_probe_config([f"{site.url}/"], "max_pages = 50", follow_links=True)
    raised = status_cli(tmp_path)
    assert raised.returncode == 0, raised.stderr
    assert "probe: unfinished; 5 done, " in raised.stdout
