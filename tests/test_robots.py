"""The robots.txt cache against the practice site's real /robots.txt: rules, statuses, outages,
single-flight fetching and per-origin separation."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import requests

from crawler.exceptions import InvalidRequest, TransportError
from crawler.http.fetcher import translate_error
from crawler.politeness.robots import (
    RobotsCache,
    RobotsDecision,
    RobotsFetch,
    RobotsVerdict,
    SharedRobotsFetch,
    product_token,
)
from crawler.practice import PracticeSite
from crawler.request import Request
from crawler.stats import Stats

from helpers import wait_until

USER_AGENT = "crawler/0.1.0 (+https://example.com/bot)"
BODY_LIMIT = 512 * 1024
ALLOW = RobotsVerdict(RobotsDecision.ALLOW)
DISALLOW = RobotsVerdict(RobotsDecision.DISALLOW)


@pytest.fixture
def fetch() -> Iterator[RobotsFetch]:
    """A robots.txt fetcher as the crawl's will be: redirects and size bounded, our errors raised."""
    with requests.Session() as session:
        session.max_redirects = 5

        def fetch_robots(url: str) -> tuple[int, bytes]:
            request = Request(url)
            try:
                with session.get(url, timeout=(1, 2), stream=True) as response:
                    body = b""
                    for chunk in response.iter_content(64 * 1024):
                        body += chunk
                        if len(body) > BODY_LIMIT:
                            raise InvalidRequest(f"robots.txt over {BODY_LIMIT} bytes", request)
            except requests.TooManyRedirects as error:
                raise InvalidRequest(f"too many redirects: {error}", request) from error
            except requests.RequestException as error:
                raise translate_error(error, request) from error
            return response.status_code, body

        yield fetch_robots


@pytest.fixture
def stats() -> Stats:
    return Stats()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cache(fetch: RobotsFetch, stats: Stats, clock: FakeClock) -> Callable[..., RobotsCache]:
    def make(**options: float) -> RobotsCache:
        return RobotsCache(fetch, USER_AGENT, stats, clock=clock, **options)

    return make


@pytest.fixture
def other_site() -> Iterator[PracticeSite]:
    """A second origin: another host, as far as URLs go."""
    with PracticeSite(host="127.0.0.2", products=10) as practice_site:
        yield practice_site


def robots_hits(site: PracticeSite) -> int:
    return site.counters.hits("/robots.txt")


# -- rules --------------------------------------------------------------------


def test_product_token_is_what_robots_txt_names() -> None:
    assert product_token(USER_AGENT) == "crawler"
    assert product_token("Go-http-client/1.1") == "Go-http-client"
    assert product_token("bot2/1.0") == "bot"  # RFC 9309 tokens are letters, "-" and "_" only
    with pytest.raises(ValueError):
        product_token("/1.0")


def test_allows_and_disallows_by_path_fetching_once(site, cache, stats) -> None:
    site.robots.body = "User-agent: *\nDisallow: /private\nAllow: /private/open\n"
    robots = cache()

    assert robots.check(f"{site.url}/catalogue/page/1") == ALLOW
    assert robots.check(f"{site.url}/private/secret") == DISALLOW
    assert robots.check(f"{site.url}/private/open/page") == ALLOW
    assert robots.check(f"{site.url}/robots.txt") == ALLOW
    assert robots_hits(site) == 1
    assert stats.get("robots:fetched") == 1


def test_our_group_beats_star_and_others_groups_do_not_apply(site, cache) -> None:
    # "bot" and "example" appear in our full User-Agent header, but are not our product token.
    site.robots.body = (
        "User-agent: *\nDisallow: /\n\n"
        "User-agent: bot\nUser-agent: example\nDisallow: /mine\n\n"
        "User-agent: Crawler\nDisallow: /private\n"
    )
    robots = cache()

    assert robots.check(f"{site.url}/mine") == ALLOW
    assert robots.check(f"{site.url}/product/1") == ALLOW
    assert robots.check(f"{site.url}/private/1") == DISALLOW


def test_star_group_applies_when_no_group_names_us(site, cache) -> None:
    site.robots.body = "User-agent: otherbot\nDisallow: /\n\nUser-agent: *\nDisallow: /cart\n"
    robots = cache()

    assert robots.check(f"{site.url}/product/1") == ALLOW
    assert robots.check(f"{site.url}/cart") == DISALLOW


def test_crawl_delay_is_parsed_from_our_group(site, cache, stats) -> None:
    site.robots.body = "User-agent: *\nCrawl-delay: 9\n\nUser-agent: crawler\nCrawl-delay: 2.5\nDisallow: /x\n"
    robots = cache()

    assert robots.check(f"{site.url}/") == RobotsVerdict(RobotsDecision.ALLOW, crawl_delay=2.5)
    assert robots.check(f"{site.url}/x") == RobotsVerdict(RobotsDecision.DISALLOW, crawl_delay=2.5)
    assert stats.get("robots:crawl_delay_capped") == 0


def test_crawl_delay_over_the_cap_is_capped_and_counted_once(site, cache, stats) -> None:
    site.robots.body = "User-agent: *\nCrawl-delay: 3600\n"
    robots = cache(max_crawl_delay=30.0)

    assert robots.check(f"{site.url}/").crawl_delay == 30.0
    assert robots.check(f"{site.url}/product/2").crawl_delay == 30.0
    assert stats.get("robots:crawl_delay_capped") == 1


# -- statuses -----------------------------------------------------------------


def test_no_robots_txt_allows_everything(site, cache, stats) -> None:
    robots = cache()  # site.robots has no body: 404

    assert robots.check(f"{site.url}/anything") == ALLOW
    assert robots.check(f"{site.url}/else") == ALLOW
    assert robots_hits(site) == 1
    assert stats.get("robots:unavailable") == 0


@pytest.mark.parametrize("status", [401, 403, 410])
def test_client_errors_allow_everything(site, cache, status) -> None:
    site.robots.body, site.robots.status = "User-agent: *\nDisallow: /\n", status
    robots = cache()

    assert robots.check(f"{site.url}/") == ALLOW
    assert robots.check(f"{site.url}/product/1") == ALLOW
    assert robots_hits(site) == 1


@pytest.mark.parametrize("status", [500, 503, 429])
def test_server_errors_are_unavailable_until_rechecked(site, cache, stats, clock, status, caplog) -> None:
    site.robots.status = status
    robots = cache(recheck_unavailable=60.0)

    unavailable = RobotsVerdict(RobotsDecision.UNAVAILABLE, reason=f"HTTP {status}")
    assert robots.check(f"{site.url}/a") == unavailable
    clock.now += 59.0
    assert robots.check(f"{site.url}/b") == unavailable
    assert robots_hits(site) == 1

    clock.now += 1.0  # still down at the recheck: one more fetch, no second warning
    assert robots.check(f"{site.url}/c") == unavailable
    assert robots_hits(site) == 2

    site.robots.body, site.robots.status = "User-agent: *\nDisallow: /c\n", None
    clock.now += 60.0
    assert robots.check(f"{site.url}/c") == DISALLOW
    assert robots.check(f"{site.url}/d") == ALLOW
    assert robots_hits(site) == 3
    assert stats.get("robots:fetched") == 3
    assert stats.get("robots:unavailable") == 2
    warnings = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert len(warnings) == 1 and f"HTTP {status}" in warnings[0].getMessage()


def test_unreachable_origin_is_unavailable(cache, stats) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago: nobody listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    robots = cache()

    verdict = robots.check(f"http://127.0.0.1:{port}/page")

    assert verdict.decision is RobotsDecision.UNAVAILABLE
    assert verdict.reason.startswith("cannot connect")
    assert stats.get("robots:unavailable") == 1


def test_unusable_robots_txt_allows_everything_with_one_warning(site, cache, stats, caplog) -> None:
    site.robots.body = "User-agent: *\nDisallow: /\n" + "#" * BODY_LIMIT
    robots = cache()

    assert robots.check(f"{site.url}/") == ALLOW
    assert robots.check(f"{site.url}/product/3") == ALLOW
    assert robots_hits(site) == 1
    assert stats.get("robots:unavailable") == 0
    assert [record.levelno for record in caplog.records] == [logging.WARNING]


# -- bodies that are not clean UTF-8 robots.txt ---------------------------------------


def test_binary_garbage_allows_everything(site, cache) -> None:
    site.robots.body = bytes(range(256)) * 64 + b"\x89PNG\r\n\x1a\n\xff\xfe\x00:\x00"
    robots = cache()

    assert robots.check(f"{site.url}/") == ALLOW
    assert robots.check(f"{site.url}/product/1") == ALLOW


def test_rules_around_undecodable_lines_still_apply(site, cache) -> None:
    site.robots.body = (
        b"User-agent: *\nDisallow: /caf\xe9\n\xff\xfe garbage : here\nDisallow: /private\n"
        b"<html><body>not a robots.txt</body></html>\n"
    )
    robots = cache()

    assert robots.check(f"{site.url}/private/1") == DISALLOW
    assert robots.check(f"{site.url}/product/1") == ALLOW


def test_byte_order_mark_does_not_hide_the_first_line(site, cache) -> None:
    site.robots.body = "\ufeffUser-agent: *\nDisallow: /private\n"
    robots = cache()

    assert robots.check(f"{site.url}/private/1") == DISALLOW


# -- concurrency and origins ----------------------------------------------------


def test_concurrent_first_checks_fetch_once(site, cache, stats) -> None:
    site.robots.body, site.robots.delay = "User-agent: *\nDisallow: /private\n", 0.3
    robots = cache()
    start = threading.Barrier(16)
    verdicts: list[RobotsVerdict] = []

    def ask() -> None:
        start.wait()
        verdicts.append(robots.check(f"{site.url}/private/page"))

    threads = [threading.Thread(target=ask) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)

    assert verdicts == [DISALLOW] * 16
    assert robots_hits(site) == 1
    assert stats.get("robots:fetched") == 1


def test_a_slow_origin_does_not_hold_up_another(site, other_site, cache) -> None:
    site.robots.body, site.robots.delay = "User-agent: *\nDisallow: /\n", 1.0
    other_site.robots.body = "User-agent: *\nDisallow: /private\n"
    robots = cache()
    slow: list[RobotsVerdict] = []
    slow_check = threading.Thread(target=lambda: slow.append(robots.check(f"{site.url}/x")))
    slow_check.start()
    wait_until(lambda: robots_hits(site) == 1, timeout=5)

    started = time.monotonic()
    assert robots.check(f"{other_site.url}/private") == DISALLOW
    assert time.monotonic() - started < 0.5
    assert not slow  # the slow fetch really was still in flight

    slow_check.join(5)
    assert slow == [DISALLOW]


def test_each_origin_has_its_own_robots_txt(site, other_site, cache, stats) -> None:
    site.robots.body = "User-agent: *\nDisallow: /a\n"
    other_site.robots.body = "User-agent: *\nDisallow: /b\n"
    with PracticeSite(products=10) as same_host_other_port:
        same_host_other_port.robots.body = "User-agent: *\nCrawl-delay: 4\n"
        robots = cache()

        for _ in range(2):
            assert robots.check(f"{site.url}/a") == DISALLOW
            assert robots.check(f"{site.url}/b") == ALLOW
            assert robots.check(f"{other_site.url}/a") == ALLOW
            assert robots.check(f"{other_site.url}/b") == DISALLOW
            assert robots.check(f"{same_host_other_port.url}/a") == RobotsVerdict(
                RobotsDecision.ALLOW, crawl_delay=4.0)

        assert robots_hits(same_host_other_port) == 1
    assert robots_hits(site) == robots_hits(other_site) == 1
    assert stats.get("robots:fetched") == 3


def test_origin_is_scheme_host_and_port_not_spelling(site, cache) -> None:
    site.robots.body = "User-agent: *\nDisallow: /a\n"
    robots = cache()
    spelled_differently = site.url.replace("http://", "HTTP://")

    assert robots.check(f"{site.url}/a") == DISALLOW
    assert robots.check(f"{spelled_differently}/a?q=1#top") == DISALLOW
    assert robots_hits(site) == 1
    with pytest.raises(ValueError):
        robots.check("mailto:someone@example.com")


# -- one fetch for many caches (a crawl's worker processes) -----------------------------------------


class Replies:
    """What a ``SharedRobotsFetch`` told each asker, by name."""

    def __init__(self) -> None:
        self.told: dict[str, list[object]] = {}

    def to(self, name: str):
        return lambda outcome: self.told.setdefault(name, []).append(outcome)


ROBOTS_URL = "http://example.test/robots.txt"
FILE = (200, b"User-agent: *\nDisallow: /\n")


def test_a_shared_fetch_is_made_by_the_first_asker_and_told_to_those_waiting() -> None:
    shared, replies = SharedRobotsFetch(), Replies()
    shared.ask(ROBOTS_URL, 0, replies.to("first"))
    shared.ask(ROBOTS_URL, 1, replies.to("second"))
    shared.ask(ROBOTS_URL, 0, replies.to("third"))
    assert replies.told == {"first": [None]}  # None: fetch it yourself; the others wait

    shared.tell(ROBOTS_URL, FILE)
    shared.ask(ROBOTS_URL, 1, replies.to("later"))
    assert replies.told == {"first": [None], "second": [FILE], "third": [FILE], "later": [FILE]}


@pytest.mark.parametrize("outcome", [(503, b""), (429, b""), TransportError("connection refused", Request(ROBOTS_URL))])
def test_a_shared_fetch_keeps_no_answer_that_means_try_later(outcome) -> None:
    shared, replies = SharedRobotsFetch(), Replies()
    shared.ask(ROBOTS_URL, 0, replies.to("first"))
    shared.ask(ROBOTS_URL, 1, replies.to("waiting"))
    shared.tell(ROBOTS_URL, outcome)
    shared.ask(ROBOTS_URL, 1, replies.to("at the recheck"))
    assert replies.told == {"first": [None], "waiting": [outcome], "at the recheck": [None]}


def test_a_shared_fetch_whose_fetcher_is_gone_passes_to_the_first_still_waiting() -> None:
    shared, replies = SharedRobotsFetch(), Replies()
    shared.ask(ROBOTS_URL, 0, replies.to("leader"))
    shared.ask(ROBOTS_URL, 0, replies.to("leader's neighbour"))
    shared.ask(ROBOTS_URL, 1, replies.to("next"))
    shared.ask(ROBOTS_URL, 2, replies.to("last"))
    shared.drop(0)  # the leader's process died: nobody in it hears anything more
    assert replies.told == {"leader": [None], "next": [None]}

    shared.drop(2)  # a waiter's process died: the fetch goes on for the others
    shared.tell(ROBOTS_URL, FILE)
    assert replies.told == {"leader": [None], "next": [None]}
    shared.ask(ROBOTS_URL, 3, replies.to("after"))
    assert replies.told["after"] == [FILE]


def test_a_shared_fetch_nobody_waits_for_is_forgotten_with_its_fetcher() -> None:
    shared, replies = SharedRobotsFetch(), Replies()
    shared.ask(ROBOTS_URL, 0, replies.to("leader"))
    shared.drop(0)
    shared.ask(ROBOTS_URL, 1, replies.to("new"))
    assert replies.told == {"leader": [None], "new": [None]}
