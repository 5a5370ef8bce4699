"""Crawling through proxies, measured at the servers: a real forwarding proxy (proxy.py, run by
``tests/servers/forward_proxy.py``, which records what each client sent it) and origins that
record what reached them (``tests/recorder.py``, httpbin).

Plain http goes through the proxy in absolute form, https through ``CONNECT`` tunnels with TLS
verified end to end; connections through a proxy are reused; a list of proxies rotates per host or
per request; proxy credentials come from the environment and go to the proxy only (tokens and
cookies to their origins only: inside the tunnel, where the proxy cannot see them); ``NO_PROXY``
and ``http.trust_env``; a failing proxy costs no retry attempt; ``Request(proxy=...)`` survives
a stop and a resume.
"""

from __future__ import annotations

import base64
import io
import json
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from rich.console import Console

from crawler.exceptions import ConfigError
from crawler.practice import PracticeSite
from crawler.progress import print_summary
from crawler.runner import run_crawl
from helpers import Crawled, deadline
from recorder import Recorder, loopback_only_lookups, recorders, toml_tables
from serverproc import serve

MEMBERS_SPIDER = (Path(__file__).resolve().parent.parent / "spiders" / "members.py").read_text()
SECRET = "scoped-secret"  # the spider's HeaderAuth token, as X-Scoped-Token
USER, PASSWORD = "crawler-user", "proxy-pass"
CRAWL_DEADLINE = 20.0

VIA_SPIDER = """
from crawler import HeaderAuth, Request, Spider


class Via(Spider):
    '''Fetches ``urls``: each a URL, or [URL, proxy] for a Request(proxy=...) of its own.'''

    name = "via"
    urls = []
    token_hosts = []
    headers = []  # [name, value] pairs, the requests' own

    def token_auth(self):
        if not self.token_hosts:
            return None
        return HeaderAuth(self.token_hosts, lambda method, url: {"X-Scoped-Token": "scoped-secret"})

    def start_requests(self):
        for entry in self.urls:
            url, proxy = (entry, None) if isinstance(entry, str) else entry
            yield Request(url, callback=self.parse, proxy=proxy, headers=dict(self.headers) or None)

    def parse(self, response):
        item = {"url": response.url, "status": response.status}
        if "json" in response.headers.get("Content-Type", ""):
            item["json"] = response.json()
        yield item
"""

DEFAULTS = {
    "robots": {"obey": False},
    "retry": {"attempts": 1},
    "retry.backoff": {"initial": 0.05, "max": 0.2},
    "crawl": {"workers": 2, "shutdown_grace": 1},
    "http.timeout": {"connect": 2, "read": 5, "total": 10},
}


@dataclass(frozen=True)
class RunningProxy:
    """A proxy.py process, and what its clients sent it (see ``forward_proxy.py``)."""

    url: str
    record: Path

    @property
    def key(self) -> str:
        return self.url.removeprefix("http://")

    def received(self) -> list[dict]:
        text = self.record.read_text(encoding="utf-8") if self.record.exists() else ""
        return [json.loads(line) for line in text.splitlines()]

    def targets(self) -> list[str]:
        return [hit["target"] for hit in self.received()]

    def clear(self) -> None:
        self.record.write_text("", encoding="utf-8")


@pytest.fixture(scope="module")
def proxies(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningProxy, RunningProxy, RunningProxy]]:
    """Two open proxies and one that wants ``USER``/``PASSWORD``: started once for the module
    (proxy.py takes a while to start); each test clears their records."""
    folder = tmp_path_factory.mktemp("proxies")
    records = [folder / f"{name}.jsonl" for name in ("first", "second", "locked")]
    with (
        serve("forward_proxy.py", "--record", str(records[0])) as first,
        serve("forward_proxy.py", "--record", str(records[1])) as second,
        serve("forward_proxy.py", "--record", str(records[2]), "--basic-auth", f"{USER}:{PASSWORD}") as locked,
    ):
        yield RunningProxy(first, records[0]), RunningProxy(second, records[1]), RunningProxy(locked, records[2])


@pytest.fixture
def proxy(proxies) -> RunningProxy:
    for each in proxies:
        each.clear()
    return proxies[0]


@pytest.fixture
def other(proxies, proxy) -> RunningProxy:
    return proxies[1]


@pytest.fixture
def locked(proxies, proxy) -> RunningProxy:
    return proxies[2]


@pytest.fixture(scope="module")
def httpbin() -> Iterator[str]:
    with serve("httpbin_server.py", host="127.0.0.2") as url:
        yield url


@pytest.fixture(autouse=True)
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """No name leaves the machine; and no proxy variable of the shell the tests run in counts."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
                 "CRAWLER_PROXY_USERNAME", "CRAWLER_PROXY_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    return loopback_only_lookups(monkeypatch)


@pytest.fixture
def crawl(spider_config) -> Callable[..., Crawled]:
    """Run the Via spider over ``urls``; ``extra`` tables are merged over ``DEFAULTS``. Each crawl
    starts over (``fresh``) unless it is to resume the test's previous one."""

    def crawl_with(urls: list[object], *, extra: dict[str, dict[str, object]] | None = None, entry: str = "",
                   fresh: bool = True, **args: object) -> Crawled:
        tables = {name: dict(table) for name, table in DEFAULTS.items()}
        for name, table in (extra or {}).items():
            tables.setdefault(name, {}).update(table)
        config = spider_config("via", VIA_SPIDER, toml_tables(tables), entry=entry, urls=urls, **args)
        with deadline(CRAWL_DEADLINE):
            report = run_crawl(config, fresh=fresh)
        assert not report.interrupted, f"the crawl was still running after {CRAWL_DEADLINE:g}s"
        path = config.output_path("via")
        lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
        return Crawled(report, [json.loads(line) for line in lines], config)

    return crawl_with


def dead_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` nothing listens on (connections to it are refused)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def summary_of(crawled: Crawled) -> str:
    console = Console(file=io.StringIO(), width=200)
    print_summary(console, crawled.report, {})
    return console.file.getvalue()  # type: ignore[attr-defined]


# -- through the proxy, plain and tunnelled ----------------------------------------------------------


def test_plain_http_goes_through_the_proxy_over_few_connections(crawl, proxy) -> None:
    with Recorder("127.0.0.2") as origin:
        urls = [origin.url_for(f"/page/{n}") for n in range(30)]
        crawled = crawl(urls, extra={"http": {"proxy": proxy.url}})
    assert crawled.urls() == set(urls)
    # The proxy got every request, in absolute form, and forwarded it.
    assert sorted(proxy.targets()) == sorted(f"{origin.netloc}/page/{n}" for n in range(30))
    assert origin.requests[0].headers["Via"].startswith("1.1 proxy.py")
    # Two workers, one connection each to the proxy, reused for all 30.
    assert crawled.stats["connections_opened"] <= 2
    assert crawled.stats["proxied_requests"] == crawled.stats["http_requests"] == 30
    assert len({hit.peer for hit in origin.requests}) <= 2  # the proxy's own connections onward
    assert re.search(r"Proxies: 30 requests through a proxy; errors: none; 0 waits", summary_of(crawled))


def test_https_goes_through_a_connect_tunnel_verified_end_to_end(crawl, proxy) -> None:
    with Recorder("127.0.0.3", tls=True) as origin:
        urls = [origin.url_for(f"/secure/{n}") for n in range(20)]
        crawled = crawl(urls, extra={"http": {"proxy": proxy.url, "ca_bundle": str(origin.ca_pem)}})
        assert crawled.urls() == set(urls)
        assert all(hit.tls for hit in origin.requests) and len(origin.requests) == 20
        # The proxy saw a CONNECT per connection, and nothing of what went through the tunnels.
        connects = proxy.received()
        assert {hit["method"] for hit in connects} == {"CONNECT"}
        assert {hit["target"] for hit in connects} == {origin.netloc}
        assert len(connects) == crawled.stats["connections_opened"] <= 2
        # The origin's certificate is checked by the crawl, not vouched for by the proxy: without
        # the CA that signed it, nothing is fetched.
        origin.clear()
        untrusting = crawl([origin.url_for("/secure/again")], extra={"http": {"proxy": proxy.url}})
        origin.wait_for_handshakes()
    assert untrusting.items == [] and untrusting.report.failed_kinds == {"TLSError": 1}
    assert origin.requests == [] and origin.handshake_failures == 1


# -- rotation -----------------------------------------------------------------------------------------

HOSTS = [f"127.0.0.{n}" for n in range(2, 8)]


def test_per_host_rotation_keeps_each_host_on_one_proxy(crawl, proxy, other) -> None:
    with recorders(*HOSTS) as origins:
        urls = [origin.url_for(f"/p/{n}") for origin in origins for n in range(4)]
        crawled = crawl(urls, extra={"http": {"proxy": [proxy.url, other.url]}, "crawl": {"workers": 4}})
    assert crawled.urls() == set(urls)
    seen_by = {origin.netloc: {p.key for p in (proxy, other) if any(t.startswith(origin.netloc) for t in p.targets())}
               for origin in origins}
    assert all(len(keys) == 1 for keys in seen_by.values()), seen_by  # one exit per host
    assert set().union(*seen_by.values()) == {proxy.key, other.key}  # and the hosts spread over both
    assert len(proxy.targets()) + len(other.targets()) == len(urls)


def test_per_request_rotation_takes_the_proxies_in_turn(crawl, proxy, other) -> None:
    with Recorder("127.0.0.2") as origin:
        urls = [origin.url_for(f"/p/{n}") for n in range(10)]
        crawled = crawl(urls, extra={
            "http": {"proxy": [proxy.url, other.url], "proxy_rotation": "per_request"}, "crawl": {"workers": 1},
        })
    assert crawled.urls() == set(urls)
    assert len(proxy.targets()) == len(other.targets()) == 5


# -- credentials: the proxy's to the proxy, the origin's to the origin --------------------------------


def test_proxy_credentials_come_from_the_environment_and_go_to_their_proxy_only(
    crawl, locked, other, monkeypatch
) -> None:
    monkeypatch.setenv("CRAWLER_PROXY_USERNAME", USER)
    monkeypatch.setenv("CRAWLER_PROXY_PASSWORD", PASSWORD)
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    with Recorder("127.0.0.3", tls=True) as origin:
        origin.route("/login", 200, {"Set-Cookie": "session=cookie-secret; Path=/"}, "<p>in</p>")
        urls = [origin.url_for("/login"), origin.url_for("/account"), origin.url_for("/orders"),
                [origin.url_for("/elsewhere"), other.url]]  # a request's own proxy, not the config's
        crawled = crawl(urls, extra={"http": {"proxy": locked.url, "ca_bundle": str(origin.ca_pem)},
                                     "crawl": {"workers": 1}}, token_hosts=[origin.netloc],
                        headers=[["Proxy-Authorization", "Basic spider-own"]])  # never sent: not the config's
        assert len(crawled.items) == 4
        # The origin got its token and its cookie, and never the proxy's credentials.
        assert all(hit.headers["X-Scoped-Token"] == SECRET for hit in origin.requests)
        assert origin.received("/orders")[0].headers["Cookie"] == "session=cookie-secret"
        assert not any("Proxy-Authorization" in hit.headers or hit.headers.carries(PASSWORD) for hit in origin.requests)
        assert crawled.stats["header_overrides"] == 1
    # The configured proxy got its credentials with each CONNECT, and nothing of the origin's.
    [tunnel] = locked.received()
    assert tunnel["method"] == "CONNECT" and tunnel["headers"]["proxy-authorization"] == expected
    assert not {"authorization", "cookie", "x-scoped-token"} & set(tunnel["headers"])
    # Another proxy, named by a request, got none of them.
    [elsewhere] = other.received()
    assert elsewhere["method"] == "CONNECT" and "proxy-authorization" not in elsewhere["headers"]
    assert not any(SECRET in value or "cookie-secret" in value for value in elsewhere["headers"].values())


def test_plain_http_through_an_authenticating_proxy(crawl, locked, httpbin, monkeypatch) -> None:
    """Over plain http the proxy sees the whole request: it takes its Proxy-Authorization off
    before forwarding (proxy.py does so for the first request of a connection, the only one
    here: werkzeug's httpbin closes every connection after one response)."""
    monkeypatch.setenv("CRAWLER_PROXY_USERNAME", USER)
    monkeypatch.setenv("CRAWLER_PROXY_PASSWORD", PASSWORD)
    crawled = crawl([f"{httpbin}/headers?show_env=1"], extra={"http": {"proxy": locked.url}})
    [item] = crawled.items
    echoed = {name.lower(): value for name, value in item["json"]["headers"].items()}
    assert "proxy-authorization" not in echoed and echoed["via"].startswith("1.1 proxy.py")
    [forwarded] = locked.received()
    assert forwarded["target"] == f"{httpbin.removeprefix('http://')}/headers?show_env=1" and forwarded["headers"]["proxy-authorization"]


@pytest.mark.parametrize("tls", [False, True], ids=["plain 407", "CONNECT 407"])
def test_a_proxy_that_asks_for_credentials_fails_the_request_as_proxy_error(crawl, locked, tls) -> None:
    with Recorder("127.0.0.3", tls=tls) as origin:
        extra = {"http": {"proxy": locked.url, "max_proxy_failures": 2, **({"ca_bundle": str(origin.ca_pem)} if tls else {})}}
        crawled = crawl([origin.url_for("/asked")], extra=extra)
        assert origin.requests == []
    # Tried twice, the second after a backoff, without spending its one attempt (retry.attempts).
    assert crawled.report.failed_kinds == {"ProxyError": 1}
    assert crawled.stats[f"proxy_errors:{locked.key}"] == 2
    assert crawled.stats["proxy_waits"] == 1 and crawled.stats.get("retries", 0) == 0


def test_the_login_and_the_token_grant_go_through_the_proxy_too(write_config, proxy, monkeypatch) -> None:
    """Requests sent by requests' own Session (the login form) and by the token grant take the
    crawl's proxy like every page: a crawl behind a proxy can log in."""
    for name, value in {"PRACTICE_USERNAME": "demo", "PRACTICE_PASSWORD": "demo-password",
                        "PRACTICE_CLIENT_ID": "demo-client", "PRACTICE_CLIENT_SECRET": "demo-secret"}.items():
        monkeypatch.setenv(name, value)
    with PracticeSite(products=10, members=5, api_items=4) as site:
        config = write_config(
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
            {toml_tables({**DEFAULTS, "http": {"proxy": proxy.url}})}
            [checkpoint]
            path = "checkpoint.db"
            """,
            spiders={"members": MEMBERS_SPIDER},
        )
        with deadline(CRAWL_DEADLINE):
            report = run_crawl(config)
    netloc = site.url.removeprefix("http://")
    assert report.results[0].counts.done == 5 + 4 and report.failed_kinds == {}
    sent = {(hit["method"], hit["target"]) for hit in proxy.received()}
    assert {("GET", f"{netloc}/login"), ("POST", f"{netloc}/login"), ("POST", f"{netloc}/api/token")} <= sent
    assert ("GET", f"{netloc}/members/page/5") in sent and ("GET", f"{netloc}/api/items/4") in sent


def test_proxy_credentials_are_refused_in_the_config_and_half_set_in_the_environment(
    crawl, write_config, locked, monkeypatch
) -> None:
    with pytest.raises(ConfigError) as written:
        write_config(f'http = {{ proxy = "http://{USER}:{PASSWORD}@{locked.key}" }}\n[[spiders]]\nspider = "x"\n')
    [line] = written.value.problems
    assert "http.proxy[0]: holds credentials" in line and "http.proxy_password_env" in line and PASSWORD not in line
    monkeypatch.setenv("CRAWLER_PROXY_USERNAME", USER)
    with pytest.raises(ConfigError) as half:
        crawl(["http://127.0.0.2:9/"], extra={"http": {"proxy": locked.url}})
    assert half.value.problems == [
        "http.proxy_password_env: environment variable CRAWLER_PROXY_PASSWORD is not set, though "
        "CRAWLER_PROXY_USERNAME is (set both, or neither)"
    ]


# -- NO_PROXY, and the environment --------------------------------------------------------------------


def test_trust_env_takes_the_proxies_and_no_proxy_decides_per_redirect_hop(crawl, proxy, monkeypatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.3")
    with recorders("127.0.0.2", "127.0.0.3") as (proxied, direct):
        proxied.redirect("/away", direct.url_for("/landing"))  # another origin: a request of its own
        proxied.redirect("/near", "/here")  # the same origin: followed inline
        urls = [proxied.url_for("/away"), proxied.url_for("/near"), direct.url_for("/plain")]
        # The default: the environment is not the crawl's business.
        ignored = crawl(urls, extra={"http": {"max_redirects": 3}})
        assert ignored.stats.get("proxied_requests", 0) == 0 and proxy.received() == []
        proxied.clear()
        direct.clear()
        trusted = crawl(urls, extra={"http": {"trust_env": True, "max_redirects": 3}})
        assert trusted.urls() == {direct.url_for("/landing"), proxied.url_for("/here"), direct.url_for("/plain")}
        assert direct.received("/landing") and "Via" not in direct.received("/landing")[0].headers
    # Through the proxy: the hops to 127.0.0.2; never a hop to 127.0.0.3, which NO_PROXY lists.
    assert sorted(proxy.targets()) == sorted(f"{proxied.netloc}{path}" for path in ("/away", "/near", "/here"))


def test_trust_env_takes_the_ca_bundle_from_the_environment(crawl, monkeypatch) -> None:
    with Recorder("127.0.0.3", tls=True) as origin:
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(origin.ca_pem))
        crawled = crawl([origin.url_for("/secure")], extra={"http": {"trust_env": True}})
        assert [item["status"] for item in crawled.items] == [200]
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/no/such/bundle.pem")
    with pytest.raises(ConfigError) as missing:
        crawl(["https://127.0.0.3:9/"], extra={"http": {"trust_env": True}})
    assert missing.value.problems == ["REQUESTS_CA_BUNDLE (http.trust_env): no such file: /no/such/bundle.pem"]


# -- a proxy that fails -------------------------------------------------------------------------------


def test_a_dead_proxy_in_the_list_is_counted_and_spends_no_attempt(crawl, proxy) -> None:
    dead = f"127.0.0.1:{dead_port()}"
    with Recorder("127.0.0.2") as origin:
        urls = [origin.url_for(f"/p/{n}") for n in range(10)]
        crawled = crawl(urls, extra={
            "http": {"proxy": [f"http://{dead}", proxy.url], "proxy_rotation": "per_request"},
        })
    # One attempt each (retry.attempts = 1), and every one done: the dead proxy cost none.
    assert crawled.urls() == set(urls) and crawled.report.failed_kinds == {}
    errors = crawled.stats[f"proxy_errors:{dead}"]
    assert errors >= 1 and crawled.stats.get("retries", 0) == 0
    assert len(proxy.targets()) == 10
    assert f"errors: {dead} {errors};" in summary_of(crawled)


def test_a_request_whose_only_proxy_is_dead_fails_as_proxy_error(crawl) -> None:
    dead = f"127.0.0.1:{dead_port()}"
    crawled = crawl(["http://127.0.0.2:9/never"], extra={"http": {"proxy": f"http://{dead}", "max_proxy_failures": 3}})
    # Tried three times, after a backoff each, through the same proxy: a ProxyError, no retries.
    assert crawled.report.failed_kinds == {"ProxyError": 1}
    assert crawled.stats[f"proxy_errors:{dead}"] == 3 and crawled.stats["proxy_waits"] == 2
    assert crawled.stats.get("retries", 0) == 0


def test_a_proxy_that_cannot_reach_one_origin_is_not_set_aside_for_the_others(crawl, proxy) -> None:
    """A 502 to CONNECT says the origin is out of the proxy's reach: the request tries again (no
    attempt spent) and fails as ProxyError, while the proxy goes on carrying the other hosts'."""
    gone = f"https://127.0.0.3:{dead_port('127.0.0.3')}/gone"
    with Recorder("127.0.0.2", tls=True) as live:
        urls = [live.url_for(f"/p/{n}") for n in range(6)]
        crawled = crawl([gone, *urls], extra={
            "http": {"proxy": proxy.url, "max_proxy_failures": 3, "ca_bundle": str(live.ca_pem)},
        })
    assert crawled.urls() == set(urls) and crawled.report.failed_kinds == {"ProxyError": 1}
    assert crawled.stats[f"proxy_errors:{proxy.key}"] == 3
    assert crawled.stats["proxy_waits"] == 2  # the unreachable one's: nothing else waited for the proxy


# -- a request's own proxy, across a stop -------------------------------------------------------------


def test_a_request_proxy_survives_a_stop_and_resume(crawl, proxy, other) -> None:
    with Recorder("127.0.0.2") as origin:
        own = [[origin.url_for(f"/own/{n}"), other.url] for n in range(4)]
        direct = [[origin.url_for(f"/direct/{n}"), "direct"] for n in range(4)]
        urls = [entry for pair in zip(own, direct) for entry in pair]
        config = {"http": {"proxy": proxy.url}, "crawl": {"workers": 1}}
        first = crawl(urls, extra=config, entry="max_pages = 3")
        assert len(first.items) == 3
        rest = crawl(urls, extra=config, fresh=False)  # the queued requests, as the checkpoint kept them
        assert rest.report.this_run.done == 5 and rest.urls() == {url for url, _ in urls}
        assert all(origin.count(urlsplit(url).path) == 1 for url, _ in urls)  # none fetched twice
    # Each went the way its request said, before the stop and after it; none by the config's proxy.
    assert sorted(other.targets()) == sorted(f"{origin.netloc}/own/{n}" for n in range(4))
    assert proxy.received() == []
    assert all("Via" not in hit.headers for hit in origin.requests if hit.path.startswith("/direct/"))
