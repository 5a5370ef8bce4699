"""Per-host politeness, seen from the servers' side: concurrency, delays, pauses, robots.txt."""

from __future__ import annotations

import json
import random
import statistics
import threading
import time

import pytest

from crawler.politeness.hosts import AdaptiveDelay, FixedDelay, HostLimits, HostScheduler
from crawler.frontier.base import Lease
from crawler.practice import PracticeSite
from crawler.request import Request, host_key
from crawler.runner import run_crawl

NO_ROBOTS = "\n[robots]\nobey = false\n"


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in zip(times, times[1:])]


def items(config) -> list[dict[str, object]]:
    path = config.output_path("probe")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# -- limits per host, as the server sees them ------------------------------------------------


def test_per_host_concurrency_is_a_ceiling_at_the_server(probe_config) -> None:
    with PracticeSite(products=40, per_page=20, latency=0.1) as site:
        urls = [f"{site.url}/product/{n}" for n in range(1, 25)]
        run_crawl(probe_config(urls, "[crawl]\nworkers = 8\n[politeness]\nconcurrency = 2\n" + NO_ROBOTS))
        assert site.counters.hits("/product/24") == 1
        assert site.counters.max_concurrent == 2


def test_the_default_lets_a_host_have_several_requests_at_once(probe_config) -> None:
    with PracticeSite(products=40, per_page=20, latency=0.1) as site:
        urls = [f"{site.url}/product/{n}" for n in range(1, 25)]
        run_crawl(probe_config(urls, "[crawl]\nworkers = 8\n" + NO_ROBOTS))
        # The limit above is what held it to 2: here 8 workers reach the host together.
        assert site.counters.max_concurrent > 2


FLOAT_ERROR = 1e-9  # times are sums of floats


@pytest.fixture
def scheduled(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, float]]:
    """What the host scheduler decided for each request as the crawl ran: when it started it
    (the scheduler's clock), and the gap it then set before the host's next start.

    These are exact; what a server sees is that plus however late each request left a busy
    machine, so server-side times are only held to margins that load cannot eat.
    """
    decisions: list[tuple[float, float]] = []
    take = HostScheduler.take

    def recording_take(self: HostScheduler) -> object:
        lease = take(self)
        if lease is not None:
            host = self._hosts[lease.host]
            decisions.append((host.last_start, host.next_start - host.last_start))
        return lease

    monkeypatch.setattr(HostScheduler, "take", recording_take)
    return decisions


def test_delay_spaces_the_starts_of_requests_to_one_host(
    site: PracticeSite, probe_config, scheduled: list[tuple[float, float]]
) -> None:
    urls = [f"{site.url}/links/target/{n}" for n in range(6)]
    run_crawl(probe_config(urls, "[politeness]\ndelay = 0.2\n" + NO_ROBOTS))
    assert len(scheduled) == 6
    assert min(gaps(sorted(start for start, _ in scheduled))) >= 0.2 - FLOAT_ERROR
    arrivals = site.counters.arrivals("/links/target/")
    assert len(arrivals) == 6
    assert arrivals[-1] - arrivals[0] >= 5 * 0.2 - 0.1


def test_jitter_spreads_the_delay_around_its_value(
    site: PracticeSite, probe_config, scheduled: list[tuple[float, float]]
) -> None:
    urls = [f"{site.url}/links/target/{n}" for n in range(8)]
    run_crawl(probe_config(urls, "[politeness]\ndelay = 0.2\njitter = 0.5\n" + NO_ROBOTS))
    assert len(site.counters.arrivals("/links/target/")) == 8
    spacing = [gap for _, gap in scheduled]
    assert 0.1 - FLOAT_ERROR <= min(spacing) and max(spacing) <= 0.3 + FLOAT_ERROR  # 0.2 x (1 +/- 0.5)
    assert statistics.pstdev(spacing) > 0.01  # not a regular beat
    starts = sorted(start for start, _ in scheduled)
    assert all(later - earlier >= gap - FLOAT_ERROR for (earlier, gap), later in zip(sorted(scheduled), starts[1:]))


def test_a_slow_host_does_not_hold_back_a_fast_one(probe_config) -> None:
    with (
        PracticeSite(products=40, per_page=20, latency=1.0) as slow,
        PracticeSite(host="127.0.0.2") as fast,
    ):
        # The slow host's requests come first in the queue; 8 of them at 2 at a time take 4 s.
        urls = [f"{slow.url}/product/{n}" for n in range(1, 9)]
        urls += [f"{fast.url}/links/target/{n}" for n in range(60)]
        started = time.monotonic()
        run_crawl(probe_config(urls, "[crawl]\nworkers = 4\n[politeness]\nconcurrency = 2\n" + NO_ROBOTS))
        fast_arrivals = fast.counters.arrivals("/links/target/")
        slow_arrivals = slow.counters.arrivals("/product/")
        assert len(fast_arrivals) == 60 and len(slow_arrivals) == 8
        assert fast_arrivals[-1] - started < 1.5  # all done while the slow host was still busy
        assert slow_arrivals[-1] - started > 2.5


def test_retry_after_pauses_the_host_while_the_only_worker_serves_another(probe_config) -> None:
    with PracticeSite() as limited, PracticeSite(host="127.0.0.2") as other:
        urls = [f"{limited.url}/retry-after/rl?fail=1&seconds=2&status=429"]
        urls += [f"{limited.url}/links/target/{n}" for n in range(3)]
        urls += [f"{other.url}/links/target/{n}" for n in range(20)]
        config = probe_config(urls, "[crawl]\nworkers = 1\n" + NO_ROBOTS)
        report = run_crawl(config)
        (rate_limited, retried) = limited.counters.arrivals("/retry-after/")
        paused = [when for when in limited.counters.arrivals("/") if rate_limited < when < rate_limited + 1.9]
        served = [when for when in other.counters.arrivals("/") if rate_limited < when < rate_limited + 1.9]
        assert paused == []  # nothing went to the host while it asked us to stay away
        assert len(served) == 20  # and one worker was not asleep on it meanwhile
        assert retried - rate_limited >= 1.95
        assert len(items(config)) == 24
        assert report.stats["host_pauses"] == 1 and report.stats["retries"] == 1


def test_adaptive_delay_follows_the_hosts_latency(probe_config) -> None:
    with PracticeSite(products=40, per_page=20, latency=0.1) as site:
        urls = [f"{site.url}/product/{n}" for n in range(1, 13)]
        extra = "[politeness]\nadaptive = true\ndelay = 0.4\ntarget_concurrency = 1\n" + NO_ROBOTS
        report = run_crawl(probe_config(urls, extra))
        delay = report.hosts[host_key(site.url)]["delay"]
        assert 0.09 <= delay <= 0.15  # from 0.4 down to about the 0.1 s the host takes


def test_adaptive_delay_stays_within_its_bounds(probe_config) -> None:
    with PracticeSite(products=40, per_page=20, latency=0.1) as site:
        urls = [f"{site.url}/product/{n}" for n in range(1, 7)]
        low = "[politeness]\nadaptive = true\ndelay = 0.4\nmax_delay = 0.05\n" + NO_ROBOTS
        report = run_crawl(probe_config(urls, low))
        assert report.hosts[host_key(site.url)]["delay"] == 0.05


def test_adaptive_delay_is_never_lowered_by_errors() -> None:
    delay = AdaptiveDelay(start=1.0, minimum=0.0, maximum=10.0, target_concurrency=1.0)
    delay.observe(0.01, ok=False)
    assert delay.current == 1.0
    delay.observe(3.0, ok=False)  # but a slow error raises it
    assert delay.current == 2.0
    delay.observe(0.0, ok=True)
    assert delay.current == 1.0


ECHO_SPIDER = """
from crawler import Request, Spider


class Echo(Spider):
    name = "echo"
    url = ""

    def start_requests(self):
        yield Request(self.url, callback=self.parse)

    def parse(self, response):
        yield {"user_agent": response.json()["headers"]["User-Agent"]}
"""


def user_agent_sent(site: PracticeSite, spider_config, http: str = "") -> str:
    config = spider_config("echo", ECHO_SPIDER, http, url=f"{site.url}/echo")
    run_crawl(config)
    return json.loads(config.output_path("echo").read_text())["user_agent"]


def test_user_agent_identifies_the_crawler_by_default(site: PracticeSite, spider_config) -> None:
    from crawler import __version__

    assert user_agent_sent(site, spider_config) == f"crawler/{__version__}"


def test_user_agent_comes_from_the_config(site: PracticeSite, spider_config) -> None:
    agent = "examplebot/2.0 (+https://example.com/bot; bot@example.com)"
    assert user_agent_sent(site, spider_config, f'[http]\nuser_agent = "{agent}"\n') == agent


# -- the scheduler on its own ---------------------------------------------------------------


def lease_for(url: str, entry: int = 0) -> Lease:
    return Lease(bytes(16), Request(url).to_json(), 0, entry, host_key(url))


def test_scheduler_hands_out_other_hosts_while_one_is_at_its_limit() -> None:
    scheduler = HostScheduler(HostLimits(1, lambda: FixedDelay(0.0)))
    scheduler.put([lease_for("http://a/1", 1), lease_for("http://a/2", 2), lease_for("http://b/1", 3)])
    first = scheduler.take()
    second = scheduler.take()
    assert {first.host, second.host} == {"a", "b"}
    taken: list[Lease] = []
    waiter = threading.Thread(target=lambda: taken.append(scheduler.take()))
    waiter.start()
    waiter.join(0.2)
    assert taken == []  # a's second request waits for a's slot
    scheduler.finished(first if first.host == "a" else second, latency=0.01, ok=True)
    waiter.join(2)
    assert [lease.entry for lease in taken] == [2]


def test_scheduler_keeps_a_paused_host_waiting_and_reports_it() -> None:
    now = [100.0]
    scheduler = HostScheduler(HostLimits(4, lambda: FixedDelay(0.0)), clock=lambda: now[0])
    scheduler.pause("a", 30)
    assert scheduler.rooms(["a", "b"]) == {"b": 16}  # no more work is taken for a paused host
    scheduler.put([lease_for("http://a/1"), lease_for("http://b/1")])
    assert scheduler.take().host == "b"
    (row,) = [status for status in scheduler.hosts() if status.host == "a"]
    assert row.paused_until is not None and row.paused_until - time.time() > 25
    now[0] += 31
    assert scheduler.take().host == "a"


def test_fixed_delay_with_jitter_stays_in_its_band() -> None:
    delay = FixedDelay(1.0, jitter=0.25, rng=random.Random(7))
    values = [delay.gap() for _ in range(1000)]
    assert 0.75 <= min(values) and max(values) <= 1.25
    assert statistics.pstdev(values) > 0.1


# -- robots.txt in a crawl ------------------------------------------------------------------


def test_robots_txt_refusals_are_counted_and_recorded_not_fetched(site: PracticeSite, probe_config) -> None:
    site.robots.body = "User-agent: *\nDisallow: /links/target/1\n"
    urls = [f"{site.url}/links/target/{n}" for n in range(4)]
    config = probe_config(urls)
    report = run_crawl(config)
    assert site.counters.hits("/links/target/1") == 0
    assert site.counters.hits("/robots.txt") == 1  # once for the host, not once per request
    assert report.stats["refused:robots"] == 1
    counts = report.results[0].counts
    assert (counts.done, counts.refused, counts.failed) == (3, 1, 0)
    assert report.results[0].finished


def test_robots_txt_groups_match_the_user_agents_product_token(site: PracticeSite, probe_config) -> None:
    site.robots.body = "User-agent: examplebot\nDisallow: /\n\nUser-agent: *\nAllow: /\n"
    urls = [f"{site.url}/links/target/{n}" for n in range(3)]
    report = run_crawl(probe_config(urls, '[http]\nuser_agent = "ExampleBot/2.0 (+https://example.com/bot)"\n'))
    assert report.stats["refused:robots"] == 3
    assert site.counters.hits("/links/target/0") == 0


def test_crawl_delay_is_honoured(site: PracticeSite, probe_config) -> None:
    site.robots.body = "User-agent: *\nCrawl-delay: 0.3\n"
    urls = [f"{site.url}/links/target/{n}" for n in range(4)]
    report = run_crawl(probe_config(urls))
    arrivals = sorted(site.counters.arrivals("/links/target/"))
    # The scheduler starts the requests 0.3 s apart. A request can reach the site a little after
    # its start (a thread waiting for a busy CPU), so the gap before the next one may look shorter,
    # but the four together can never be sent closer than the delay allows.
    assert arrivals[-1] - arrivals[0] >= 3 * 0.3 - 0.1
    assert min(gaps(arrivals)) >= 0.15
    assert report.hosts[host_key(site.url)]["delay"] == 0.3


def test_robots_txt_can_be_turned_off(site: PracticeSite, probe_config) -> None:
    site.robots.body = "User-agent: *\nDisallow: /\n"
    report = run_crawl(probe_config([f"{site.url}/links/target/0"], NO_ROBOTS))
    assert site.counters.hits("/robots.txt") == 0
    assert site.counters.hits("/links/target/0") == 1
    assert "refused:robots" not in report.stats


def test_an_unavailable_robots_txt_holds_the_host_back_until_it_answers(site: PracticeSite, probe_config) -> None:
    site.robots.body = "User-agent: *\nAllow: /\n"
    site.robots.status = 503
    threading.Timer(0.6, setattr, (site.robots, "status", None)).start()
    extra = "[robots]\nrecheck_unavailable = 0.2\n[retry]\nattempts = 5\nbackoff = { initial = 0.2, max = 1, jitter = 0 }\n"
    config = probe_config([f"{site.url}/links/target/0"], extra)
    report = run_crawl(config)
    # RFC 9309: a 5xx robots.txt disallows the host for now; the page waited, then was fetched.
    assert site.counters.hits("/links/target/0") == 1
    assert site.counters.hits("/robots.txt") >= 2
    assert report.stats["robots:unavailable"] >= 1
    assert report.stats["retries"] >= 1 and len(items(config)) == 1


def test_a_robots_txt_that_never_answers_fails_the_request_by_kind(probe_config) -> None:
    with PracticeSite() as closed:
        url = f"{closed.url}/"
    report = run_crawl(probe_config([url], "[retry]\nattempts = 2\nbackoff = { initial = 0.01, max = 0.05 }\n"))
    assert report.stats["failed:RobotsUnavailable"] == 1


def test_the_run_summary_adds_up_a_host_that_several_spiders_visited() -> None:
    from crawler.engine import CrawlResult
    from crawler.frontier.base import FrontierCounts
    from crawler.runner import RunReport

    def result(spider: str, requests: int, errors: int, delay: float) -> CrawlResult:
        row = {"requests": requests, "errors": errors, "delay": delay, "paused_until": None}
        return CrawlResult(spider, FrontierCounts(), finished=True, started=FrontierCounts(), hosts={"h": row})

    report = RunReport([result("a", 10, 1, 0.0), result("b", 5, 2, 0.5)], {}, 1.0, False, 2, 1.0)
    assert report.hosts == {"h": {"requests": 15, "errors": 3, "delay": 0.5, "paused_until": None}}


def test_the_host_table_goes_on_across_runs(site: PracticeSite, probe_config) -> None:
    urls = [f"{site.url}/links/target/{n}" for n in range(4)]
    first = run_crawl(probe_config(urls, NO_ROBOTS, entry="max_pages = 2"))
    assert first.hosts[host_key(site.url)]["requests"] == 2
    second = run_crawl(probe_config(urls, NO_ROBOTS, entry="max_pages = 4"))
    assert second.hosts[host_key(site.url)]["requests"] == 4  # 2 from the first run, 2 now
    assert site.counters.requests == 4
