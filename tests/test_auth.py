"""Logging in once, re-logging in on revocation, per-request tokens, and cookie warnings,
against the practice site's real login form, members area and token API."""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from pathlib import Path

import pytest
import requests

from crawler.exceptions import LoginFailed
from crawler.frontier.sqlite import Checkpoint
from crawler.practice import PracticeSite
from crawler.runner import run_crawl

from helpers import in_thread, interrupt_when, wait_until

CREDENTIALS = {
    "PRACTICE_USERNAME": "demo",
    "PRACTICE_PASSWORD": "demo-password",
    "PRACTICE_CLIENT_ID": "demo-client",
    "PRACTICE_CLIENT_SECRET": "demo-secret",
}

MEMBERS_SPIDER = (Path(__file__).resolve().parent.parent / "spiders" / "members.py").read_text()


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return CREDENTIALS


@pytest.fixture
def members_config(write_config, credentials):
    def make(site: PracticeSite, *, workers: int = 16, extra: str = "") -> object:
        return write_config(
            f"""
            [[spiders]]
            spider = "members"
            args = {{ start_url = "{site.url}/" }}

            [spiders.login]
            url = "{site.url}/login"
            csrf_field = "csrf_token"
            env_fields = {{ username = "PRACTICE_USERNAME", password = "PRACTICE_PASSWORD" }}

            [spiders.token]
            url = "{site.url}/api/token"
            env_fields = {{ client_id = "PRACTICE_CLIENT_ID", client_secret = "PRACTICE_CLIENT_SECRET" }}
            refresh_margin = 0

            [crawl]
            workers = {workers}

            [checkpoint]
            path = "checkpoint.db"
            """
            + extra,
            spiders={"members": MEMBERS_SPIDER},
        )

    return make


def items(config, kind: str) -> list[dict[str, object]]:
    lines = config.output_path("members").read_text().splitlines()
    return [item for item in map(json.loads, lines) if item["kind"] == kind]


def member_urls(site: PracticeSite, config) -> list[str]:
    return sorted(item["url"] for item in items(config, "member_page"))


def all_member_urls(site: PracticeSite, pages: int = 200) -> list[str]:
    return sorted(f"{site.url}/members/page/{n}" for n in range(1, pages + 1))


def test_sixteen_workers_log_in_once(members_config) -> None:
    with PracticeSite(products=10) as site:
        config = members_config(site)
        report = run_crawl(config)
        assert site.counters.logins == 1
        assert site.counters.failed_logins == 0
        assert report.stats["logins"] == 1
        assert member_urls(site, config) == all_member_urls(site)
        assert sorted(item["id"] for item in items(config, "api_item")) == list(range(1, 201))


def test_each_revocation_costs_exactly_one_relogin_and_no_page(members_config) -> None:
    with PracticeSite(products=10, revoke_after=60, latency=0.005) as site:
        config = members_config(site)
        report = run_crawl(config)
        # Revoked after pages 60, 120 and 180: one new login each, by one of the 16 workers.
        assert site.counters.revocations == 3
        assert site.counters.logins == 1 + 3
        assert report.stats["relogins"] == 3
        assert report.stats["replayed_requests"] >= 3
        assert member_urls(site, config) == all_member_urls(site)
        assert len(items(config, "member_page")) == 200  # replays do not duplicate items
        assert report.stats.get("retries", 0) == 0  # replays do not spend retries


def test_a_revocation_from_outside_costs_one_relogin(members_config) -> None:
    with PracticeSite(products=10, latency=0.01) as site:
        config = members_config(site)
        revoker = in_thread(lambda: (wait_until(lambda: site.counters.member_pages >= 50), site.revoke_sessions()))
        run_crawl(config)
        revoker.join()
        assert site.counters.logins == 2
        assert member_urls(site, config) == all_member_urls(site)


def test_a_failed_login_stops_the_crawl_cleanly(members_config, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRACTICE_PASSWORD", "wrong-password")
    with PracticeSite(products=10) as site:
        config = members_config(site)
        with pytest.raises(LoginFailed) as failure:
            run_crawl(config)
        assert "$PRACTICE_PASSWORD" in str(failure.value)
        assert "wrong-password" not in str(failure.value)
        assert site.counters.logins == 0
        assert site.counters.failed_logins == 1  # it does not loop
        assert site.counters.member_pages == 0
        with Checkpoint(config.resolve(config.checkpoint.path), "test") as checkpoint:
            counts = checkpoint.frontier("members").counts()
        # Nothing was failed or lost: both start requests wait in the queue.
        assert (counts.failed, counts.in_flight, counts.done) == (0, 0, 0)
        assert counts.queued == 2

        monkeypatch.setenv("PRACTICE_PASSWORD", "demo-password")
        run_crawl(config)
        assert member_urls(site, config) == all_member_urls(site)


def test_a_missing_credential_is_a_config_error_naming_the_variable(members_config, monkeypatch) -> None:
    from crawler.exceptions import ConfigError

    monkeypatch.delenv("PRACTICE_PASSWORD")
    with PracticeSite(products=10) as site:
        config = members_config(site)
        with pytest.raises(ConfigError) as error:
            run_crawl(config)
    assert error.value.problems == [
        "spiders[0].login.env_fields.password: environment variable PRACTICE_PASSWORD is not set"
    ]


def test_a_resumed_crawl_reuses_the_saved_login(members_config) -> None:
    with PracticeSite(products=10, latency=0.02) as site:
        config = members_config(site, workers=4)
        watcher = interrupt_when(lambda: site.counters.member_pages >= 20)
        first = run_crawl(config)
        watcher.join()
        assert first.interrupted
        cookie_file = config.resolve("checkpoint.db.members.cookies")
        assert stat.S_IMODE(os.stat(cookie_file).st_mode) == 0o600
        run_crawl(config)
        assert site.counters.logins == 1  # the saved session was still valid
        assert member_urls(site, config) == all_member_urls(site)


def test_a_resumed_crawl_logs_in_again_when_the_saved_login_expired(members_config) -> None:
    with PracticeSite(products=10, latency=0.02) as site:
        config = members_config(site, workers=4)
        watcher = interrupt_when(lambda: site.counters.member_pages >= 20)
        run_crawl(config)
        watcher.join()
        site.revoke_sessions()
        run_crawl(config)
        assert site.counters.logins == 2
        assert member_urls(site, config) == all_member_urls(site)


def test_the_token_is_granted_once_for_all_threads_and_refreshed_once_when_revoked(members_config) -> None:
    with PracticeSite(products=10, latency=0.005) as site:
        config = members_config(site)
        expirer = in_thread(lambda: (wait_until(lambda: site.counters.api_requests >= 100), site.expire_tokens()))
        report = run_crawl(config)
        expirer.join()
        assert site.counters.token_grants == 2
        assert report.stats["token_refreshes"] == 2
        assert sorted(item["id"] for item in items(config, "api_item")) == list(range(1, 201))


def test_a_short_lived_token_is_refreshed_once_per_expiry(members_config, write_config) -> None:
    with PracticeSite(products=10, token_ttl=0.3, latency=0.01) as site:
        config = members_config(site)
        started = time.monotonic()
        run_crawl(config)
        elapsed = time.monotonic() - started
        # One grant per expiry (plus the first), however many threads need the token.
        assert 2 <= site.counters.token_grants <= elapsed / 0.3 + 2
        assert sorted(item["id"] for item in items(config, "api_item")) == list(range(1, 201))


def test_tokens_and_logins_leave_session_headers_alone(site: PracticeSite, credentials) -> None:
    from crawler.auth.cookies import CrawlCookieJar
    from crawler.auth.tokens import BearerToken, HeaderAuth
    from crawler.http.fetcher import Auth, Fetcher, Timeouts
    from crawler.http.sessions import PoolSizing, SessionRegistry, SessionSettings, make_session_factory
    from crawler.request import Request
    from crawler.retry import TRANSIENT_STATUSES
    from crawler.stats import Stats

    stats = Stats()
    factory = make_session_factory(SessionSettings("test-agent", 10, True), PoolSizing(hosts=9), stats)
    jar = CrawlCookieJar()
    sessions = SessionRegistry(lambda: factory(jar))
    bearer = BearerToken(
        f"{site.url}/api/token",
        {"client_id": "demo-client", "client_secret": "demo-secret"},
        hosts=[f"127.0.0.1:{site.port}"],
        stats=stats,
        timeout=(5, 5),
    )
    signed = HeaderAuth([f"127.0.0.1:{site.port}"], lambda method, url: {"X-Signature": f"sig({method} {url})"})
    fetcher = Fetcher(
        sessions, timeouts=Timeouts(5, 5, 30), max_body_size=1 << 20, max_redirects=5,
        error_statuses=TRANSIENT_STATUSES, stats=stats, auth=Auth(None, (bearer, signed)),
    )
    defaults = dict(requests.Session().headers)
    defaults["User-Agent"] = "test-agent"
    threads = [
        threading.Thread(target=fetcher.fetch, args=(Request(f"{site.url}/api/items/{n}"),)) for n in range(1, 9)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    echo = fetcher.fetch(Request(f"{site.url}/echo"))
    try:
        assert len(sessions) == 9
        assert site.counters.api_requests == 8
        sent = {k.lower(): v for k, v in echo.json()["headers"].items()}
        assert sent["authorization"].startswith("Bearer ")
        assert sent["x-signature"] == f"sig(GET {site.url}/echo)"
        for session in sessions._sessions:
            assert dict(session.headers) == defaults
    finally:
        sessions.close_all()


def test_a_token_never_follows_a_redirect_to_another_host(site: PracticeSite, write_config, credentials) -> None:
    with PracticeSite(host="127.0.0.2") as other:
        config = write_config(
            f"""
            [[spiders]]
            spider = "leak"
            [spiders.token]
            url = "{site.url}/api/token"
            env_fields = {{ client_id = "PRACTICE_CLIENT_ID", client_secret = "PRACTICE_CLIENT_SECRET" }}
            [checkpoint]
            path = "checkpoint.db"
            """,
            spiders={
                "leak": f"""
                from crawler import HeaderAuth, Request, Spider

                class Leak(Spider):
                    name = "leak"

                    def token_auth(self):
                        return HeaderAuth(["127.0.0.1:{site.port}"], lambda method, url: {{"X-Api-Token": "rotating-key"}})

                    def start_requests(self):
                        yield Request("{site.url}/api/redirect?to={other.url}/echo",
                                      headers={{"X-Trace": "dropped", "Accept-Language": "en", "Cookie": "own=1"}})

                    def parse(self, response):
                        yield {{"url": response.url, "headers": response.json()["headers"]}}
                """
            },
        )
        report = run_crawl(config)
        [item] = [json.loads(line) for line in config.output_path("leak").read_text().splitlines()]
        assert item["url"] == f"{other.url}/echo"
        received = {name.lower() for name in item["headers"]}
        # The first hop carried the bearer token (the API demands it) and the spider's own headers.
        assert site.counters.api_requests == 1
        assert "authorization" not in received
        assert "x-api-token" not in received
        assert "cookie" not in received  # the spider's own credential stays with its host too
        # Of the spider's own headers only harmless ones go to another origin (unless the
        # request says forward_headers=True): X-Trace could be a secret by another name.
        assert "x-trace" not in received
        assert "accept-language" in received
        assert report.stats["header_overrides"] == 1  # the spider's own Cookie, said once

        # What plain requests does with the same redirect: X-Api-Token goes to the other host.
        with requests.Session() as plain:
            leaked = plain.get(
                f"{site.url}/redirect?to={other.url}/echo", headers={"X-Api-Token": "rotating-key"}
            ).json()["headers"]
        assert "rotating-key" in leaked.values()


def test_a_cookie_for_another_domain_is_reported_once(site: PracticeSite, probe_config, caplog) -> None:
    url = f"{site.url}/set-cookie?name=sid&value=1&domain=a.example.com"
    config = probe_config([url, url + "&again=1"])
    with caplog.at_level(logging.WARNING):
        report = run_crawl(config)
    assert report.stats["cookie_warnings"] == 1
    [warning] = [r.getMessage() for r in caplog.records if "cookie" in r.getMessage()]
    assert "'sid'" in warning and "a.example.com" in warning


def test_a_request_cookie_header_is_reported_as_dropping_the_login(site: PracticeSite, write_config, caplog) -> None:
    config = write_config(
        """
        [[spiders]]
        spider = "own_cookie"
        [checkpoint]
        path = "checkpoint.db"
        """,
        spiders={
            "own_cookie": f"""
            from crawler import Request, Spider

            class OwnCookie(Spider):
                name = "own_cookie"

                def start_requests(self):
                    for n in range(3):
                        yield Request("{site.url}/echo?n=" + str(n), headers={{"Cookie": "mine=1"}})

                def parse(self, response):
                    yield {{"cookie": response.json()["headers"].get("Cookie")}}
            """
        },
    )
    with caplog.at_level(logging.WARNING):
        report = run_crawl(config)
    assert report.stats["header_overrides"] == 1
    assert sum("login's cookies are not sent" in r.getMessage() for r in caplog.records) == 1


def test_no_secret_reaches_the_logs_the_checkpoint_or_the_output(members_config, caplog) -> None:
    with PracticeSite(products=10, revoke_after=80) as site:
        config = members_config(site)
        with caplog.at_level(logging.DEBUG):
            report = run_crawl(config)
        folder = config.base_dir
        stored = b"".join(
            path.read_bytes() for path in folder.rglob("*") if path.is_file() and "cookies" not in path.name
        )
        logged = caplog.text + json.dumps(report.stats)
        for secret in ("demo-password", "demo-secret"):
            assert secret.encode() not in stored
            assert secret not in logged
        assert b"Bearer" not in stored and "Bearer" not in logged


def test_a_spider_can_log_in_with_its_own_method(write_config, credentials) -> None:
    with PracticeSite(products=10, revoke_after=15) as site:
        config = write_config(
            """
            [[spiders]]
            spider = "own_login"
            [checkpoint]
            path = "checkpoint.db"
            """,
            spiders={
                "own_login": f"""
                import os
                import re

                from crawler import LoginFailed, Request, Spider

                class OwnLogin(Spider):
                    name = "own_login"

                    def login(self, session):
                        form = session.get("{site.url}/login").text
                        token = re.search(r'name="csrf_token" value="([^"]+)"', form).group(1)
                        answer = session.post("{site.url}/login", data={{
                            "csrf_token": token,
                            "username": os.environ["PRACTICE_USERNAME"],
                            "password": os.environ["PRACTICE_PASSWORD"],
                        }})
                        if "/login" in answer.url:
                            raise LoginFailed("the site refused the demo account")

                    def is_logged_out(self, response):
                        return "/login" in response.url

                    def start_requests(self):
                        for n in range(1, 41):
                            yield Request("{site.url}/members/page/" + str(n))

                    def parse(self, response):
                        yield {{"secret": response.css("span.secret::text").get()}}
                """
            },
        )
        run_crawl(config)
        secrets = sorted(json.loads(line)["secret"] for line in config.output_path("own_login").read_text().splitlines())
        assert secrets == sorted(f"member-secret-{n}" for n in range(1, 41))
        assert site.counters.logins == 1 + site.counters.revocations


def test_cookie_domain_shares_a_subdomain_cookie_with_its_siblings() -> None:
    from requests.cookies import get_cookie_header

    from crawler.auth.cookies import CrawlCookieJar

    shared = CrawlCookieJar("example.com")
    shared.set("sessionid", "s1", domain="login.example.com", path="/")
    alone = CrawlCookieJar()
    alone.set("sessionid", "s1", domain="login.example.com", path="/")
    for_www = requests.Request("GET", "https://www.example.com/members").prepare()
    assert get_cookie_header(shared, for_www) == "sessionid=s1"
    assert get_cookie_header(alone, for_www) is None
    elsewhere = requests.Request("GET", "https://example.org/").prepare()
    assert get_cookie_header(shared, elsewhere) is None


def test_the_shared_jar_can_be_copied_while_other_threads_fill_it() -> None:
    from crawler.auth.cookies import CrawlCookieJar

    jar = CrawlCookieJar()
    errors: list[BaseException] = []

    def fill(prefix: str) -> None:
        for n in range(1500):
            jar.set(f"{prefix}{n}", "v", domain="example.com", path="/")

    def copy() -> None:
        try:
            for _ in range(60):
                jar.copy()
        except RuntimeError as error:  # "dictionary changed size during iteration"
            errors.append(error)

    threads = [threading.Thread(target=fill, args=(p,)) for p in "abc"] + [threading.Thread(target=copy)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(jar) == 4500
