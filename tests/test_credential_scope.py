"""Where credentials go, measured at the servers that received them.

Every decision about a request (the token's scope above all) is taken on one normalised URL
(``crawler.urls.normalize_url``, the WHATWG way), and that same URL is what is sent, so the host
that gets a token is the host the scope was decided for. Here real crawls run against recording
servers (``tests/recorder.py``) on several loopback addresses sharing one port number, and the
tests read from the servers' side which host received which request, with which headers.

Also: a token's scope includes the scheme (https never downgrades to http), the request's own
headers stay with their origin on redirects (httpbin's real ``/redirect-to``), credential-like
request headers are reported, files at rest are owner-only, and robots.txt is fetched publicly.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest
import urllib3

from crawler.practice import PracticeSite
from crawler.runner import run_crawl
from helpers import Crawled, deadline
from recorder import (
    Recorder,
    addresses_of,
    has_ipv6_loopback,
    loopback_only_lookups,
    recorders,
    toml_tables,
)
from serverproc import serve

SECRET = "scoped-secret"  # what the spider's HeaderAuth sends, as X-Scoped-Token
OWN = "own-secret"  # the request's own X-Api-Token header
CRAWL_DEADLINE = 20.0  # seconds; every crawl here takes well under one
IPV6 = has_ipv6_loopback()

SCOPE_SPIDER = """
import json

from crawler import HeaderAuth, Request, Spider


class Scope(Spider):
    '''Fetches ``urls`` (and those in the JSON file ``urls_file``) with the request's own
    ``headers``; a HeaderAuth sends X-Scoped-Token to ``token_hosts``; records every page.'''

    name = "scope"
    urls = []
    urls_file = ""
    headers = []  # [name, value] pairs
    forward_headers = False
    token_hosts = []
    follow_links = False

    def token_auth(self):
        if not self.token_hosts:
            return None
        return HeaderAuth(self.token_hosts, lambda method, url: {"X-Scoped-Token": "scoped-secret"})

    def start_requests(self):
        urls = list(self.urls)
        if self.urls_file:
            with open(self.urls_file, encoding="utf-8") as listed:
                urls += json.load(listed)
        # Passed only when asked, so this spider also runs on a crawler without the argument.
        options = {"forward_headers": True} if self.forward_headers else {}
        for url in urls:
            yield Request(url, callback=self.parse, headers=dict(self.headers) or None, **options)

    def parse(self, response):
        item = {"url": response.url, "status": response.status}
        if "json" in response.headers.get("Content-Type", ""):
            item["json"] = response.json()
        yield item
        if self.follow_links:
            for href in response.css("a::attr(href)").getall():
                yield response.follow(href, self.parse)
"""

# Defaults for every crawl here: robots.txt is not the subject (except where a test says so),
# one attempt per request, few workers.
DEFAULTS = {
    "robots": {"obey": False},
    "retry": {"attempts": 1},
    "crawl": {"workers": 4, "shutdown_grace": 1},
    "http.timeout": {"connect": 2, "read": 5, "total": 10},
}


def run(config, spider: str) -> Crawled:
    with deadline(CRAWL_DEADLINE):
        report = run_crawl(config)
    assert not report.interrupted, f"the crawl was still running after {CRAWL_DEADLINE:g}s"
    path = config.output_path(spider)
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return Crawled(report, [json.loads(line) for line in lines])


def merged(extra: dict[str, dict[str, object]] | None) -> dict[str, dict[str, object]]:
    tables = {name: dict(table) for name, table in DEFAULTS.items()}
    for name, table in (extra or {}).items():
        tables.setdefault(name, {}).update(table)
    return tables


@pytest.fixture(autouse=True)
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names other than loopback ones are refused, never sent to a DNS server; and recorded."""
    return loopback_only_lookups(monkeypatch)


@pytest.fixture
def crawl(spider_config) -> Callable[..., Crawled]:
    """Run a spider (default: ``SCOPE_SPIDER``) with ``args``; ``extra`` TOML tables are merged
    over ``DEFAULTS``; ``entry`` is more of the ``[[spiders]]`` table."""

    def crawl_with(
        *, extra: dict[str, dict[str, object]] | None = None, entry: str = "",
        spider: str = "scope", source: str = SCOPE_SPIDER, **args: object,
    ) -> Crawled:
        config = spider_config(spider, source, toml_tables(merged(extra)), entry=entry, **args)
        return run(config, spider)

    return crawl_with


# -- one normalised URL: the host decided is the host that receives ------------------------------


@dataclass(frozen=True)
class Case:
    """A tricky URL: ``{P}`` is the recorders' port, ``{m}`` the case's marker (in its path).
    ``expected`` is its normal form (None: MalformedURL). ``modes`` are the ways it is tried."""

    name: str
    url: str
    expected: str | None
    modes: frozenset[str] = frozenset({"start", "link", "redirect"})
    ipv6: bool = False
    number: int = field(default=0, compare=False)

    @property
    def marker(self) -> str:
        return f"c{self.number:02d}"

    def fill(self, template: str, port: int) -> str:
        return template.replace("{P}", str(port)).replace("{m}", self.marker)

    def url_for(self, port: int) -> str:
        return self.fill(self.url, port)

    def expected_for(self, port: int) -> str | None:
        return None if self.expected is None else self.fill(self.expected, port)


NOT_IN_HEADERS = frozenset({"start", "link"})  # a raw CR, LF or NUL cannot be sent in a Location
START_ONLY = frozenset({"start"})  # NUL and DEL do not survive an HTML parser as written

_CASES = [
    # Parsers disagree: refused. urllib3 reads 127.0.0.3 as the host, urlsplit 127.0.0.2.
    Case("backslash before @", r"http://127.0.0.3:{P}\@127.0.0.2:{P}/{m}", None),
    Case("backslash in the path", r"http://127.0.0.2:{P}/{m}\x", None),
    Case("userinfo", "http://user@127.0.0.2:{P}/{m}", None),
    Case("userinfo with password", "http://user:pw@127.0.0.3:{P}/{m}", None),
    Case("encoded @ in userinfo", "http://a%40b@127.0.0.2:{P}/{m}", None),
    Case("tab in the host", "http://127.0.0.\t3:{P}/{m}", None),
    Case("LF in the path", "http://127.0.0.2:{P}/{m}\nX-Injected: 1", None, NOT_IN_HEADERS),
    Case("CR LF in the host", "http://127.0.0.3\r\n:{P}/{m}", None, NOT_IN_HEADERS),
    Case("NUL in the path", "http://127.0.0.2:{P}/{m}\x00x", None, START_ONLY),
    Case("DEL in the path", "http://127.0.0.2:{P}/{m}\x7fx", None, START_ONLY),
    Case("port out of range", "http://127.0.0.2:99999/{m}", None),
    Case("space in the host", "http://bad host:{P}/{m}", None),
    # Normalised: the host is the WHATWG host, in one spelling.
    Case("surrounding whitespace", "  http://127.0.0.2:{P}/{m}\n ", "http://127.0.0.2:{P}/{m}", NOT_IN_HEADERS),
    Case("full-width dots", "http://127\u30020\u30020\u30022:{P}/{m}", "http://127.0.0.2:{P}/{m}"),
    Case("full-width letters", "http://\uff2c\uff2f\uff23\uff21\uff2c\uff28\uff2f\uff33\uff34:{P}/{m}",
         "http://localhost:{P}/{m}"),
    Case("trailing dot, address", "http://127.0.0.2.:{P}/{m}", "http://127.0.0.2:{P}/{m}"),
    Case("trailing dot, name", "http://localhost.:{P}/{m}", "http://localhost:{P}/{m}"),
    Case("uppercase scheme and host", "HTTP://LOCALHOST:{P}/{m}-UPPER", "http://localhost:{P}/{m}-UPPER"),
    Case("leading zero in the port", "http://127.0.0.2:0{P}/{m}", "http://127.0.0.2:{P}/{m}"),
    Case("hex IPv4", "http://0x7f.0.0.2:{P}/{m}", "http://127.0.0.2:{P}/{m}"),
    Case("hex integer IPv4", "http://0x7f000002:{P}/{m}", "http://127.0.0.2:{P}/{m}"),
    Case("short IPv4", "http://127.1:{P}/{m}", "http://127.0.0.1:{P}/{m}"),
    Case("integer IPv4", "http://2130706435:{P}/{m}", "http://127.0.0.3:{P}/{m}"),
    Case("octal IPv4", "http://0177.0.0.3:{P}/{m}", "http://127.0.0.3:{P}/{m}"),
    Case("percent-encoded host", "http://127.0.0.%32:{P}/{m}", "http://127.0.0.2:{P}/{m}"),
    Case("dot segments", "http://127.0.0.2:{P}/x/../{m}", "http://127.0.0.2:{P}/{m}"),
    Case("backslash in the query", "http://127.0.0.2:{P}/{m}?q=a\\b", "http://127.0.0.2:{P}/{m}?q=a\\b"),
    Case("IPv6 literal", "http://[::1]:{P}/{m}", "http://[::1]:{P}/{m}", ipv6=True),
    Case("IPv6, long form", "http://[0:0:0:0:0:0:0:1]:{P}/{m}", "http://[::1]:{P}/{m}", ipv6=True),
]
CASES = [Case(c.name, c.url, c.expected, c.modes, c.ipv6, number) for number, c in enumerate(_CASES, 1)]

UNIT_PORT = 8123  # the unit table needs no server


def host_of(url: str) -> str:
    return urlsplit(url).hostname or ""


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_normalize_url_gives_one_host_every_parser_agrees_on(case: Case) -> None:
    from crawler.urls import MalformedURL, normalize_url

    url, expected = case.url_for(UNIT_PORT), case.expected_for(UNIT_PORT)
    if expected is None:
        with pytest.raises(MalformedURL) as refused:
            normalize_url(url)
        assert isinstance(refused.value, ValueError)
        assert isinstance(refused.value.reason, str) and refused.value.reason
        return
    result = normalize_url(url)
    assert result == expected
    assert normalize_url(result) == result  # the normal form is a fixed point
    parsed = urllib3.util.parse_url(result)
    split = urlsplit(result)
    assert (parsed.host or "").strip("[]") == split.hostname == host_of(expected)
    assert parsed.port == split.port == urlsplit(expected).port
    assert parsed.scheme == split.scheme == "http"


JOINED = [
    ("/a/../b", "http://EXAMPLE.com:080/x", "http://example.com/b"),
    ("//127\u30020\u30020\u30022:0080/x", "http://h/", "http://127.0.0.2/x"),
    ("HTTPS://Example.COM:443/p", None, "https://example.com/p"),
    ("?q=1", "http://h/p", "http://h/p?q=1"),
    ("  /spaced  ", "http://h/p", "http://h/spaced"),
]
JOINED_MALFORMED = [
    ("\\\\127.0.0.3/x", "http://127.0.0.2/"),  # WHATWG: //127.0.0.3/x; urljoin: a path on 127.0.0.2
    ("//user@h/", "http://a/"),
    ("/a\tb", "http://h/"),
    ("http://h:65536/", None),
    ("http:///", None),
]


@pytest.mark.parametrize(("url", "base", "expected"), JOINED)
def test_normalize_url_joins_to_a_base(url: str, base: str | None, expected: str) -> None:
    from crawler.urls import normalize_url

    assert normalize_url(url, base) == expected


@pytest.mark.parametrize(("url", "base"), JOINED_MALFORMED)
def test_normalize_url_refuses_what_parsers_read_differently(url: str, base: str | None) -> None:
    from crawler.urls import MalformedURL, normalize_url

    with pytest.raises(MalformedURL):
        normalize_url(url, base)


@dataclass
class Group:
    """Recorders on 127.0.0.2 (the token's host), 127.0.0.3, 127.0.0.1 and ::1, one port."""

    port: int
    token_host: Recorder
    other: Recorder
    local: Recorder
    v6: Recorder | None

    @property
    def all(self) -> list[Recorder]:
        return [r for r in (self.token_host, self.other, self.local, self.v6) if r is not None]


@pytest.fixture
def group() -> Iterator[Group]:
    hosts = ["127.0.0.2", "127.0.0.3", "127.0.0.1"] + (["::1"] if IPV6 else [])
    with recorders(*hosts) as made:
        yield Group(made[0].port, made[0], made[1], made[2], made[3] if IPV6 else None)


def cases_for(mode: str) -> list[Case]:
    return [case for case in CASES if mode in case.modes and (IPV6 or not case.ipv6)]


def wrong_turns(cases: list[Case], group: Group, lookups: list[str]) -> list[str]:
    """Every way the servers' view differs from the decisions on the normalised URLs."""
    problems = []
    port = group.port
    for case in cases:
        hits = [(recorder, hit) for recorder in group.all for hit in recorder.containing(case.marker)]
        expected = case.expected_for(port)
        if expected is None:
            problems += [
                f"{case.name}: malformed, yet {recorder.netloc} received {hit.method} {hit.target!r}"
                + (" WITH THE TOKEN" if hit.headers.carries(SECRET) else "")
                for recorder, hit in hits
            ]
            continue
        parts = urlsplit(expected)
        reachable = addresses_of(parts.hostname or "", port)
        right = [(r, hit) for r, hit in hits if hit.local[0] in reachable]
        problems += [
            f"{case.name}: decided host {parts.hostname}, but {r.netloc} received {hit.target!r}"
            + (" WITH THE TOKEN" if hit.headers.carries(SECRET) else "")
            for r, hit in hits if (r, hit) not in right
        ]
        if len(right) != 1:
            problems.append(f"{case.name}: {parts.hostname} received {len(right)} requests for it, not 1")
        in_scope = parts.hostname == "127.0.0.2" and parts.port == port
        for r, hit in right:
            if hit.path != parts.path:
                problems.append(f"{case.name}: sent path {hit.path!r}, not the normal form's {parts.path!r}")
            if hit.headers.get("Host") != parts.netloc:
                problems.append(f"{case.name}: sent Host {hit.headers.get('Host')!r}, not {parts.netloc!r}")
            if hit.headers.carries(SECRET) != in_scope:
                problems.append(
                    f"{case.name}: token {'sent to' if not in_scope else 'missing at'} {parts.netloc}, "
                    f"which is {'out of' if not in_scope else 'in'} scope"
                )
    # Whatever the case, the token goes to 127.0.0.2:P only.
    problems += [
        f"the token reached {recorder.netloc}: {hit.method} {hit.target!r}"
        for recorder in group.all if recorder is not group.token_host
        for hit in recorder.requests if hit.headers.carries(SECRET)
    ]
    problems += [f"a name was looked up: {name!r}" for name in lookups]
    return problems


def test_start_requests_go_to_the_host_their_normal_form_names(crawl, group: Group, lookups, tmp_path) -> None:
    cases = cases_for("start")
    listed = tmp_path / "urls.json"
    listed.write_text(json.dumps([case.url_for(group.port) for case in cases]), encoding="utf-8")
    crawled = crawl(urls_file=str(listed), token_hosts=[f"127.0.0.2:{group.port}"])
    problems = wrong_turns(cases, group, lookups)
    malformed = sum(case.expected is None for case in cases)
    if crawled.stats.get("malformed:url", 0) != malformed:
        problems.append(f"malformed:url is {crawled.stats.get('malformed:url', 0)}, not {malformed}")
    assert problems == [], "\n".join(problems)


def test_links_go_to_the_host_their_normal_form_names(crawl, group: Group, lookups) -> None:
    cases = cases_for("link")
    group.token_host.page("/links", [case.url_for(group.port) for case in cases])
    crawled = crawl(urls=[group.token_host.url_for("/links")], token_hosts=[f"127.0.0.2:{group.port}"],
                    follow_links=True)
    problems = wrong_turns(cases, group, lookups)
    malformed = sum(case.expected is None for case in cases)
    if crawled.stats.get("malformed:url", 0) != malformed:
        problems.append(f"malformed:url is {crawled.stats.get('malformed:url', 0)}, not {malformed}")
    assert problems == [], "\n".join(problems)


def test_redirects_go_to_the_host_their_normal_form_names(crawl, group: Group, lookups) -> None:
    cases = cases_for("redirect")
    for number, case in enumerate(cases):
        group.token_host.redirect(f"/hop/{number}", case.url_for(group.port).encode("utf-8"))
    crawled = crawl(urls=[group.token_host.url_for(f"/hop/{n}") for n in range(len(cases))],
                    token_hosts=[f"127.0.0.2:{group.port}"])
    problems = wrong_turns(cases, group, lookups)
    malformed = sum(case.expected is None for case in cases)
    if crawled.stats.get("failed:InvalidRedirect", 0) != malformed:
        problems.append(f"failed:InvalidRedirect is {crawled.stats.get('failed:InvalidRedirect', 0)}, not {malformed}")
    assert problems == [], "\n".join(problems)


# -- https tokens never go over http ---------------------------------------------------------------


@pytest.fixture
def https_and_http() -> Iterator[tuple[Recorder, Recorder]]:
    """An https recorder and an http one on the same address (127.0.0.2), other ports."""
    with Recorder("127.0.0.2", tls=True) as secure, Recorder("127.0.0.2") as plain:
        yield secure, plain


@pytest.mark.parametrize("forward_headers", [False, True], ids=["own-headers", "forward_headers"])
def test_a_redirect_from_https_to_http_carries_no_credentials(crawl, https_and_http, forward_headers) -> None:
    secure, plain = https_and_http
    secure.redirect("/start", plain.url_for("/landing"))
    crawled = crawl(
        urls=[secure.url_for("/start")],
        headers=[["X-Api-Token", OWN], ["Accept-Language", "fr"]],
        forward_headers=forward_headers,
        token_hosts=["127.0.0.2"],  # the bare host: any port, and (but for the downgrade) any scheme
        extra={"http": {"ca_bundle": str(secure.ca_pem)}},
    )
    [first] = secure.received("/start")
    assert first.headers.get("X-Scoped-Token") == SECRET
    assert first.headers.get("X-Api-Token") == OWN
    [landing] = plain.received("/landing")  # the redirect is followed...
    assert not landing.headers.carries(SECRET)  # ...without the token
    assert not landing.headers.carries(OWN)  # ...and without the request's own credential
    assert crawled.urls() == {plain.url_for("/landing")}


def test_a_token_from_an_https_endpoint_is_never_sent_over_http(crawl, https_and_http, monkeypatch) -> None:
    secure, plain = https_and_http
    monkeypatch.setenv("SCOPE_CLIENT_ID", "scope-client")
    secure.json("/oauth/token", {"access_token": "tls-only-token", "expires_in": 300})
    secure.redirect("/to-http", plain.url_for("/after-redirect"))
    crawl(
        urls=[secure.url_for("/api"), plain.url_for("/plain"), secure.url_for("/to-http")],
        entry=f"""
        [spiders.token]
        url = "{secure.url_for('/oauth/token')}"
        hosts = ["127.0.0.2"]
        fields = {{ grant_type = "client_credentials" }}
        env_fields = {{ client_id = "SCOPE_CLIENT_ID" }}
        """,
        extra={"http": {"ca_bundle": str(secure.ca_pem)}},
    )
    [grant] = secure.received("/oauth/token", method="POST")
    assert b"client_id=scope-client" in grant.body
    [api] = secure.received("/api")
    assert api.headers.get("Authorization") == "Bearer tls-only-token"
    assert sorted(hit.path for hit in plain.requests) == ["/after-redirect", "/plain"]
    assert [hit.target for hit in plain.requests if hit.headers.carries("tls-only-token")] == []


@pytest.mark.parametrize(
    ("scope", "to_https", "to_http"),
    [
        ("127.0.0.2", True, True),  # a bare host: any port, any scheme
        ("127.0.0.2:{plain}", False, True),
        ("https://127.0.0.2", True, False),
        ("https://127.0.0.2:{secure}", True, False),
        ("https://127.0.0.2:{plain}", False, False),
    ],
)
def test_a_scope_with_a_scheme_covers_that_scheme_only(crawl, https_and_http, scope, to_https, to_http) -> None:
    secure, plain = https_and_http
    crawl(
        urls=[secure.url_for("/secure"), plain.url_for("/plain")],
        token_hosts=[scope.format(secure=secure.port, plain=plain.port)],
        extra={"http": {"ca_bundle": str(secure.ca_pem)}},
    )
    [on_https] = secure.received("/secure")
    [on_http] = plain.received("/plain")
    assert on_https.headers.carries(SECRET) == to_https
    assert on_http.headers.carries(SECRET) == to_http


# -- the request's own headers on redirects, through httpbin ----------------------------------------


@pytest.fixture(scope="module")
def httpbin() -> Iterator[str]:
    with serve("httpbin_server.py", host="127.0.0.2") as url:
        yield url


def test_the_httpbin_server_redirects_echoes_and_sets_cookies(httpbin, session) -> None:
    """What the tests below take for granted of httpbin (plain requests, no crawler)."""
    echoed = session.get(f"{httpbin}/headers", headers={"X-Api-Token": OWN}, timeout=5).json()["headers"]
    assert echoed["X-Api-Token"] == OWN
    away = session.get(f"{httpbin}/redirect-to", params={"url": "http://127.0.0.3:9/x", "status_code": 307},
                       allow_redirects=False, timeout=5)
    assert (away.status_code, away.headers["Location"]) == (307, "http://127.0.0.3:9/x")
    near = session.get(f"{httpbin}/redirect-to?url=/headers", allow_redirects=False, timeout=5)
    assert (near.status_code, near.headers["Location"]) == (302, "/headers")
    session.get(f"{httpbin}/cookies/set?flavour=oat", timeout=5)
    assert session.get(f"{httpbin}/cookies", timeout=5).json() == {"cookies": {"flavour": "oat"}}


@pytest.fixture
def landing() -> Iterator[Recorder]:
    with Recorder("127.0.0.3") as recorder:
        yield recorder


OWN_HEADERS = [["Accept-Language", "fr"], ["X-Api-Token", OWN]]


@pytest.mark.parametrize("status", [302, 307])
def test_a_cross_origin_redirect_keeps_only_harmless_own_headers(crawl, httpbin, landing, status) -> None:
    target = quote(landing.url_for("/landing"), safe="")
    crawl(urls=[f"{httpbin}/redirect-to?url={target}&status_code={status}"], headers=OWN_HEADERS)
    [hit] = landing.received("/landing")
    assert hit.headers.get("Accept-Language") == "fr"
    assert "X-Api-Token" not in hit.headers
    assert not hit.headers.carries(OWN)


def test_forward_headers_keeps_them_all_on_a_cross_origin_redirect(crawl, httpbin, landing) -> None:
    target = quote(landing.url_for("/landing"), safe="")
    crawl(urls=[f"{httpbin}/redirect-to?url={target}"], headers=OWN_HEADERS, forward_headers=True)
    [hit] = landing.received("/landing")
    assert hit.headers.get("Accept-Language") == "fr"
    assert hit.headers.get("X-Api-Token") == OWN


def test_a_same_origin_redirect_keeps_the_own_headers(crawl, httpbin) -> None:
    crawled = crawl(urls=[f"{httpbin}/redirect-to?url=/headers"], headers=OWN_HEADERS)
    [item] = crawled.items
    assert item["url"] == f"{httpbin}/headers"
    echoed = {name.lower(): value for name, value in item["json"]["headers"].items()}
    assert echoed["x-api-token"] == OWN
    assert echoed["accept-language"] == "fr"


# -- a credential in a request's own headers is reported ----------------------------------------------


def test_a_credential_looking_request_header_is_reported_once(crawl, landing, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="crawler"):
        crawled = crawl(
            urls=[landing.url_for(f"/page/{n}") for n in range(4)],
            headers=[["X-Api-Key", "k-123"], ["Accept-Language", "fr"]],
        )
    assert [hit.headers.get("X-Api-Key") for hit in landing.requests] == ["k-123"] * 4  # still sent
    assert crawled.stats.get("credential_headers") == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and "token_auth()" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "x-api-key" in warnings[0].lower()


# -- at rest: owner-only files --------------------------------------------------------------------------


AT_REST_SPIDER = """
import os
import stat

from crawler import Request, Spider


class AtRest(Spider):
    '''Records, from inside the running crawl, the modes of the files named in ``files``.'''

    name = "atrest"
    urls = []
    files = []

    def start_requests(self):
        for url in self.urls:
            yield Request(url, callback=self.parse)

    def parse(self, response):
        modes = {}
        for path in self.files:
            try:
                modes[path] = stat.S_IMODE(os.stat(path).st_mode)
            except FileNotFoundError:
                pass
        yield {"url": response.url, "status": response.status, "modes": modes}
"""


@pytest.fixture
def umask_022() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def test_checkpoint_and_cookie_files_are_owner_only(crawl, site: PracticeSite, tmp_path, monkeypatch, umask_022) -> None:
    for name, value in {"PRACTICE_USERNAME": "demo", "PRACTICE_PASSWORD": "demo-password"}.items():
        monkeypatch.setenv(name, value)
    checkpoint = tmp_path / "checkpoint.db"
    files = [str(checkpoint), f"{checkpoint}-wal", f"{checkpoint}-shm", f"{checkpoint}.atrest.cookies"]
    crawled = crawl(
        spider="atrest", source=AT_REST_SPIDER,
        urls=[f"{site.url}/members/page/{n}" for n in range(1, 6)], files=files,
        entry=f"""
        [spiders.login]
        url = "{site.url}/login"
        csrf_field = "csrf_token"
        env_fields = {{ username = "PRACTICE_USERNAME", password = "PRACTICE_PASSWORD" }}
        """,
        extra={"crawl": {"workers": 1}},
    )
    assert site.counters.logins == 1
    assert len(crawled.items) == 5
    during = {path: mode for item in crawled.items for path, mode in item["modes"].items()}  # type: ignore[union-attr]
    after = {path: stat.S_IMODE(os.stat(path).st_mode) for path in files if os.path.exists(path)}
    # While the crawl runs, the WAL checkpoint has all three files, and the login its cookie file.
    assert set(during) == set(files), f"missing during the crawl: {set(files) - set(during)}"
    assert str(checkpoint) in after and files[3] in after
    wrong = {f"{Path(path).name} ({when})": oct(mode)
             for when, modes in (("during", during), ("after", after))
             for path, mode in modes.items() if mode != 0o600}
    assert wrong == {}


# -- robots.txt is public ---------------------------------------------------------------------------------


PUBLIC_SPIDER = """
from crawler import HeaderAuth, LoginFailed, Request, Spider


class Public(Spider):
    '''Logs in at ``login_url`` (which sets a cookie), sends X-Scoped-Token to ``token_hosts``,
    follows every link.'''

    name = "public"
    urls = []
    login_url = ""
    token_hosts = []

    def token_auth(self):
        return HeaderAuth(self.token_hosts, lambda method, url: {"X-Scoped-Token": "scoped-secret"})

    def login(self, session):
        if session.get(self.login_url, timeout=5).status_code != 200:
            raise LoginFailed("the recorder refused the login")

    def start_requests(self):
        for url in self.urls:
            yield Request(url, callback=self.parse)

    def parse(self, response):
        yield {"url": response.url, "status": response.status}
        for href in response.css("a::attr(href)").getall():
            yield response.follow(href, self.parse)
"""


def test_robots_txt_is_fetched_without_token_or_cookies_and_sets_none(crawl) -> None:
    with recorders("127.0.0.2", "127.0.0.3") as (members, start):
        members.route("/login", 200, [("Set-Cookie", "sid=login-cookie; Path=/")], "logged in")
        members.route("/robots.txt", 200, [("Content-Type", "text/plain"), ("Set-Cookie", "from_robots=1; Path=/")],
                      "User-agent: *\nAllow: /\n")
        # The start page is elsewhere, so the login (at the first page's fetch) comes before
        # the members host's robots.txt is fetched: its cookie is in the jar by then.
        start.page("/start", [members.url_for("/page")])
        crawled = crawl(
            spider="public", source=PUBLIC_SPIDER, urls=[start.url_for("/start")],
            login_url=members.url_for("/login"), token_hosts=[members.netloc],
            extra={"robots": {"obey": True}},
        )
        assert crawled.stats.get("logins") == 1
        [robots] = members.received("/robots.txt")
        [page] = members.received("/page")
    # The page proves both credentials were there and in scope for this host...
    assert page.headers.get("X-Scoped-Token") == SECRET
    assert "sid=login-cookie" in page.headers.get("Cookie", "")
    # ...and robots.txt got neither, and the cookie it set did not join the crawl's jar.
    assert not robots.headers.carries(SECRET)
    assert "Cookie" not in robots.headers
    assert "from_robots" not in page.headers.get("Cookie", "")
