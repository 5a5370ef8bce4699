"""Log in once, and once again per revocation, against a real Django site.

The site (``tests/servers/django_members.py``, run as its own process) is stock Django: database
sessions in SQLite, ``LoginView`` with its CSRF field, ``@login_required`` member pages. When it
revokes the sessions, a request carrying the dead session is redirected to the login page with
``Set-Cookie: sessionid=""; Max-Age=0``, so a late answer to a request sent under the old login
can delete the new login's cookie from the jar every worker shares. The site makes such late
answers happen: the replies to every 5th member page are held back a little after Django has
made them. Whether a request's session was alive is decided when it arrives, so holding replies
back starves no page: each time one request is turned away, another revocation has happened, and
a crawl here has at most 5 of them, fewer than the 6 turn-aways (the first answer and 5 replays)
that make the crawler give up. Whatever the timing, the crawl must log in exactly once per revocation (plus the first login),
fetch every member page exactly once, and never give up.

All assertions are on counts the server and the crawl report, never on timing.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
import requests

from crawler.exceptions import LoginFailed
from crawler.runner import run_crawl

from helpers import in_thread
from serverproc import serve

TIMEOUT = 10  # for the test's own requests to the site

PAGES = 280  # with a revocation every 50: revoked after pages 50..250, and 30 pages after the last
REVOKE_EVERY = 50
REVOCATIONS = PAGES // REVOKE_EVERY  # 5; PAGES is no multiple of REVOKE_EVERY, so each one needs a re-login
# Replies to pages 5, 10, 15... are held this long after Django made them: longer than a login
# takes, so a reply to a request sent just before a revocation comes back after the new login.
SLOW = {"slow_every": 5, "slow_reply": 0.2}

ON_DEMAND_PAGES = 400  # revoked from outside after 100 and 200 pages: plenty are left after both
WRONG_PASSWORD = "wrong-password-7f3a"  # distinctive, so the message check cannot match by chance

SPIDER = """
from crawler import Request, Spider


class DjangoMembers(Spider):
    name = "django_members"
    start_url = ""

    def start_requests(self):
        yield Request(self.start_url, callback=self.parse)

    def parse(self, response):
        yield {"page": int(response.css("h1::attr(data-page)").get()), "url": response.url}
        for href in response.css("a.member::attr(href)").getall():
            yield response.follow(href, self.parse)
"""


class DjangoSite:
    """The running server, seen from the test: its URL, counters and controls."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()

    def get(self, path: str, **params: object) -> dict[str, object]:
        response = self.http.get(self.url + path, params=params, timeout=TIMEOUT)
        response.raise_for_status()
        return response.json()

    def stats(self) -> dict[str, object]:
        return self.get("/stats/")

    def reset(
        self, *, revoke_every: int, pages: int, slow_every: int = 0, slow_reply: float = 0, interrupt_logins: int = 0
    ) -> None:
        self.get(
            "/reset/",
            revoke_every=revoke_every,
            pages=pages,
            slow_every=slow_every,
            slow_reply=slow_reply,
            interrupt_logins=interrupt_logins,
        )

    def revoke(self) -> None:
        self.get("/revoke/")

    def member_urls(self, pages: int) -> list[str]:
        return sorted(f"{self.url}/members/{n}/" for n in range(1, pages + 1))


@pytest.fixture(scope="module")
def django_server() -> Iterator[DjangoSite]:
    # One server for the module (Django's start-up and migrations once); each test resets it.
    with serve("django_members.py", "--pages", str(PAGES)) as url:
        site = DjangoSite(url)
        yield site
        site.http.close()


@pytest.fixture
def django_site(django_server: DjangoSite, monkeypatch: pytest.MonkeyPatch) -> DjangoSite:
    """The server with its counters at zero, no session alive, and the demo credentials set."""
    django_server.reset(revoke_every=0, pages=PAGES)
    monkeypatch.setenv("DJANGO_USER", "demo")
    monkeypatch.setenv("DJANGO_PASSWORD", "demo-password")
    return django_server


@pytest.fixture
def django_config(spider_config):
    def make(site: DjangoSite, *, workers: int, processes: int = 1) -> object:
        login = f"""
[spiders.login]
url = "{site.url}/accounts/login/"
csrf_field = "csrfmiddlewaretoken"
env_fields = {{ username = "DJANGO_USER", password = "DJANGO_PASSWORD" }}
"""
        # politeness.concurrency (8 per host by default) would otherwise cap the requests in
        # flight to this one host below the worker count.
        extra = f"""
[crawl]
workers = {workers}
processes = {processes}

[politeness]
concurrency = {workers}

[robots]
obey = true
"""
        return spider_config("django_members", SPIDER, extra, entry=login, start_url=f"{site.url}/members/1/")

    return make


def output(config) -> list[dict[str, object]]:
    path = config.output_path("django_members")
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def crawled_urls(config) -> list[str]:
    return sorted(item["url"] for item in output(config))


def describe(stats: dict[str, object], report=None) -> str:
    """The numbers a failure message needs (the per-path hits left out)."""
    shown = {key: value for key, value in stats.items() if key != "member_hits"}
    if report is not None:
        shown["crawl"] = {
            key: report.stats.get(key, 0)
            for key in ("logins", "relogins", "logged_out_responses", "replayed_requests", "retries", "pages")
        }
    return json.dumps(shown)


def run(config):
    """``(report, None)``, or ``(None, the LoginFailed)`` if the crawl gave up: the test then fails
    with what the server saw, not just the exception."""
    try:
        return run_crawl(config), None
    except LoginFailed as failure:
        return None, failure


@pytest.mark.parametrize(
    ("workers", "processes", "repetition"),
    [
        *[(workers, 1, repetition) for workers in (16, 32, 64) for repetition in (1, 2, 3)],
        # The same crawl shared by worker processes: they ask the coordinator for the login,
        # which logs in once for all of them, per revocation.
        (32, 2, 1),
    ],
    ids=lambda value: str(value),
)
def test_each_automatic_revocation_costs_exactly_one_login(
    django_site: DjangoSite, django_config, workers: int, processes: int, repetition: int
) -> None:
    django_site.reset(revoke_every=REVOKE_EVERY, pages=PAGES, **SLOW)
    config = django_config(django_site, workers=workers, processes=processes)

    report, failure = run(config)
    stats = django_site.stats()

    assert failure is None, f"the crawl aborted: {failure}; server: {describe(stats)}"
    assert not report.interrupted
    # The server revokes after each 50th page served, and serves each page once: 5 revocations.
    assert stats["revocations"] == REVOCATIONS, describe(stats, report)
    assert stats["logins"] == 1 + REVOCATIONS, describe(stats, report)
    assert stats["failed_logins"] == 0, describe(stats, report)
    assert report.stats["logins"] == 1 + REVOCATIONS, describe(stats, report)
    assert report.stats["relogins"] == REVOCATIONS, describe(stats, report)
    # Every member page in the output exactly once, none missing, none fetched twice.
    urls = crawled_urls(config)
    assert len(urls) == len(set(urls)) == PAGES, describe(stats, report)
    assert urls == django_site.member_urls(PAGES)
    assert sorted(item["page"] for item in output(config)) == list(range(1, PAGES + 1))
    assert stats["member_pages_served"] == PAGES, describe(stats, report)


def test_two_revocations_from_outside_cost_exactly_two_relogins(django_site: DjangoSite, django_config) -> None:
    django_site.reset(revoke_every=0, pages=ON_DEMAND_PAGES, **SLOW)
    config = django_config(django_site, workers=16)

    crawl_over = threading.Event()

    def revoke_twice() -> None:
        with requests.Session() as http:  # its own connection; the fixture's session is not thread-safe
            for served in (100, 200):
                while http.get(f"{django_site.url}/stats/", timeout=TIMEOUT).json()["member_pages_served"] < served:
                    if crawl_over.wait(0.01):
                        return
                http.get(f"{django_site.url}/revoke/", timeout=TIMEOUT).raise_for_status()

    revoker = in_thread(revoke_twice)
    try:
        report, failure = run(config)
    finally:
        crawl_over.set()
        revoker.join(timeout=TIMEOUT)
    stats = django_site.stats()

    assert failure is None, f"the crawl aborted: {failure}; server: {describe(stats)}"
    assert not report.interrupted
    assert stats["revocations"] == 2, describe(stats, report)
    # Both revocations came while pages were left to fetch, so each needed a new login.
    assert all(served < ON_DEMAND_PAGES for served in stats["revoked_at"]), describe(stats, report)
    assert stats["logins"] == 3, describe(stats, report)
    assert stats["failed_logins"] == 0, describe(stats, report)
    assert report.stats["relogins"] == 2, describe(stats, report)
    urls = crawled_urls(config)
    assert len(urls) == len(set(urls)) == ON_DEMAND_PAGES, describe(stats, report)
    assert urls == django_site.member_urls(ON_DEMAND_PAGES)
    assert stats["member_pages_served"] == ON_DEMAND_PAGES, describe(stats, report)


@pytest.mark.parametrize("interrupted", [1, 2])
def test_a_revocation_during_a_login_costs_one_more_login_not_a_credentials_stop(
    django_site: DjangoSite, django_config, interrupted: int
) -> None:
    # Django answers a login whose new session was deleted while being saved with a 400
    # (SessionInterrupted), though it had accepted the password.
    django_site.reset(revoke_every=0, pages=60, interrupt_logins=interrupted)
    config = django_config(django_site, workers=16)

    report, failure = run(config)
    stats = django_site.stats()

    assert failure is None, f"the crawl aborted: {failure}; server: {describe(stats)}"
    assert stats["revocations"] == interrupted, describe(stats, report)
    assert stats["logins"] == 1 + interrupted, describe(stats, report)
    assert stats["failed_logins"] == 0, describe(stats, report)
    assert report.stats["logins"] == 1 and report.stats["login_retries"] == interrupted
    assert crawled_urls(config) == django_site.member_urls(60)


def test_a_wrong_password_stops_the_crawl_cleanly(
    django_site: DjangoSite, django_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DJANGO_PASSWORD", WRONG_PASSWORD)
    config = django_config(django_site, workers=16)

    with pytest.raises(LoginFailed) as failure:
        run_crawl(config)

    message = str(failure.value)
    assert "$DJANGO_PASSWORD" in message
    assert WRONG_PASSWORD not in message
    stats = django_site.stats()
    assert stats["failed_logins"] == 1, describe(stats)  # it does not try again
    assert stats["logins"] == 0, describe(stats)
    assert stats["member_pages_served"] == 0, describe(stats)
    assert output(config) == []


def test_three_machines_sharing_a_redis_checkpoint_log_in_once_per_revocation(
    django_site: DjangoSite, write_config, redis_server
) -> None:
    # Three `crawler run` processes, as on three machines: the crawl logs in once for all of
    # them, and each revocation costs one re-login, whoever's request was turned away first.
    django_site.reset(revoke_every=REVOKE_EVERY, pages=PAGES, **SLOW)
    toml = f"""
[[spiders]]
spider = "django_members"
args = {{ start_url = "{django_site.url}/members/1/" }}

[spiders.login]
url = "{django_site.url}/accounts/login/"
csrf_field = "csrfmiddlewaretoken"
env_fields = {{ username = "DJANGO_USER", password = "DJANGO_PASSWORD" }}

[crawl]
workers = 8

[politeness]
concurrency = 24

[checkpoint]
backend = "redis"
url = "{redis_server.url}"
crawl = "{redis_server.new_crawl()}"
lease_time = 5
"""
    config = write_config(toml, spiders={"django_members": SPIDER})
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "crawler.cli", "run", "config.toml"], cwd=config.base_dir,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        )
        for _ in range(3)
    ]
    try:
        errors = [proc.communicate(timeout=120)[1].decode(errors="replace") for proc in runs]
    finally:
        for proc in runs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    stats = django_site.stats()

    assert [proc.returncode for proc in runs] == [0, 0, 0], errors
    assert stats["revocations"] == REVOCATIONS, describe(stats)
    assert stats["logins"] == 1 + REVOCATIONS, describe(stats)
    assert stats["failed_logins"] == 0, describe(stats)
    assert stats["member_pages_served"] == PAGES, describe(stats)
    urls = crawled_urls(config)
    assert urls == django_site.member_urls(PAGES), "each member page in the output once"
