"""Tests for the practice site's login area and bearer-token API: a real server, driven by requests."""

from __future__ import annotations

import os
import re
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from crawler.practice import PracticeSite, api_item, member_secret
from helpers import TIMEOUT, site_get

REPO_ROOT = Path(__file__).resolve().parents[1]
FLAGS = "; Path=/; HttpOnly; SameSite=Lax"


@pytest.fixture
def site() -> Iterator[PracticeSite]:
    with PracticeSite(products=10, members=5, api_items=4) as running:
        yield running


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def get(http: requests.Session, site: PracticeSite, path: str, **kwargs: object) -> requests.Response:
    kwargs.setdefault("allow_redirects", False)  # the members area's redirects are what is tested
    return site_get(http, site, path, **kwargs)


def post(http: requests.Session, site: PracticeSite, path: str, **kwargs: object) -> requests.Response:
    kwargs.setdefault("timeout", TIMEOUT)
    kwargs.setdefault("allow_redirects", False)
    return http.post(site.url + path, **kwargs)  # type: ignore[arg-type]


def csrf_token(page: str) -> str:
    match = re.search(r'<input type="hidden" name="csrf_token" value="([^"]+)">', page)
    assert match, "no csrf_token input on the page"
    return match.group(1)


def log_in(http: requests.Session, site: PracticeSite, password: str = "demo-password",
           next_path: str | None = None) -> requests.Response:
    """Fetch the form, post it with the demo username; the answer to the POST (not followed)."""
    token = csrf_token(get(http, site, "/login").text)
    form = {"csrf_token": token, "username": "demo", "password": password}
    if next_path is not None:
        form["next"] = next_path
    return post(http, site, "/login", data=form)


def member_links(page: str) -> list[str]:
    return re.findall(r'<a class="member-link" href="([^"]+)"', page)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def grant(http: requests.Session, site: PracticeSite) -> str:
    response = post(http, site, "/api/token",
                    data={"client_id": "demo-client", "client_secret": "demo-secret"})
    assert response.status_code == 200
    return str(response.json()["access_token"])


# -- login ----------------------------------------------------------------


def test_login_form_sets_a_fresh_double_submit_csrf_token(site: PracticeSite,
                                                          http: requests.Session) -> None:
    response = get(http, site, "/login?next=/members/page/2")
    assert response.status_code == 200
    page = response.text
    assert '<form class="login" method="post" action="/login">' in page
    assert '<input name="username">' in page and '<input type="password" name="password">' in page
    assert '<input type="hidden" name="next" value="/members/page/2">' in page
    token = csrf_token(page)
    assert response.headers["Set-Cookie"] == f"csrftoken={token}{FLAGS}"
    assert http.cookies["csrftoken"] == token
    again = get(http, site, "/login").text
    assert csrf_token(again) != token and 'name="next"' not in again


def test_good_login_sets_the_session_and_redirects(site: PracticeSite, http: requests.Session) -> None:
    answer = log_in(http, site)
    assert answer.status_code == 302 and answer.headers["Location"] == "/members/page/1"
    session_id = http.cookies["sessionid"]
    assert answer.headers["Set-Cookie"] == f"sessionid={session_id}{FLAGS}"
    assert (site.counters.logins, site.counters.failed_logins) == (1, 0)
    assert log_in(http, site, next_path="/members/page/3").headers["Location"] == "/members/page/3"
    for foreign in ("//evil.example/x", "http://evil.example/", "/\\evil.example", "members/page/2"):
        assert log_in(http, site, next_path=foreign).headers["Location"] == "/members/page/1"
    assert site.counters.logins == 6
    assert site.counters.connections == 1  # bodies read, lengths sent: keep-alive throughout


def test_bad_csrf_token_is_a_403(site: PracticeSite, http: requests.Session) -> None:
    token = csrf_token(get(http, site, "/login").text)
    credentials = {"username": "demo", "password": "demo-password"}
    for form in ({**credentials}, {**credentials, "csrf_token": token + "x"}):
        answer = post(http, site, "/login", data=form)
        assert answer.status_code == 403
        assert '<p class="error">CSRF check failed</p>' in answer.text
    with requests.Session() as cookieless:  # the right token, but no csrftoken cookie
        answer = post(cookieless, site, "/login", data={**credentials, "csrf_token": token})
        assert answer.status_code == 403 and "sessionid" not in cookieless.cookies
    assert "sessionid" not in http.cookies
    assert (site.counters.logins, site.counters.failed_logins) == (0, 3)


def test_wrong_password_shows_the_form_again(site: PracticeSite, http: requests.Session) -> None:
    first_token = http.cookies.get("csrftoken")
    answer = log_in(http, site, password="wrong", next_path="/members/page/4")
    assert answer.status_code == 200
    assert '<p class="error">Invalid username or password</p>' in answer.text
    token = csrf_token(answer.text)
    assert token != first_token and answer.headers["Set-Cookie"] == f"csrftoken={token}{FLAGS}"
    assert '<input type="hidden" name="next" value="/members/page/4">' in answer.text
    assert "sessionid" not in http.cookies
    wrong_user = post(http, site, "/login", data={"csrf_token": token, "username": "root",
                                                 "password": "demo-password"})
    assert "Invalid username or password" in wrong_user.text
    assert (site.counters.logins, site.counters.failed_logins) == (0, 2)
    assert get(http, site, "/members/page/1").status_code == 302


# -- members area ---------------------------------------------------------


def test_member_pages_need_a_session(site: PracticeSite, http: requests.Session) -> None:
    refused = get(http, site, "/members/page/2")
    assert refused.status_code == 302
    assert refused.headers["Location"] == "/login?next=/members/page/2"
    assert get(http, site, "/members/").headers["Location"] == "/login?next=/members/"
    followed = get(http, site, "/members/page/2", allow_redirects=True)
    assert followed.url == site.url + "/login?next=/members/page/2"
    assert site.counters.member_pages == 0

    log_in(http, site)
    assert get(http, site, "/members/").headers["Location"] == "/members/page/1"
    for number in range(1, 6):
        page = get(http, site, f"/members/page/{number}")
        assert page.status_code == 200
        assert f'<h1 class="title">Member page {number}</h1>' in page.text
        assert f'<span class="secret">{member_secret(number)}</span>' in page.text
        assert member_secret(number) == f"member-secret-{number}"
        has_next = f'<a class="next" href="/members/page/{number + 1}">' in page.text
        assert has_next == (number < 5) and page.text.count('class="next"') == int(number < 5)
        others = member_links(page.text)
        assert 2 <= len(others) == len(set(others)) <= 3
        assert f"/members/page/{number}" not in others
        assert all(1 <= int(link.rsplit("/", 1)[1]) <= 5 for link in others)
        assert others == member_links(get(http, site, f"/members/page/{number}").text)
    for missing in ("/members/page/0", "/members/page/6", "/members/page/01"):
        assert get(http, site, missing).status_code == 404
    assert site.counters.member_pages == 10


def test_revoked_and_logged_out_sessions_are_sent_to_login(site: PracticeSite,
                                                           http: requests.Session) -> None:
    log_in(http, site)
    assert get(http, site, "/members/page/1").status_code == 200
    assert site.revoke_sessions() == 1
    old_cookie = get(http, site, "/members/page/1")
    assert old_cookie.status_code == 302
    assert old_cookie.headers["Location"] == "/login?next=/members/page/1"
    assert site.counters.revocations == 1
    assert log_in(http, site).status_code == 302
    assert get(http, site, "/members/page/1").status_code == 200
    session_id = http.cookies["sessionid"]
    logout = get(http, site, "/logout")
    assert logout.status_code == 302 and logout.headers["Location"] == "/login"
    # The server forgot the session too, not just the client's cookie jar.
    replay = get(http, site, "/members/page/1", cookies={"sessionid": session_id})
    assert replay.status_code == 302
    assert site.revoke_sessions() == 0 and site.counters.revocations == 2


def test_revoke_after_logs_everyone_out_after_every_nth_page() -> None:
    with PracticeSite(members=10, revoke_after=3) as site, \
            requests.Session() as first, requests.Session() as second:
        log_in(first, site)
        log_in(second, site)
        codes = [get(first, site, "/members/page/1").status_code,
                 get(second, site, "/members/page/2").status_code,
                 get(first, site, "/members/page/3").status_code]  # the 3rd page is still served
        assert codes == [200, 200, 200] and site.counters.revocations == 1
        for http in (first, second):
            assert get(http, site, "/members/page/4").headers["Location"] == "/login?next=/members/page/4"
        log_in(first, site)
        assert [get(first, site, f"/members/page/{n}").status_code for n in range(4, 8)] == [
            200, 200, 200, 302]
        assert (site.counters.member_pages, site.counters.revocations, site.counters.logins) == (6, 2, 3)


def test_latency_slows_member_pages() -> None:
    with PracticeSite(members=2, latency=0.2) as site, requests.Session() as http:
        log_in(http, site)
        started = time.monotonic()
        assert get(http, site, "/members/page/1").status_code == 200
        assert time.monotonic() - started >= 0.2


# -- token API ------------------------------------------------------------


def test_token_grant_and_items(site: PracticeSite, http: requests.Session) -> None:
    granted = post(http, site, "/api/token",
                   data={"client_id": "demo-client", "client_secret": "demo-secret"})
    assert granted.status_code == 200
    assert granted.headers["Content-Type"] == "application/json"
    assert granted.headers["Cache-Control"] == "no-store"
    body = granted.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 60
    basic = post(http, site, "/api/token", auth=("demo-client", "demo-secret")).json()
    assert basic["access_token"] != body["access_token"]
    for wrong in ({"data": {"client_id": "demo-client", "client_secret": "nope"}},
                  {"auth": ("demo-client", "nope")}, {}):
        refused = post(http, site, "/api/token", **wrong)
        assert refused.status_code == 401 and refused.json() == {"error": "invalid_client"}
    assert get(http, site, "/api/token").status_code == 405
    assert site.counters.token_grants == 2

    for headers in ({}, bearer("made-up"), {"Authorization": f"Basic {body['access_token']}"}):
        denied = get(http, site, "/api/items/1", headers=headers)
        assert denied.status_code == 401 and denied.json() == {"error": "invalid_token"}
        assert denied.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'
    for number in range(1, 5):
        item = get(http, site, f"/api/items/{number}", headers=bearer(body["access_token"])).json()
        assert item == api_item(number, 4)
        assert item["id"] == number and item["name"]
        assert item["next"] == (f"/api/items/{number + 1}" if number < 4 else None)
    assert get(http, site, "/api/items/5", headers=bearer(basic["access_token"])).status_code == 404
    assert site.counters.api_requests == 4
    assert site.counters.connections == 1


def test_tokens_expire_after_their_ttl() -> None:
    with PracticeSite(token_ttl=0.2) as site, requests.Session() as http:
        granted = post(http, site, "/api/token", auth=("demo-client", "demo-secret")).json()
        assert granted["expires_in"] == 0.2
        assert get(http, site, "/api/items/1", headers=bearer(granted["access_token"])).status_code == 200
        time.sleep(0.25)
        expired = get(http, site, "/api/items/1", headers=bearer(granted["access_token"]))
        assert expired.status_code == 401 and expired.json() == {"error": "invalid_token"}
        assert site.counters.api_requests == 1


def test_expire_tokens_invalidates_every_token(site: PracticeSite, http: requests.Session) -> None:
    tokens = [grant(http, site), grant(http, site)]
    assert site.expire_tokens() == 2
    assert all(get(http, site, "/api/items/1", headers=bearer(t)).status_code == 401 for t in tokens)
    assert get(http, site, "/api/items/1", headers=bearer(grant(http, site))).status_code == 200
    assert site.expire_tokens() == 1 and site.expire_tokens() == 0


def test_api_redirect_needs_a_token_and_redirects_verbatim(site: PracticeSite,
                                                           http: requests.Session) -> None:
    target = "http://127.0.0.2:9/api/items/1?x=1"
    denied = get(http, site, f"/api/redirect?to={target}")
    assert denied.status_code == 401 and denied.json() == {"error": "invalid_token"}
    token = grant(http, site)
    moved = get(http, site, "/api/redirect", params={"to": target}, headers=bearer(token))
    assert moved.status_code == 302 and moved.headers["Location"] == target
    assert get(http, site, "/api/redirect", headers=bearer(token)).status_code == 400
    assert get(http, site, "/api/redirect?to=/x%0d%0aA:b", headers=bearer(token)).status_code == 400


# -- cookies and hosts ----------------------------------------------------


@pytest.mark.parametrize(("query", "expected"), [
    ("name=a&value=b", "a=b"),
    ("name=a&value=b&domain=example.com", "a=b; Domain=example.com"),
    ("name=pref&value=x1&domain=127.0.0.2&path=/members", "pref=x1; Domain=127.0.0.2; Path=/members"),
    ("name=p&value=&path=/", "p=; Path=/"),
])
def test_set_cookie_sends_exactly_that_header(site: PracticeSite, http: requests.Session,
                                              query: str, expected: str) -> None:
    response = get(http, site, f"/set-cookie?{query}")
    assert response.status_code == 200 and response.headers["Set-Cookie"] == expected
    assert len(response.raw.headers.getlist("Set-Cookie")) == 1


@pytest.mark.parametrize("query", ["", "value=b", "name=a=b&value=c", "name=a&value=b;c",
                                   "name=a&value=b%0d%0aX:y"])
def test_set_cookie_rejects_malformed_cookies(site: PracticeSite, http: requests.Session,
                                              query: str) -> None:
    response = get(http, site, f"/set-cookie?{query}")
    assert response.status_code == 400 and "Set-Cookie" not in response.headers


def test_a_second_site_on_127_0_0_2_is_another_host(site: PracticeSite, http: requests.Session) -> None:
    with PracticeSite(host="127.0.0.2", members=3) as other:
        assert other.url.startswith("http://127.0.0.2:")
        assert get(http, other, "/product/1").status_code == 200
        log_in(http, site)
        assert get(http, site, "/members/page/1").status_code == 200
        # The cookie belongs to 127.0.0.1 only: the other host still asks for a login.
        assert get(http, other, "/members/page/1").status_code == 302
        token = grant(http, site)
        hop = get(http, site, "/api/redirect", params={"to": other.url + "/api/items/1"},
                  headers=bearer(token), allow_redirects=True)
        assert hop.url == other.url + "/api/items/1" and hop.status_code == 401
        assert other.counters.hits("/api/items/1") == 1 and other.counters.api_requests == 0


# -- options, counters, entry point ---------------------------------------


def test_custom_credentials_and_validation() -> None:
    with PracticeSite(username="ann", password="s3cret", client_id="c", client_secret="d") as site, \
            requests.Session() as http:
        credentials = site.demo_credentials
        assert credentials == {"username": "ann", "password": "s3cret",
                               "client_id": "c", "client_secret": "d"}
        credentials["password"] = "changed"
        assert site.demo_credentials["password"] == "s3cret"
        assert log_in(http, site, password="demo-password").status_code == 200  # user is "demo"
        token = csrf_token(get(http, site, "/login").text)
        answer = post(http, site, "/login",
                      data={"csrf_token": token, "username": "ann", "password": "s3cret"})
        assert answer.status_code == 302
        assert post(http, site, "/api/token", auth=("c", "d")).status_code == 200
    assert PracticeSite().demo_credentials["password"] == "demo-password"
    for bad in ({"revoke_after": 0}, {"token_ttl": -1}, {"token_ttl": float("nan")},
                {"members": -1}, {"api_items": -1}, {"password": ""}):
        with pytest.raises(ValueError):
            PracticeSite(**bad)  # type: ignore[arg-type]


def test_counters_count_and_reset(site: PracticeSite, http: requests.Session) -> None:
    log_in(http, site, password="wrong")
    log_in(http, site)
    get(http, site, "/members/page/1")
    token = grant(http, site)
    get(http, site, "/api/items/1", headers=bearer(token))
    site.revoke_sessions()
    counters = site.counters
    assert (counters.logins, counters.failed_logins, counters.token_grants, counters.revocations,
            counters.member_pages, counters.api_requests) == (1, 1, 1, 1, 1, 1)
    site.reset_counters()
    assert (counters.logins, counters.failed_logins, counters.token_grants, counters.revocations,
            counters.member_pages, counters.api_requests) == (0, 0, 0, 0, 0, 0)
    assert counters.snapshot() == {"connections": 0, "requests": 0, "hits": {}, "attempts": {}}
    # Tokens outlive a counter reset.
    assert get(http, site, "/api/items/2", headers=bearer(token)).status_code == 200
    assert counters.api_requests == 1


def test_module_entry_point_takes_login_options() -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "crawler.practice", "--port", "0", "--members", "3",
               "--revoke-after", "2", "--token-ttl", "5"]
    with subprocess.Popen(command, cwd=REPO_ROOT, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], TIMEOUT)
            assert ready, "the entry point did not print its URL"
            url = proc.stdout.readline().strip()
            assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
            with requests.Session() as http:
                assert http.get(url + "/members/page/3", timeout=TIMEOUT,
                                allow_redirects=False).status_code == 302
                assert http.get(url + "/members/page/4", timeout=TIMEOUT).status_code == 404
                granted = http.post(url + "/api/token", auth=("demo-client", "demo-secret"),
                                    timeout=TIMEOUT).json()
                assert granted["expires_in"] == 5
        finally:
            proc.terminate()
            output, errors = proc.communicate(timeout=TIMEOUT)
    assert proc.returncode == 0, errors
    assert output == ""  # only the URL goes to stdout (already read)
    assert "demo / demo-password" in errors and "demo-client" in errors
