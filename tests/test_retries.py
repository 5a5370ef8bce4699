"""Retries against real failing endpoints: exact attempt counts, Retry-After, what is never retried."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

from crawler.config import Config
from crawler.frontier.sqlite import Checkpoint
from crawler.practice import PracticeSite
from crawler.runner import run_crawl

# robots.txt is off: these tests count the requests one URL gets (robots has its own tests).
FAST_RETRIES = """
[robots]
obey = false

[retry]
attempts = 4
backoff = { initial = 0.01, max = 0.05, jitter = 0.0 }
"""


def checkpoint_of(config: Config) -> Checkpoint:
    return Checkpoint(config.resolve(config.checkpoint.path), owner="test")


def failures(config: Config) -> list[tuple[str, int, str]]:
    with checkpoint_of(config) as checkpoint:
        return [(f.url, f.attempts, f.error) for f in checkpoint.frontier("probe").failed(100)]


def items(config: Config) -> list[dict[str, object]]:
    path = config.output_path("probe")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_fails_twice_then_succeeds_in_exactly_three_attempts(site: PracticeSite, probe_config) -> None:
    config = probe_config([f"{site.url}/flaky/twice?fail=2"], FAST_RETRIES)
    report = run_crawl(config)
    assert site.counters.attempts("twice") == 3
    assert report.stats["retries"] == 2
    assert [item["status"] for item in items(config)] == [200]
    assert failures(config) == []


def test_exhausted_retries_are_recorded_as_failed_with_the_last_error(site: PracticeSite, probe_config) -> None:
    config = probe_config([f"{site.url}/flaky/always?fail=100"], FAST_RETRIES)
    report = run_crawl(config)
    assert site.counters.attempts("always") == 4
    assert report.stats["retries"] == 3
    assert failures(config) == [(f"{site.url}/flaky/always?fail=100", 4, "HTTP 503")]


def test_404_is_not_retried(site: PracticeSite, probe_config) -> None:
    config = probe_config([f"{site.url}/status/404"], FAST_RETRIES)
    report = run_crawl(config)
    assert site.counters.hits("/status/404") == 1
    assert report.stats.get("retries", 0) == 0
    assert failures(config) == [(f"{site.url}/status/404", 1, "HTTP 404")]


def test_each_transient_status_is_retried(site: PracticeSite, probe_config) -> None:
    urls = [f"{site.url}/flaky/s{status}?fail=1&status={status}" for status in (429, 500, 502, 503, 504)]
    run_crawl(probe_config(urls, FAST_RETRIES))
    assert [site.counters.attempts(f"s{status}") for status in (429, 500, 502, 503, 504)] == [2] * 5


def test_retry_after_seconds_is_honoured(site: PracticeSite, probe_config) -> None:
    config = probe_config([f"{site.url}/retry-after/ra?fail=1&seconds=1"], FAST_RETRIES)
    started = time.monotonic()
    run_crawl(config)
    # Backoff alone would wait 0.01 s; the server asked for a full second.
    assert time.monotonic() - started >= 1.0
    assert site.counters.attempts("ra") == 2
    assert len(items(config)) == 1


def test_retry_after_http_date_is_honoured(site: PracticeSite, probe_config) -> None:
    config = probe_config([f"{site.url}/retry-after-date/rad?fail=1&seconds=2"], FAST_RETRIES)
    started = time.monotonic()
    run_crawl(config)
    # An HTTP date has one-second resolution, so 2 s ahead means at least 1 s from now.
    assert time.monotonic() - started >= 1.0
    assert site.counters.attempts("rad") == 2


def test_retry_after_longer_than_the_cap_is_cut_to_the_cap(site: PracticeSite, probe_config) -> None:
    config = probe_config(
        [f"{site.url}/retry-after/long?fail=1&seconds=3600"],
        FAST_RETRIES.replace("attempts = 4", "attempts = 2\nmax_retry_after = 0.2"),
    )
    started = time.monotonic()
    run_crawl(config)
    assert time.monotonic() - started < 5
    assert site.counters.attempts("long") == 2


def test_post_is_not_retried_after_it_reached_the_server(site: PracticeSite, probe_config) -> None:
    config = probe_config([f"{site.url}/flaky/post?fail=1"], FAST_RETRIES, method="POST")
    run_crawl(config)
    assert site.counters.attempts("post") == 1
    assert failures(config) == [(f"{site.url}/flaky/post?fail=1", 1, "HTTP 503")]


def test_post_marked_idempotent_is_retried(site: PracticeSite, probe_config) -> None:
    config = probe_config([f"{site.url}/flaky/safe-post?fail=1"], FAST_RETRIES, method="POST", idempotent=True)
    run_crawl(config)
    assert site.counters.attempts("safe-post") == 2
    assert len(items(config)) == 1


def test_dropped_connection_is_retried(site: PracticeSite, probe_config) -> None:
    config = probe_config([f"{site.url}/drop/dropped?fail=1"], FAST_RETRIES)
    run_crawl(config)
    assert site.counters.attempts("dropped") == 2
    assert len(items(config)) == 1


def test_read_timeout_is_retried_then_recorded(site: PracticeSite, probe_config) -> None:
    config = probe_config(
        [f"{site.url}/delay?seconds=3"],
        FAST_RETRIES.replace("attempts = 4", "attempts = 2") + "\n[http.timeout]\nread = 0.3\n",
    )
    started = time.monotonic()
    run_crawl(config)
    assert time.monotonic() - started < 2.5
    assert site.counters.hits("/delay") == 2
    [(url, attempts, error)] = failures(config)
    assert attempts == 2 and error.startswith("read timeout")


def test_connection_refused_is_retried_as_a_connect_error(probe_config) -> None:
    with PracticeSite() as closed:
        url = f"{closed.url}/"
    config = probe_config([url], FAST_RETRIES.replace("attempts = 4", "attempts = 3"))
    report = run_crawl(config)
    assert report.stats["http_requests"] == 3
    [(_, attempts, error)] = failures(config)
    assert attempts == 3 and error.startswith("cannot connect")


def test_ctrl_c_cuts_a_backoff_wait_short(site: PracticeSite, probe_config) -> None:
    config = probe_config(
        [f"{site.url}/retry-after/wait?fail=5&seconds=30"],
        FAST_RETRIES + "\n[crawl]\nshutdown_grace = 60\n",
    )
    # Ctrl-C once the first 503 has come back and the worker sleeps on Retry-After: 30.
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    started = time.monotonic()
    report = run_crawl(config)
    timer.join()
    assert time.monotonic() - started < 5
    assert report.interrupted
    # Not failed: back in the queue for the next run.
    assert failures(config) == []
    with checkpoint_of(config) as checkpoint:
        assert checkpoint.frontier("probe").counts().queued == 1


def test_redirects_are_followed_to_the_final_url(site: PracticeSite, probe_config) -> None:
    config = probe_config([f"{site.url}/redirect-chain/3"], FAST_RETRIES)
    report = run_crawl(config)
    assert [item["url"] for item in items(config)] == [f"{site.url}/redirect-chain/0"]
    assert report.stats["http_requests"] == 4  # every hop is a request the server saw


def test_a_redirect_loop_fails_without_retrying(site: PracticeSite, probe_config) -> None:
    config = probe_config([f"{site.url}/redirect-loop"], FAST_RETRIES + "\n[http]\nmax_redirects = 5\n")
    run_crawl(config)
    assert site.counters.hits("/redirect-loop") == 6  # the request and 5 redirects, once
    [(_, attempts, error)] = failures(config)
    assert attempts == 1 and error.startswith("too many redirects")


def test_the_policy_decides_each_wait_from_tenacitys_strategies() -> None:
    from crawler.exceptions import HTTPStatusError, InvalidRequest
    from crawler.request import Request
    from crawler.retry import RetryPolicy

    policy = RetryPolicy(attempts=4, backoff_initial=0.5, backoff_max=1.5, jitter=0.0, max_retry_after=10)
    page = Request("http://h/")
    assert [policy.retry_in(HTTPStatusError(page, 503), n) for n in (1, 2, 3, 4)] == [0.5, 1.0, 1.5, None]
    assert policy.retry_in(HTTPStatusError(page, 429, retry_after=3.0), 1) == 3.0
    assert policy.retry_in(HTTPStatusError(page, 429, retry_after=3600.0), 1) == 10  # cut to the cap
    assert policy.retry_in(HTTPStatusError(page, 404), 1) is None
    assert policy.retry_in(InvalidRequest("bad", page), 1) is None
    assert policy.retry_in(HTTPStatusError(Request("http://h/", method="POST"), 503), 1) is None
