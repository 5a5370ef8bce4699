"""One login, and one fetch of each robots.txt, for a crawl run on several machines at once.

Each "machine" is a ``ClusterLogin`` (or ``RedisRobotsFetch``) with everything of its own: its
Redis client, cookie jar, stats and process-local state; they share only the crawl's keys on a
real redis-server. The sites are real too (the practice site, and Django as a process of its
own): logins and fetches are counted by the sites themselves.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import redis
import requests
from redis.backoff import NoBackoff
from redis.retry import Retry

from crawler.auth.cluster import ClusterLogin
from crawler.auth.cookies import CrawlCookieJar
from crawler.auth.login import FormLogin
from crawler.frontier.redis_shared import RedisLoginBoard, RedisRobotsFetch
from crawler.exceptions import LoginFailed, TransportError
from crawler.frontier.redis_keys import CrawlKeys
from crawler.practice import PracticeSite
from crawler.request import Request
from crawler.stats import Stats

from helpers import TIMEOUT
from serverproc import serve

from redis_server import RedisServer


SPIDER = "members"
MACHINES = 3
THREADS = 8  # per machine, all asking at once
ROBOTS = "User-agent: *\nDisallow: /private\n"


# -- the cluster ----------------------------------------------------------------------------------


class Cluster:
    """Machines of one crawl on the test server: each with a Redis client of its own."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.crawl = server.new_crawl()
        self.keys = CrawlKeys(self.crawl)
        self._clients: list[redis.Redis] = []

    def client(self) -> redis.Redis:
        client = self.server.client()
        self._clients.append(client)
        return client

    def board(self) -> RedisLoginBoard:
        return RedisLoginBoard(self.client(), self.crawl, SPIDER)

    def logins(self, login: FormLogin, *, lock_ttl: float = 10.0) -> list[ClusterLogin]:
        return [
            ClusterLogin(
                login, Stats(), board=self.board(), cookies=CrawlCookieJar(), new_session=requests.Session,
                holder=f"machine-{number}", lock_ttl=lock_ttl,
            )
            for number in range(MACHINES)
        ]

    def robots(self, fetch: Callable[[str], tuple[int, bytes]], *, lock_ttl: float = 10.0) -> list[RedisRobotsFetch]:
        return [RedisRobotsFetch(self.client(), self.crawl, fetch, Stats(), lock_ttl=lock_ttl) for _ in range(MACHINES)]

    def close(self) -> None:
        for client in self._clients:
            client.close()


@pytest.fixture
def cluster(redis_server: RedisServer) -> Iterator[Cluster]:
    running = Cluster(redis_server)
    yield running
    running.close()


def at_once(calls: list[Callable[[], object]]) -> list[object]:
    """Run every call in a thread of its own, released together; their results, in order (a call
    that raised fails the test with its exception)."""
    start = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int, call: Callable[[], object]) -> None:
        start.wait()
        try:
            results[index] = call()
        except BaseException as error:  # noqa: BLE001 - handed to the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=item, daemon=True) for item in enumerate(calls)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 30
    for thread in threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    assert not any(thread.is_alive() for thread in threads), "a call hangs"
    if errors:
        raise errors[0]
    return results


def total(machines: list[ClusterLogin] | list[RedisRobotsFetch], name: str) -> int:
    return sum(machine.stats.get(name) for machine in machines)


def page(url: str, jar: CrawlCookieJar) -> tuple[int, int]:
    """GET ``url`` with the jar's cookies (without storing what the answer sets): its status,
    and the login generation it was sent under."""
    header, generation = jar.header_for(requests.Request("GET", url).prepare())
    answer = requests.get(url, headers={"Cookie": header} if header else {}, allow_redirects=False, timeout=TIMEOUT)
    return answer.status_code, generation


def one_session(machines: list[ClusterLogin]) -> str:
    """The session cookie every machine holds, checking it is the same one, of the same login."""
    sessions = {machine.cookies.get("sessionid") for machine in machines}
    generations = {machine.generation for machine in machines}
    assert len(sessions) == 1 and None not in sessions, sessions
    assert len(generations) == 1, generations
    return sessions.pop()


def relogin_everywhere(machines: list[ClusterLogin], url: str) -> None:
    """Each machine's threads send a request, are logged out, and ask for a new login under the
    generation they sent it under, all at once."""
    sent = []
    for machine in machines:
        status, generation = page(url, machine.cookies)
        assert status == 302, "the site did not log this machine out"
        sent.append((machine, generation))
    at_once([lambda machine=machine, seen=seen: machine.relogin(seen) for machine, seen in sent for _ in range(THREADS)])


# -- logins at the practice site ------------------------------------------------------------------


def practice_login(site: PracticeSite) -> FormLogin:
    """The login the crawler makes of the practice site's ``[spiders.login]`` config."""
    return FormLogin(
        url=f"{site.url}/login",
        fields={},
        secrets={"username": "demo", "password": "demo-password"},
        secret_sources={"username": "PRACTICE_USERNAME", "password": "PRACTICE_PASSWORD"},
        csrf_field="csrf_token",
        logged_out_url=f"{site.url}/login",
        logged_out_statuses=frozenset({401, 403}),
        timeout=(TIMEOUT, TIMEOUT),
    )


def test_three_machines_log_in_once_and_once_again_per_revocation(cluster: Cluster) -> None:
    with PracticeSite(products=10, members=5) as site:
        machines = cluster.logins(practice_login(site))
        member_page = f"{site.url}/members/page/2"

        at_once([machine.ensure for machine in machines for _ in range(THREADS)])

        assert site.counters.logins == 1 and site.counters.failed_logins == 0
        first = one_session(machines)
        assert [machine.generation for machine in machines] == [1] * MACHINES
        assert total(machines, "logins") == 1 and total(machines, "relogins") == 0
        assert all(page(member_page, machine.cookies) == (200, 1) for machine in machines)

        site.revoke_sessions()
        relogin_everywhere(machines, member_page)

        assert site.counters.revocations == 1
        assert site.counters.logins == 2 and site.counters.failed_logins == 0
        assert one_session(machines) != first
        assert [machine.generation for machine in machines] == [2] * MACHINES
        assert total(machines, "logins") == 2 and total(machines, "relogins") == 1
        assert total(machines, "logged_out_responses") == MACHINES * THREADS
        assert all(page(member_page, machine.cookies) == (200, 2) for machine in machines)


def test_the_board_holds_the_generation_and_session_cookies_only(cluster: Cluster) -> None:
    with PracticeSite(products=10, members=5) as site:
        machines = cluster.logins(practice_login(site))
        machines[0].ensure()
        stored = cluster.client().hgetall(cluster.keys.login(SPIDER))
    assert stored.keys() == {b"generation", b"cookies"} and stored[b"generation"] == b"1"
    cookies = json.loads(stored[b"cookies"])
    assert {cookie["name"] for cookie in cookies} == {"sessionid", "csrftoken"}
    assert b"demo-password" not in stored[b"cookies"]
    assert cluster.keys.login(SPIDER) == "{" + cluster.crawl + "}:login:" + SPIDER


def test_a_login_slower_than_the_lock_ttl_is_kept_locked_and_made_once(cluster: Cluster) -> None:
    # The page a login lands on takes 0.6 s, twice the lock's ttl: renewing keeps it locked.
    with PracticeSite(products=10, members=5, latency=0.6) as site:
        machines = cluster.logins(practice_login(site), lock_ttl=0.3)

        at_once([machine.ensure for machine in machines for _ in range(2)])

        assert site.counters.logins == 1
        one_session(machines)


def test_a_holder_that_died_holding_the_lock_delays_the_login_by_its_ttl(cluster: Cluster) -> None:
    with PracticeSite(products=10, members=5) as site:
        machines = cluster.logins(practice_login(site))
        assert cluster.board().try_lock("died-before-publishing", 0.5)
        started = time.monotonic()

        at_once([machine.ensure for machine in machines for _ in range(2)])

        assert time.monotonic() - started >= 0.45  # nobody took the lock before it lapsed
        assert site.counters.logins == 1
        assert [machine.generation for machine in machines] == [1] * MACHINES
        one_session(machines)


def test_a_refused_login_is_raised_again_without_trying_again(cluster: Cluster) -> None:
    with PracticeSite(products=10, members=5) as site:
        login = practice_login(site)
        wrong = dataclasses.replace(login, secrets={"username": "demo", "password": "wrong"})
        machine = cluster.logins(wrong)[0]
        for _ in range(2):
            with pytest.raises(LoginFailed, match=r"\$PRACTICE_PASSWORD"):
                machine.ensure()
        assert site.counters.failed_logins == 1 and site.counters.logins == 0
        board = cluster.board()
        assert board.current() is None
        assert board.try_lock("next", 1.0)  # the failed holder let the lock go


def test_only_the_holder_publishes_and_only_the_next_generation(cluster: Cluster) -> None:
    board, other = cluster.board(), cluster.board()
    cookies = [{"name": "sessionid", "value": "s1", "domain": "example.test", "path": "/", "secure": False,
                "expires": None, "rest": {"HttpOnly": None}}]
    later = [{**cookies[0], "value": "s2"}]

    assert not board.publish("a", 1, cookies)  # nobody holds the lock
    assert board.try_lock("a", 5.0)
    assert not other.try_lock("b", 5.0)
    assert not other.publish("b", 1, cookies)  # not the holder
    assert not board.publish("a", 2, cookies) and not board.publish("a", 0, cookies)  # not board + 1
    assert board.current() is None

    assert board.publish("a", 1, cookies)
    assert other.current() == (1, cookies)
    assert not board.publish("a", 1, later)  # the board is at 1 now

    assert not other.renew_lock("b", 5.0)
    other.unlock("b")
    assert not other.try_lock("b", 5.0)  # still a's
    assert board.renew_lock("a", 5.0)
    board.unlock("a")
    assert not board.publish("a", 2, later)  # no longer the holder
    assert other.current() == (1, cookies)
    assert other.try_lock("b", 5.0) and other.publish("b", 2, later)
    assert board.current() == (2, later)


# -- logins at Django -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def django_url() -> Iterator[str]:
    # Started as tests/test_django_login.py starts it; that module's fixture is its own.
    with serve("django_members.py", "--pages", "10") as url:
        yield url


def django(url: str, path: str) -> dict[str, object]:
    answer = requests.get(url + path, timeout=TIMEOUT)
    answer.raise_for_status()
    return answer.json()


def test_three_machines_at_django_cost_one_relogin_per_revocation(cluster: Cluster, django_url: str) -> None:
    django(django_url, "/reset/?revoke_every=0&pages=10")
    login = FormLogin(
        url=f"{django_url}/accounts/login/",
        fields={},
        secrets={"username": "demo", "password": "demo-password"},
        secret_sources={"username": "DJANGO_USER", "password": "DJANGO_PASSWORD"},
        csrf_field="csrfmiddlewaretoken",
        logged_out_url=f"{django_url}/accounts/login/",
        logged_out_statuses=frozenset({401, 403}),
        timeout=(TIMEOUT, TIMEOUT),
    )
    machines = cluster.logins(login)
    member_page = f"{django_url}/members/3/"

    at_once([machine.ensure for machine in machines for _ in range(THREADS)])
    assert django(django_url, "/stats/")["logins"] == 1
    first = one_session(machines)
    assert all(page(member_page, machine.cookies) == (200, 1) for machine in machines)

    django(django_url, "/revoke/")
    relogin_everywhere(machines, member_page)

    stats = django(django_url, "/stats/")
    assert (stats["logins"], stats["failed_logins"], stats["revocations"]) == (2, 0, 1), stats
    assert one_session(machines) != first
    assert [machine.generation for machine in machines] == [2] * MACHINES
    assert total(machines, "relogins") == 1
    assert all(page(member_page, machine.cookies) == (200, 2) for machine in machines)


# -- robots.txt -----------------------------------------------------------------------------------


def http_fetch(url: str) -> tuple[int, bytes]:
    """A real fetch, failing as the crawler's fetcher does when nothing answers."""
    try:
        answer = requests.get(url, timeout=TIMEOUT)
    except requests.RequestException as error:
        raise TransportError(f"cannot fetch {url}: {type(error).__name__}", Request(url)) from None
    return answer.status_code, answer.content


def test_robots_txt_is_fetched_once_for_every_thread_of_every_machine(cluster: Cluster) -> None:
    with PracticeSite(products=10) as site:
        site.robots.body, site.robots.delay = ROBOTS, 0.2  # the askers overlap the fetch
        url = f"{site.url}/robots.txt"
        machines = cluster.robots(http_fetch)

        answers = at_once([lambda machine=machine: machine(url) for machine in machines for _ in range(THREADS)])
        late = cluster.robots(http_fetch)[0](url)

        assert site.counters.hits("/robots.txt") == 1
        assert answers == [(200, ROBOTS.encode())] * (MACHINES * THREADS) and late == (200, ROBOTS.encode())
        assert total(machines, "robots:fetched") == 1


def test_an_answer_that_says_try_later_is_fetched_again(cluster: Cluster) -> None:
    with PracticeSite(products=10) as site:
        site.robots.body, site.robots.status = "busy", 503
        url = f"{site.url}/robots.txt"
        machine, other = cluster.robots(http_fetch)[:2]

        assert machine(url) == (503, b"busy") and other(url) == (503, b"busy")
        assert site.counters.hits("/robots.txt") == 2
        assert cluster.client().hget(cluster.keys.robots, url) is None

        site.robots.body, site.robots.status = ROBOTS, None
        assert machine(url) == (200, ROBOTS.encode()) and other(url) == (200, ROBOTS.encode())
        assert site.counters.hits("/robots.txt") == 3
        assert machine.stats.get("robots:fetched") + other.stats.get("robots:fetched") == 3


def test_a_fetch_that_fails_is_not_kept_and_lets_its_lock_go(cluster: Cluster) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/robots.txt"  # closed once the block ends
    machine = cluster.robots(http_fetch, lock_ttl=5.0)[0]
    started = time.monotonic()
    for _ in range(2):
        with pytest.raises(TransportError):
            machine(url)
    assert time.monotonic() - started < 2.5  # the second did not wait for the first one's lock
    assert machine.stats.get("robots:fetched") == 2
    assert cluster.client().hget(cluster.keys.robots, url) is None


def test_a_fetcher_that_died_holding_the_lock_delays_the_fetch_by_its_ttl(cluster: Cluster) -> None:
    with PracticeSite(products=10) as site:
        site.robots.body = ROBOTS
        url = f"{site.url}/robots.txt"
        machines = cluster.robots(http_fetch)
        assert cluster.client().set(cluster.keys.robots_lock(url), "died-while-fetching", nx=True, px=500)
        started = time.monotonic()

        answers = at_once([lambda machine=machine: machine(url) for machine in machines for _ in range(4)])

        assert time.monotonic() - started >= 0.45
        assert answers == [(200, ROBOTS.encode())] * (MACHINES * 4)
        assert site.counters.hits("/robots.txt") == 1
        assert total(machines, "robots:fetched") == 1


def test_with_the_server_out_of_reach_robots_txt_is_fetched_all_the_same(tmp_path) -> None:
    # robots.txt is public: a process that cannot ask the others fetches it itself, rather than
    # fail the request that needed it.
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    unreachable = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1, retry=Retry(NoBackoff(), 0))
    stats = Stats()
    with PracticeSite(products=10) as site:
        site.robots.body = ROBOTS
        answer = RedisRobotsFetch(unreachable, "nowhere", http_fetch, stats)(f"{site.url}/robots.txt")
        hits = site.counters.hits("/robots.txt")
    assert answer == (200, ROBOTS.encode()) and hits == 1 and stats.get("robots:fetched") == 1


def test_a_login_asked_for_while_the_server_restarts_waits_for_it(tmp_path) -> None:
    server = RedisServer(tmp_path).start()
    client = server.client()
    try:
        board = RedisLoginBoard(client, "restarting", SPIDER, wait_for_server=10)
        answers: list[object] = []
        asking = threading.Thread(target=lambda: (time.sleep(0.3), answers.append(board.try_lock("me", 5))))
        asking.start()
        server.restart(down_for=1.0, killed=True)  # the ask lands while the server is down
        asking.join(15)
    finally:
        client.close()
        server.stop()
    assert answers == [True]
