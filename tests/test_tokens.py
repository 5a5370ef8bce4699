"""The ``[spiders.token]`` options and ``HeaderAuth(on_rejected=...)``, in real crawls against the
practice site's token endpoint, each checked from what the server saw."""

from __future__ import annotations

import base64
import json
import time
from urllib.parse import quote_plus

import pytest
import requests

from crawler.cli import main
from crawler.exceptions import ConfigError, LoginFailed
from crawler.frontier.sqlite import Checkpoint
from crawler.practice import PracticeSite
from crawler.runner import run_crawl

from helpers import TIMEOUT, in_thread, wait_until

CREDENTIALS = {
    "PRACTICE_CLIENT_ID": "demo-client",
    "PRACTICE_CLIENT_SECRET": "demo-secret",
}
ENV_FIELDS = 'env_fields = { client_id = "PRACTICE_CLIENT_ID", client_secret = "PRACTICE_CLIENT_SECRET" }'

# Fetches /api/items/1..pages, all as start requests, so the workers fetch them side by side.
API_SPIDER = """
from crawler import Request, Spider


class ApiItems(Spider):
    name = "api_items"
    base = ""
    pages = 0

    def start_requests(self):
        for n in range(1, self.pages + 1):
            yield Request(self.base + "/api/items/" + str(n))

    def parse(self, response):
        yield {"id": response.json()["id"]}
"""

# Sends a bearer token of its own through HeaderAuth: a stale one at first, then whatever
# on_rejected last fetched from the token endpoint.
ROTATING_SPIDER = """
import os
import threading

import requests

from crawler import HeaderAuth, Request, Spider


class Rotating(Spider):
    name = "rotating"
    base = ""
    port = 0
    pages = 0

    def __init__(self, **args):
        super().__init__(**args)
        self.key = "stale-key"
        self.lock = threading.Lock()

    def token_auth(self):
        return HeaderAuth(["127.0.0.1:" + str(self.port)], self.compute, self.rotate)

    def compute(self, method, url):
        return {"Authorization": "Bearer " + self.key}

    def rotate(self):
        with self.lock:
            answer = requests.post(
                self.base + "/api/token",
                data={"client_id": os.environ["PRACTICE_CLIENT_ID"],
                      "client_secret": os.environ["PRACTICE_CLIENT_SECRET"]},
                timeout=10,
            )
            answer.raise_for_status()
            self.key = answer.json()["access_token"]

    def start_requests(self):
        for n in range(1, self.pages + 1):
            yield Request(self.base + "/api/items/" + str(n))

    def parse(self, response):
        yield {"id": response.json()["id"]}
"""


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    return CREDENTIALS


def token_section(site: PracticeSite, *settings: str, credentials: str = ENV_FIELDS) -> str:
    return "\n".join([
        "[spiders.token]",
        f'url = "{site.url}/api/token"',
        "" if credentials.startswith("fields") else 'fields = { grant_type = "client_credentials" }',
        credentials,
        *settings,
    ])


@pytest.fixture
def api_config(spider_config, credentials):
    """A crawl of ``/api/items/1..pages`` with the token section ``settings`` add to."""

    def make(site: PracticeSite, *settings: str, pages: int, workers: int = 4, extra: str = "",
             credentials: str = ENV_FIELDS):
        return spider_config(
            "api_items", API_SPIDER, f"[crawl]\nworkers = {workers}\n{extra}",
            entry=token_section(site, *settings, credentials=credentials), base=site.url, pages=pages,
        )

    return make


def item_ids(config, spider: str = "api_items") -> list[int]:
    return sorted(json.loads(line)["id"] for line in config.output_path(spider).read_text().splitlines())


def counts(config, spider: str = "api_items"):
    with Checkpoint(config.resolve(config.checkpoint.path), "test") as checkpoint:
        return checkpoint.frontier(spider).counts()


# -- how the token is asked for -------------------------------------------


def test_body_json_sends_the_fields_as_a_json_object(api_config) -> None:
    with PracticeSite(products=10, api_items=30) as site:
        config = api_config(site, 'body = "json"', pages=30)
        run_crawl(config)
        grants = site.counters.token_requests
        assert len(grants) == site.counters.token_grants == 1
        for grant in grants:
            assert grant.content_type == "application/json"
            assert grant.credentials == "body"
            assert set(grant.fields) == {"grant_type", "client_id", "client_secret"}
            assert grant.status == 200
        assert item_ids(config) == list(range(1, 31))
        assert site.counters.api_requests == 30


def test_body_form_is_the_default(api_config) -> None:
    with PracticeSite(products=10, api_items=10) as site:
        config = api_config(site, pages=10)
        run_crawl(config)
        [grant] = site.counters.token_requests
        assert grant.content_type == "application/x-www-form-urlencoded"
        assert (grant.credentials, grant.status) == ("body", 200)
        assert item_ids(config) == list(range(1, 11))


@pytest.mark.parametrize(
    ("client_id", "client_secret", "credentials", "encoding"),
    [
        ("demo-client", "demo-secret", ENV_FIELDS, ""),
        # The client id as a plain field (it is no secret), the secret from the environment.
        ("demo-client", "demo-secret",
         'fields = { grant_type = "client_credentials", client_id = "demo-client" }\n'
         'env_fields = { client_secret = "PRACTICE_CLIENT_SECRET" }', ""),
        # Characters that RFC 6749 §2.3.1's form-urlencoding changes: the server only accepts
        # these once it has decoded them ("demo client" sent plain has a space, not a "+").
        ("demo client:1", "s3cr:t %/+é&=", ENV_FIELDS, "form-urlencoded"),
    ],
    ids=["env_fields", "client_id_in_fields", "rfc6749_encoding"],
)
def test_client_auth_basic_sends_the_client_credentials_in_basic_only(
    api_config, monkeypatch, client_id, client_secret, credentials, encoding
) -> None:
    monkeypatch.setenv("PRACTICE_CLIENT_ID", client_id)
    monkeypatch.setenv("PRACTICE_CLIENT_SECRET", client_secret)
    with PracticeSite(products=10, api_items=20, client_id=client_id, client_secret=client_secret) as site:
        config = api_config(site, 'client_auth = "basic"', pages=20, credentials=credentials)
        run_crawl(config)
        grants = site.counters.token_requests
        assert len(grants) == site.counters.token_grants == 1
        for grant in grants:
            assert grant.credentials == "basic"
            assert "client_id" not in grant.fields and "client_secret" not in grant.fields
            assert "grant_type" in grant.fields  # the other fields stay in the body
            assert grant.content_type == "application/x-www-form-urlencoded"
            assert grant.basic_encoding == encoding
            assert grant.status == 200
        assert item_ids(config) == list(range(1, 21))


def test_client_auth_basic_with_a_json_body(api_config) -> None:
    with PracticeSite(products=10, api_items=10) as site:
        config = api_config(site, 'client_auth = "basic"', 'body = "json"', pages=10)
        run_crawl(config)
        [grant] = site.counters.token_requests
        assert (grant.credentials, grant.content_type, grant.fields, grant.status) == (
            "basic", "application/json", ("grant_type",), 200)
        assert item_ids(config) == list(range(1, 11))


@pytest.mark.parametrize(
    ("token_credentials", "missing"),
    [
        ('env_fields = { client_id = "PRACTICE_CLIENT_ID" }', "client_secret"),
        ('env_fields = { client_secret = "PRACTICE_CLIENT_SECRET" }', "client_id"),
    ],
)
def test_client_auth_basic_needs_a_client_id_and_a_client_secret(
    site: PracticeSite, spider_config, credentials, token_credentials: str, missing: str
) -> None:
    with pytest.raises(ConfigError) as error:
        config = spider_config(
            "api_items", API_SPIDER,
            entry=token_section(site, 'client_auth = "basic"', credentials=token_credentials),
            base=site.url, pages=1,
        )
        run_crawl(config)  # in case the check is made when the crawl starts rather than on loading
    problems = error.value.problems
    assert any("spiders[0].token" in line and missing in line for line in problems), problems
    assert not any("unknown key" in line for line in problems), problems
    assert site.counters.token_requests == []


# -- when the token is refreshed ------------------------------------------


def test_a_refresh_margin_longer_than_the_lifetime_refreshes_at_three_quarters(api_config) -> None:
    # Tokens live 2 s; a margin of 5 s is cut to a quarter of that, so the token is refreshed
    # every 1.5 s (not on every request). 80 pages at 0.15 s over 4 workers: about 3 s.
    pages = 80
    with PracticeSite(products=10, api_items=pages, token_ttl=2, api_latency=0.15) as site:
        config = api_config(site, "refresh_margin = 5", pages=pages)
        started = time.monotonic()
        run_crawl(config)
        elapsed = time.monotonic() - started
        grants = site.counters.token_grants
        assert 2 <= grants <= elapsed / 1.5 + 2, (grants, elapsed)
        assert grants < pages / 4, (grants, elapsed)
        assert item_ids(config) == list(range(1, pages + 1))
        assert site.counters.api_requests == pages


@pytest.mark.parametrize(
    ("settings", "lifetime"),
    [
        ((), 300.0),
        (("default_lifetime = 600",), 600.0),
        (("default_lifetime = 1.0", "refresh_margin = 0"), 1.0),
    ],
    ids=["default_300", "600", "1"],
)
def test_without_expires_in_the_default_lifetime_is_assumed(api_config, settings, lifetime) -> None:
    # The server keeps tokens for 60 s but does not say so: only the client's assumption decides.
    pages = 60  # at 0.1 s over 4 workers: about 1.5 s
    with PracticeSite(products=10, api_items=pages, send_expires_in=False, api_latency=0.1) as site:
        config = api_config(site, *settings, pages=pages)
        started = time.monotonic()
        run_crawl(config)
        elapsed = time.monotonic() - started
        grants = site.counters.token_grants
        if lifetime > 60:
            assert grants == 1
        else:
            assert 2 <= grants <= elapsed / lifetime + 2, (grants, elapsed)
        assert all(grant.status == 200 for grant in site.counters.token_requests)
        assert item_ids(config) == list(range(1, pages + 1))


# -- a token that cannot be had -------------------------------------------


@pytest.mark.parametrize(
    ("token_error", "wrong_secret", "status"),
    [(500, None, 500), (400, None, 400), (None, "not-the-secret", 401)],
    ids=["server_error_500", "bad_request_400", "wrong_secret_401"],
)
def test_a_token_that_cannot_be_had_stops_the_crawl_cleanly(
    api_config, monkeypatch, token_error, wrong_secret, status
) -> None:
    if wrong_secret:
        monkeypatch.setenv("PRACTICE_CLIENT_SECRET", wrong_secret)
    pages, workers = 20, 4
    with PracticeSite(products=10, api_items=pages, token_error=token_error) as site:
        config = api_config(site, pages=pages, workers=workers, extra="[robots]\nobey = true\n")
        with pytest.raises(LoginFailed) as failure:
            run_crawl(config)
        message = str(failure.value)
        assert "$PRACTICE_CLIENT_SECRET" in message
        for value in ("demo-client", "demo-secret", "not-the-secret"):
            assert value not in message
        asked = site.counters.token_requests
        assert 1 <= len(asked) <= workers  # it does not loop
        assert all(grant.status == status for grant in asked)
        assert site.counters.token_grants == 0 and site.counters.api_requests == 0
        # robots.txt was fetched first, on its own: no token was asked for to send it.
        [robots_at] = site.counters.arrivals("/robots.txt")
        assert robots_at < min(site.counters.arrivals("/api/token"))
        # Nothing was failed or lost: every start request waits in the queue.
        left = counts(config)
        assert (left.failed, left.in_flight, left.done) == (0, 0, 0)
        assert left.queued == pages

        site.token_error = None
        monkeypatch.setenv("PRACTICE_CLIENT_SECRET", "demo-secret")
        run_crawl(config)
        assert item_ids(config) == list(range(1, pages + 1))
        assert site.counters.token_grants == 1


def test_the_cli_exits_1_when_the_token_endpoint_fails(api_config, tmp_path, capsys) -> None:
    with PracticeSite(products=10, api_items=5, token_error=500) as site:
        api_config(site, pages=5)
        assert main(["run", str(tmp_path / "config.toml")]) == 1
    err = capsys.readouterr().err
    assert "$PRACTICE_CLIENT_SECRET" in err and "demo-secret" not in err
    assert "Traceback" not in err


# -- HeaderAuth(on_rejected=...) ------------------------------------------


def test_header_auth_on_rejected_rotates_the_key_and_replays(spider_config, credentials) -> None:
    pages, workers = 60, 4
    with PracticeSite(products=10, api_items=pages, api_latency=0.05) as site:
        config = spider_config(
            "rotating", ROTATING_SPIDER, f"[crawl]\nworkers = {workers}\n",
            base=site.url, port=site.port, pages=pages,
        )
        # The first requests carry a stale key; a third of the way in, every key is expired.
        expirer = in_thread(
            lambda: (wait_until(lambda: site.counters.api_requests >= 20), site.expire_tokens()))
        report = run_crawl(config)
        expirer.join()
        assert item_ids(config, "rotating") == list(range(1, pages + 1))
        assert site.counters.api_requests == pages  # each page answered 200 exactly once
        # Each on_rejected call fetched one token: once per rejected request, at most one
        # per worker for the stale key and one per worker after the expiry.
        rotations = site.counters.token_grants
        assert 2 <= rotations <= 2 * workers
        assert 2 <= report.stats["replayed_requests"] <= 2 * workers
        assert report.stats.get("retries", 0) == 0  # replays are not retries
        left = counts(config, "rotating")
        assert (left.failed, left.queued, left.done) == (0, 0, pages)


# -- the practice site's side of it ----------------------------------------


def test_the_token_endpoint_takes_forms_json_and_rfc6749_basic() -> None:
    client_id, client_secret = "id:1 é", "s3cr:t %/+"
    with PracticeSite(client_id=client_id, client_secret=client_secret) as site, requests.Session() as http:
        url = site.url + "/api/token"

        def post(**kwargs: object) -> requests.Response:
            return http.post(url, timeout=TIMEOUT, **kwargs)  # type: ignore[arg-type]

        both = {"client_id": client_id, "client_secret": client_secret}
        encoded = f"{quote_plus(client_id, safe='')}:{quote_plus(client_secret, safe='')}"
        rfc_basic = {"Authorization": "Basic " + base64.b64encode(encoded.encode()).decode()}
        assert post(data={"grant_type": "client_credentials", **both}).status_code == 200
        assert post(json={"grant_type": "client_credentials", **both}).status_code == 200
        assert post(headers=rfc_basic, data={"grant_type": "client_credentials"}).status_code == 200
        assert post(headers=rfc_basic, json={"grant_type": "client_credentials"}).status_code == 200
        # Credentials two ways at once, an unknown body type, JSON that is no object of strings.
        assert post(headers=rfc_basic, data=both).json() == {"error": "invalid_request"}
        assert post(data=b"a=b", headers={"Content-Type": "text/plain"}).status_code == 400
        assert post(json=["client_id"]).status_code == 400
        assert post(json={**both, "n": 1}).status_code == 400
        assert post(json={"client_id": client_id, "client_secret": "no"}).status_code == 401
        assert site.counters.token_grants == 4
        assert [(r.credentials, r.content_type, r.fields, r.basic_encoding, r.status)
                for r in site.counters.token_requests] == [
            ("body", "application/x-www-form-urlencoded", ("client_id", "client_secret", "grant_type"), "", 200),
            ("body", "application/json", ("client_id", "client_secret", "grant_type"), "", 200),
            ("basic", "application/x-www-form-urlencoded", ("grant_type",), "form-urlencoded", 200),
            ("basic", "application/json", ("grant_type",), "form-urlencoded", 200),
            ("both", "application/x-www-form-urlencoded", ("client_id", "client_secret"), "", 400),
            ("none", "text/plain", (), "", 400),
            ("none", "application/json", (), "", 400),
            ("body", "application/json", ("client_id", "client_secret", "n"), "", 400),
            ("body", "application/json", ("client_id", "client_secret"), "", 401),
        ]
        # Sent unencoded, this id's ":" splits it in the wrong place.
        plain = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
        assert post(headers={"Authorization": "Basic " + plain}).status_code == 401
        site.reset_counters()
        assert site.counters.token_requests == []
    # Without the form-urlencoding Basic still works when the parts survive being sent as they are.
    with PracticeSite(client_id="a b", client_secret="c+d%41") as site:
        plain = base64.b64encode(b"a b:c+d%41").decode()
        answer = requests.post(site.url + "/api/token", headers={"Authorization": "Basic " + plain},
                               timeout=TIMEOUT)
        assert answer.status_code == 200
        assert site.counters.token_requests[-1].basic_encoding == "plain"


def test_the_token_endpoint_options() -> None:
    with PracticeSite(send_expires_in=False, token_error=503, api_latency=0.2) as site, \
            requests.Session() as http:
        url = site.url + "/api/token"
        auth = ("demo-client", "demo-secret")
        failed = http.post(url, auth=auth, timeout=TIMEOUT)
        assert failed.status_code == 503 and failed.json() == {"error": "server_error"}
        site.token_error = 400
        assert http.post(url, auth=auth, timeout=TIMEOUT).json() == {"error": "invalid_request"}
        site.token_error = None
        granted = http.post(url, auth=auth, timeout=TIMEOUT).json()
        assert set(granted) == {"access_token", "token_type"}
        site.send_expires_in = True
        assert http.post(url, auth=auth, timeout=TIMEOUT).json()["expires_in"] == 60
        assert [r.status for r in site.counters.token_requests] == [503, 400, 200, 200]
        assert site.counters.token_grants == 2
        started = time.monotonic()
        item = http.get(site.url + "/api/items/1", timeout=TIMEOUT,
                        headers={"Authorization": "Bearer " + granted["access_token"]})
        assert item.status_code == 200 and time.monotonic() - started >= 0.2
        with pytest.raises(ValueError):
            site.token_error = 200
    for bad in ({"token_error": 302}, {"token_error": True}, {"api_latency": -1},
                {"api_latency": float("inf")}):
        with pytest.raises(ValueError):
            PracticeSite(**bad)  # type: ignore[arg-type]
