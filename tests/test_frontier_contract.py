"""The checkpoint contract (``crawler.frontier.base``): what every backend must do.

Every test runs once per backend, through the ``Store``/``Frontier``/``Backend`` protocols only:
no SQL, no looking at files. A new backend passes this suite by adding its name to ``BACKENDS``
and a way to open it in ``make_backend``.

Lease deadlines are real wall-clock time. A lease meant to expire gets ``SHORT_LEASE`` and the
test waits ``EXPIRY_WAIT``, well past it; a lease meant to stay gets ``LONG_LEASE``, so a slow
machine cannot make it expire.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import lease_from

from crawler.exceptions import CheckpointError
from crawler.frontier import (
    Backend, Committed, Completion, Entry, Frontier, FrontierCounts, Lease, SQLiteBackend, Store,
)
from crawler.frontier.base import Limits
from crawler.frontier.redis import RedisBackend
from crawler.items import RejectedItem
from crawler.request import Request

from redis_server import RedisServer


BACKENDS = ["sqlite", "redis"]
SPIDER = "books"
OWNER = "test:1"
HOST = "example.test"
BASE = f"http://{HOST}"
SHORT_LEASE = 0.2
EXPIRY_WAIT = 0.6
LONG_LEASE = 60.0


def make_backend(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> Backend:
    if kind == "sqlite":
        return SQLiteBackend(tmp_path / "state" / "checkpoint.db")
    if kind == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")  # started only if a redis test runs
        return RedisBackend(server.url, server.new_crawl())
    raise AssertionError(f"no such backend: {kind}")


@dataclass(frozen=True)
class StoreFactory:
    """Opens the backend under test as ``owner``, with leases that last ``lease_time``."""

    backend: Backend

    def __call__(self, owner: str = OWNER, *, lease_time: float = LONG_LEASE) -> Store:
        return self.backend.open(owner, lease_time=lease_time)


@pytest.fixture(params=BACKENDS)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    # Each test has a checkpoint of its own (a backend on a server clears it here after the test).
    backend = make_backend(request.param, tmp_path, request)
    yield StoreFactory(backend)
    backend.discard()


@pytest.fixture
def store(open_store: StoreFactory) -> Iterator[Store]:
    with open_store() as opened:
        yield opened


@pytest.fixture
def frontier(store: Store) -> Frontier:
    return store.frontier(SPIDER)


def entries(*paths: str, depth: int = 0, spider: str = SPIDER, **options: object) -> list[Entry]:
    return [Entry.of(spider, Request(BASE + path, **options), depth) for path in paths]  # type: ignore[arg-type]


def urls(leases: list[Lease]) -> list[str]:
    return [lease.request.url for lease in leases]


def item_texts(frontier: Frontier) -> list[str]:
    return [item.data for item in frontier.items_after(0, 100)]


def wait_for_expiry() -> None:
    time.sleep(EXPIRY_WAIT)


def reclaimed_lease(frontier: Frontier, path: str) -> Lease:
    """A lease of ``path`` that expired and was reclaimed: its holder no longer holds it."""
    frontier.add(entries(path))
    (lease,) = lease_from(frontier, 1)
    wait_for_expiry()
    assert frontier.reclaim_expired() == 1
    return lease


# -- add and dedupe -------------------------------------------------------------------------------


def test_add_returns_how_many_were_new(frontier: Frontier) -> None:
    assert frontier.add(entries("/a", "/b")) == 2
    assert frontier.add(entries("/b", "/c")) == 1
    assert frontier.counts() == FrontierCounts(queued=3)


@pytest.mark.parametrize(
    "duplicate",
    [
        "http://example.test/list?b=2&a=1",  # query reordered
        "http://example.test/list?a=1&b=2#reviews",  # fragment
        "http://example.test:80/list?a=1&b=2",  # default port
        "HTTP://EXAMPLE.TEST/list?a=1&b=2",  # scheme and host case
    ],
)
def test_same_page_written_differently_is_added_once(frontier: Frontier, duplicate: str) -> None:
    assert frontier.add([Entry.of(SPIDER, Request("http://example.test/list?a=1&b=2"), 0)]) == 1
    assert frontier.add([Entry.of(SPIDER, Request(duplicate), 0)]) == 0
    assert frontier.counts().queued == 1


def test_duplicates_within_one_batch_count_once(frontier: Frontier) -> None:
    assert frontier.add(entries("/a", "/a#x", "/a")) == 1
    assert frontier.counts().queued == 1


def test_different_method_or_body_is_a_different_request(frontier: Frontier) -> None:
    requests = [
        Request(BASE + "/form"),
        Request(BASE + "/form", method="POST", body=b"q=1"),
        Request(BASE + "/form", method="POST", body=b"q=2"),
    ]
    assert frontier.add([Entry.of(SPIDER, request, 0) for request in requests]) == 3


def test_dont_filter_adds_the_same_url_again(frontier: Frontier) -> None:
    frontier.add(entries("/a"))
    assert frontier.add(entries("/a", dont_filter=True)) == 1
    assert frontier.add(entries("/a", dont_filter=True)) == 1
    assert frontier.counts().queued == 3


def test_seen_set_is_per_spider(store: Store) -> None:
    books, films = store.frontier("books"), store.frontier("films")
    assert books.add(entries("/a", spider="books")) == 1
    assert films.add(entries("/a", spider="films")) == 1
    assert films.counts() == FrontierCounts(queued=1)


def test_a_done_request_is_still_seen(frontier: Frontier) -> None:
    frontier.add(entries("/a"))
    (lease,) = lease_from(frontier, 1)
    frontier.complete([Completion(lease, attempts=1)])
    assert frontier.add(entries("/a")) == 0


# -- leasing --------------------------------------------------------------------------------------


def test_lease_order_is_priority_first_then_fifo(frontier: Frontier) -> None:
    frontier.add(
        [
            Entry.of(SPIDER, Request(BASE + "/low-1", priority=-1), 0),
            Entry.of(SPIDER, Request(BASE + "/mid-1"), 0),
            Entry.of(SPIDER, Request(BASE + "/high-1", priority=5), 0),
            Entry.of(SPIDER, Request(BASE + "/mid-2"), 0),
            Entry.of(SPIDER, Request(BASE + "/high-2", priority=5), 0),
        ]
    )
    assert urls(lease_from(frontier, 3)) == [BASE + "/high-1", BASE + "/high-2", BASE + "/mid-1"]
    assert urls(lease_from(frontier, 10)) == [BASE + "/mid-2", BASE + "/low-1"]


def test_later_higher_priority_jumps_the_queue(frontier: Frontier) -> None:
    frontier.add(entries("/old-1", "/old-2"))
    frontier.add(entries("/urgent", priority=10))
    assert urls(lease_from(frontier, 1)) == [BASE + "/urgent"]


def test_a_leased_request_is_in_flight_and_never_leased_twice(frontier: Frontier) -> None:
    frontier.add(entries("/a", "/b", "/c"))
    assert len(lease_from(frontier, 2)) == 2
    assert frontier.counts() == FrontierCounts(queued=1, in_flight=2)
    assert urls(lease_from(frontier, 5)) == [BASE + "/c"]
    assert lease_from(frontier, 5) == []
    assert frontier.counts() == FrontierCounts(in_flight=3)


def test_lease_carries_depth_host_and_the_request(frontier: Frontier) -> None:
    request = Request(BASE + "/a", "parse_item", meta={"page": 2}, priority=1)
    entry = Entry.of(SPIDER, request, 3)
    frontier.add([entry])
    (lease,) = lease_from(frontier, 1)
    assert lease.request == request
    assert (lease.spider, lease.depth, lease.host, lease.fingerprint, lease.attempts) == (
        SPIDER, 3, HOST, entry.fingerprint, 0,
    )
    assert len(lease.fingerprint) == 16


def test_leased_request_comes_back_exactly_as_added(frontier: Frontier) -> None:
    request = Request(
        BASE + "/api", "parse_api", method="POST", body=b"\x01\x02", meta={"k": [1, 2]}, headers={"X": "y"}
    )
    frontier.add([Entry.of(SPIDER, request, 0)])
    (lease,) = lease_from(frontier, 1)
    assert lease.request == request
    assert isinstance(lease.request.body, bytes)


@pytest.mark.parametrize("limit", [0, -1])
def test_lease_with_no_room_takes_nothing(frontier: Frontier, limit: int) -> None:
    frontier.add(entries("/a"))
    assert lease_from(frontier, limit) == []
    assert frontier.counts().queued == 1


def test_leases_are_taken_per_host(frontier: Frontier) -> None:
    frontier.add([Entry.of(SPIDER, Request(f"http://{host}/{n}"), 0) for n in range(3) for host in ("a", "b:8080")])
    assert frontier.ready_hosts() == {"a": 3, "b:8080": 3}
    leases = frontier.lease({"a": 1, "b:8080": 2})
    assert sorted(urls(leases)) == ["http://a/0", "http://b:8080/0", "http://b:8080/1"]
    assert frontier.ready_hosts() == {"a": 2, "b:8080": 1}


# -- complete -------------------------------------------------------------------------------------


def test_complete_commits_items_rejects_and_children(frontier: Frontier) -> None:
    frontier.add(entries("/list"))
    (lease,) = lease_from(frontier, 1)
    committed = frontier.complete(
        [
            Completion(
                lease,
                attempts=2,
                children=entries("/item/1", "/item/2", depth=1),
                items=['{"n":1}', '{"n":2}'],
                rejected=[RejectedItem(BASE + "/list", "price: missing", '{"n":3}')],
            )
        ]
    )

    assert committed == Committed(recorded=1, stale=0)
    assert frontier.counts() == FrontierCounts(queued=2, done=1, items=2, rejected=1)
    assert item_texts(frontier) == ['{"n":1}', '{"n":2}']
    assert frontier.rejected(10) == [RejectedItem(BASE + "/list", "price: missing", '{"n":3}')]
    children = lease_from(frontier, 10)
    assert [(lease.request.url, lease.depth) for lease in children] == [(BASE + "/item/1", 1), (BASE + "/item/2", 1)]


def test_children_already_seen_are_not_added_again(frontier: Frontier) -> None:
    frontier.add(entries("/list", "/item/1"))
    (lease,) = lease_from(frontier, 1)
    frontier.complete([Completion(lease, 1, children=entries("/item/1", "/item/2", depth=1))])
    assert frontier.counts() == FrontierCounts(queued=2, done=1)


def test_complete_is_atomic(frontier: Frontier) -> None:
    """A batch whose last item cannot be stored commits nothing of the batch: not the first
    completion's item, nor its child, nor its state; the lease stays in flight to try again."""
    frontier.add(entries("/list"))
    (lease,) = lease_from(frontier, 1)
    good = Completion(lease, attempts=1, items=['"kept"'], children=entries("/child", depth=1))
    unstorable = Completion(lease, attempts=1, items=[None])  # type: ignore[list-item]
    with pytest.raises(CheckpointError):
        frontier.complete([good, unstorable])

    assert item_texts(frontier) == []
    assert frontier.add(entries("/child")) == 1  # the child was never seen
    # The lease is still held as handed out: the same work commits once it can be stored.
    assert frontier.complete([good]) == Committed(recorded=1)
    assert item_texts(frontier) == ['"kept"']


def test_a_failed_complete_leaves_counts_and_ready_hosts_as_they_were(frontier: Frontier) -> None:
    frontier.add(entries("/list"))
    (lease,) = lease_from(frontier, 1)
    before = frontier.counts(), frontier.ready_hosts()
    children = [Entry.of(SPIDER, Request("http://other.test/child"), 1)]
    with pytest.raises(CheckpointError):
        frontier.complete([Completion(lease, 1, items=[None], children=children)])  # type: ignore[list-item]

    assert (frontier.counts(), frontier.ready_hosts()) == before
    assert lease_from(frontier, 5) == []
    assert frontier.ready_hosts() == {}


def test_failed_requests_keep_their_error_attempts_and_request(frontier: Frontier) -> None:
    frontier.add(entries("/broken"))
    (lease,) = lease_from(frontier, 1)
    frontier.complete(
        [Completion(lease, attempts=4, error="HTTP 503", error_kind="HTTPStatusError", status=503, items=['{"x":1}'])]
    )

    assert frontier.counts() == FrontierCounts(failed=1)
    (failure,) = frontier.failed(10)
    assert (failure.url, failure.attempts, failure.error, failure.error_kind) == (
        BASE + "/broken", 4, "HTTP 503", "HTTPStatusError",
    )
    assert item_texts(frontier) == []  # a failed page's items are not committed
    assert frontier.add(entries("/broken")) == 0  # and it is still seen


def test_release_puts_leases_back_untouched(frontier: Frontier) -> None:
    frontier.add(entries("/a", "/b"))
    leases = lease_from(frontier, 2)
    assert frontier.release(leases) == 0

    assert frontier.counts() == FrontierCounts(queued=2)
    again = lease_from(frontier, 2)
    assert [lease.request for lease in again] == [lease.request for lease in leases]
    assert [lease.attempts for lease in again] == [0, 0]


def test_is_finished_when_nothing_is_queued_or_in_flight(frontier: Frontier) -> None:
    assert frontier.is_finished()
    frontier.add(entries("/a", "/b"))
    assert not frontier.is_finished()
    done, failed = lease_from(frontier, 2)
    assert not frontier.is_finished()
    frontier.complete([Completion(done, 1)])
    assert not frontier.is_finished()
    frontier.complete([Completion(failed, 1, error="HTTP 500")])
    assert frontier.is_finished()  # failed requests do not keep a crawl open


def test_items_after_pages_through_items_in_commit_order(frontier: Frontier) -> None:
    frontier.add(entries("/a", "/b"))
    first, second = lease_from(frontier, 2)
    frontier.complete([Completion(first, 1, items=['"a1"', '"a2"'])])
    frontier.complete([Completion(second, 1, items=['"b1"'])])

    page = frontier.items_after(0, 2)
    assert [item.data for item in page] == ['"a1"', '"a2"']
    rest = frontier.items_after(page[-1].id, 2)
    assert [item.data for item in rest] == ['"b1"']
    assert frontier.items_after(rest[-1].id, 2) == []


def test_state_is_kept_per_spider(store: Store) -> None:
    books, films = store.frontier("books"), store.frontier("films")
    assert books.get_state("export") is None
    books.set_state("export", "1")
    books.set_state("export", "2")
    assert books.get_state("export") == "2"
    assert films.get_state("export") is None


# -- retries and refusals -------------------------------------------------------------------------


def test_a_deferred_retry_waits_for_its_time(frontier: Frontier) -> None:
    frontier.add(entries("/later", "/now"))
    later, now = lease_from(frontier, 2)
    frontier.complete([Completion(later, 1, "HTTP 503", "HTTPStatusError", retry_at=time.time() + 3600, status=503)])
    assert frontier.counts() == FrontierCounts(queued=1, in_flight=1)
    assert lease_from(frontier, 5) == []  # not before its time
    assert frontier.ready_hosts() == {}  # and leasing does not ask again for the host meanwhile
    frontier.release([now])
    assert urls(lease_from(frontier, 5)) == [BASE + "/now"]


def test_a_deferred_retry_comes_back_with_the_attempts_it_spent(frontier: Frontier) -> None:
    frontier.add(entries("/flaky"))
    (first,) = lease_from(frontier, 1)
    frontier.complete([Completion(first, 1, "HTTP 503", "HTTPStatusError", retry_at=0.0)])
    (second,) = lease_from(frontier, 1)
    assert second.attempts == 1
    frontier.complete([Completion(second, 1, "HTTP 503", "HTTPStatusError")])
    (failure,) = frontier.failed(10)
    assert failure.attempts == 2


def test_a_refused_request_is_neither_done_nor_failed_and_stays_seen(frontier: Frontier) -> None:
    frontier.add(entries("/private"))
    (lease,) = lease_from(frontier, 1)
    frontier.complete([Completion(lease, 0, "disallowed by robots.txt", "RobotsDisallowed", refused=True)])
    assert frontier.counts() == FrontierCounts(refused=1)
    assert frontier.add(entries("/private")) == 0
    assert frontier.is_finished()
    assert frontier.retry_failed() == 0


def fail_three_ways(frontier: Frontier) -> None:
    """A 404, a 503 (priority 3, depth 2, on another host) and a timeout, all failed for good."""
    frontier.add(
        entries("/gone", "/slow")
        + [Entry.of(SPIDER, Request("http://other.test/down", priority=3), 2)]
    )
    by_url = {lease.request.url: lease for lease in lease_from(frontier, 5)}
    frontier.complete(
        [
            Completion(by_url[BASE + "/gone"], 1, "HTTP 404", "HTTPStatusError", status=404),
            Completion(by_url["http://other.test/down"], 3, "HTTP 503", "HTTPStatusError", status=503),
            Completion(by_url[BASE + "/slow"], 3, "read timeout", "ReadTimeout"),
        ]
    )


def test_failed_requests_are_counted_by_kind_and_status(frontier: Frontier) -> None:
    fail_three_ways(frontier)
    assert frontier.failed_kinds() == {"HTTPStatusError": 2, "ReadTimeout": 1}
    assert frontier.failed_statuses() == {404: 1, 503: 1}  # the timeout has no status


def test_retry_failed_by_status_queues_those_again_as_they_were(frontier: Frontier) -> None:
    """A retried request keeps its host, priority and depth, and starts a fresh retry budget."""
    fail_three_ways(frontier)
    frontier.add(entries("/low-priority"))  # queued on example.test at priority 0

    assert frontier.retry_failed(statuses=[503]) == 1
    assert frontier.counts() == FrontierCounts(queued=2, failed=2)
    assert frontier.failed_statuses() == {404: 1}
    assert frontier.failed_kinds() == {"HTTPStatusError": 1, "ReadTimeout": 1}
    assert frontier.ready_hosts() == {HOST: 1, "other.test": 1}
    (retried,) = frontier.lease({"other.test": 5})
    assert (retried.request.url, retried.request.priority, retried.depth, retried.attempts) == (
        "http://other.test/down", 3, 2, 0,
    )


def test_retry_failed_by_kind_and_all(frontier: Frontier) -> None:
    fail_three_ways(frontier)
    assert frontier.retry_failed(kinds=["ReadTimeout"]) == 1
    assert frontier.failed_kinds() == {"HTTPStatusError": 2}
    assert frontier.retry_failed(statuses=[500], kinds=["ConnectError"]) == 0
    assert frontier.retry_failed() == 2
    assert frontier.failed(10) == []
    assert frontier.counts() == FrontierCounts(queued=3)
    assert sorted(urls(lease_from(frontier, 5))) == sorted(["http://other.test/down", BASE + "/gone", BASE + "/slow"])


# -- reopening, resetting, claiming ---------------------------------------------------------------


def test_reopening_reclaims_what_was_in_flight(open_store: StoreFactory) -> None:
    """A closed store's owner is gone: whatever it held in flight is queued for the next one."""
    with open_store("first:1") as first:
        frontier = first.frontier(SPIDER)
        frontier.add(entries("/a", "/b", "/c"))
        done, abandoned = lease_from(frontier, 2)
        frontier.complete([Completion(done, 1, items=['{"n":1}'])])
        # The process "dies" holding `abandoned`.

    with open_store("second:2") as second:
        frontier = second.frontier(SPIDER)
        assert frontier.resume.reclaimed == 1
        assert frontier.resume.counts == FrontierCounts(queued=2, done=1, items=1)
        assert urls(lease_from(frontier, 10)) == [abandoned.request.url, BASE + "/c"]


def test_reopening_keeps_the_seen_set_and_fifo_order(open_store: StoreFactory) -> None:
    with open_store("first:1") as first:
        first.frontier(SPIDER).add(entries("/a", "/b"))
    with open_store("second:2") as second:
        frontier = second.frontier(SPIDER)
        assert frontier.resume.reclaimed == 0
        assert frontier.add(entries("/a", "/c")) == 1
        assert urls(lease_from(frontier, 10)) == [BASE + "/a", BASE + "/b", BASE + "/c"]


def test_reset_forgets_one_spider_only(store: Store) -> None:
    for spider in ("books", "films"):
        frontier = store.frontier(spider)
        frontier.add(entries("/a", spider=spider))
        (lease,) = lease_from(frontier, 1)
        frontier.complete([Completion(lease, 1, items=["1"], rejected=[RejectedItem("u", "e", "d")])])
        frontier.set_state("export", "x")

    store.reset("books")

    fresh = store.frontier("books")
    assert fresh.counts() == FrontierCounts()
    assert fresh.get_state("export") is None
    assert fresh.items_after(0, 10) == [] and fresh.rejected(10) == []
    assert fresh.add(entries("/a", spider="books")) == 1
    kept = store.frontier("films")
    assert kept.counts() == FrontierCounts(done=1, items=1, rejected=1)
    assert kept.get_state("export") == "x"


def test_a_checkpoint_is_claimed_by_one_set_of_spiders(open_store: StoreFactory) -> None:
    """Resuming one set of spiders from another set's checkpoint would mix two crawls."""
    with open_store() as store:
        store.claim_spider_set(["films", "books"])
        store.claim_spider_set(["books", "films"])  # the same set, in any order
    with open_store() as store:
        with pytest.raises(CheckpointError, match="books, films"):
            store.claim_spider_set(["books"])


def test_status_reads_counts_and_owners_while_a_crawl_runs(open_store: StoreFactory) -> None:
    with open_store("crawl:7") as store:
        frontier = store.frontier(SPIDER)
        frontier.add(entries("/a", "/b", "/c"))
        done, _held = lease_from(frontier, 2)
        frontier.complete([Completion(done, 1, items=['"x"'])])

        (status,) = open_store.backend.status({SPIDER: Limits(max_items=1)}).spiders
        assert status.spider == SPIDER
        assert status.counts == FrontierCounts(queued=1, in_flight=1, done=1, items=1)
        assert status.in_flight_owners == {"crawl:7": 1}
        assert not status.finished  # not seeded, so not finished even with its item cap reached
        assert status.last_activity is not None


# -- owned leases: tokens, deadlines, renewal, reclaiming -----------------------------------------


def test_each_lease_carries_a_token_of_its_own(frontier: Frontier) -> None:
    """The token tells a lease from a later lease of the same request."""
    frontier.add(entries("/a", "/b"))
    (first,) = lease_from(frontier, 1)
    (other,) = lease_from(frontier, 1)
    frontier.release([first])
    (again,) = lease_from(frontier, 1)
    assert again.fingerprint == first.fingerprint
    assert again.token != first.token
    assert other.token not in (first.token, again.token)


def test_nothing_is_reclaimed_before_its_deadline(open_store: StoreFactory) -> None:
    with open_store(lease_time=LONG_LEASE) as store:
        frontier = store.frontier(SPIDER)
        frontier.add(entries("/a", "/b"))
        leases = lease_from(frontier, 2)
        assert frontier.reclaim_expired() == 0
        assert frontier.counts() == FrontierCounts(in_flight=2)
        assert frontier.complete([Completion(lease, 1) for lease in leases]) == Committed(recorded=2)


def test_expired_leases_are_queued_again(open_store: StoreFactory) -> None:
    with open_store(lease_time=SHORT_LEASE) as store:
        frontier = store.frontier(SPIDER)
        frontier.add(entries("/a", "/b", "/c"))
        expired = lease_from(frontier, 2)
        wait_for_expiry()

        assert frontier.reclaim_expired() == 2
        assert frontier.counts() == FrontierCounts(queued=3)
        assert frontier.ready_hosts() == {HOST: 3}
        assert frontier.reclaim_expired() == 0  # once
        assert urls(lease_from(frontier, 5)) == urls(expired) + [BASE + "/c"]


def test_renewing_keeps_a_lease_past_its_first_deadline(open_store: StoreFactory) -> None:
    """The heartbeat: a lease renewed in time outlives its lease time, one that is not expires."""
    lease_time = 1.0
    with open_store(lease_time=lease_time) as store:
        frontier = store.frontier(SPIDER)
        frontier.add(entries("/slow", "/abandoned"))
        slow, abandoned = lease_from(frontier, 2)
        leased_at = time.monotonic()
        while time.monotonic() - leased_at <= 1.2 * lease_time:
            time.sleep(0.3)  # each renewal comes well before the deadline the last one set
            assert frontier.renew([slow]) == 1

        assert frontier.reclaim_expired() == 1  # `abandoned`, past its first deadline
        assert frontier.counts() == FrontierCounts(queued=1, in_flight=1)
        assert frontier.complete([Completion(slow, 1, items=['"slow"'])]) == Committed(recorded=1)
        assert item_texts(frontier) == ['"slow"']
        assert urls(lease_from(frontier, 5)) == [abandoned.request.url]


def test_renew_counts_the_leases_still_held(frontier: Frontier) -> None:
    frontier.add(entries("/a", "/b"))
    first, second = lease_from(frontier, 2)
    assert frontier.renew([first, second]) == 2
    frontier.complete([Completion(first, 1)])
    assert frontier.renew([first, second]) == 1  # a completed lease is not held any more
    assert frontier.renew([]) == 0


def test_a_completion_of_a_reclaimed_lease_is_refused(open_store: StoreFactory) -> None:
    """Whoever holds the request now commits it: nothing of a late completion is written,
    whatever its outcome."""
    with open_store(lease_time=SHORT_LEASE) as store:
        frontier = store.frontier(SPIDER)
        frontier.add(entries("/done", "/failed", "/deferred", "/refused"))
        done, failed, deferred, refused = lease_from(frontier, 4)
        wait_for_expiry()
        assert frontier.reclaim_expired() == 4

        committed = frontier.complete(
            [
                Completion(
                    done, 1, children=entries("/child", depth=1), items=['"late"'],
                    rejected=[RejectedItem(BASE + "/done", "bad", "{}")],
                ),
                Completion(failed, 3, "HTTP 500", "HTTPStatusError", status=500),
                Completion(deferred, 1, "HTTP 503", "HTTPStatusError", retry_at=time.time() + 3600, status=503),
                Completion(refused, 0, "disallowed by robots.txt", "RobotsDisallowed", refused=True),
            ]
        )

        assert committed == Committed(recorded=0, stale=4)
        assert frontier.counts() == FrontierCounts(queued=4)
        assert item_texts(frontier) == [] and frontier.rejected(10) == [] and frontier.failed(10) == []
        assert frontier.failed_kinds() == {} and frontier.failed_statuses() == {}
        again = lease_from(frontier, 10)  # all four ready now, none waiting for a retry time
        assert urls(again) == urls([done, failed, deferred, refused])
        assert [lease.attempts for lease in again] == [0, 0, 0, 0]
        assert frontier.add(entries("/child")) == 1  # the late completion's child was never seen


def test_only_the_new_lease_of_a_re_leased_request_commits(open_store: StoreFactory) -> None:
    with open_store(lease_time=SHORT_LEASE) as store:
        frontier = store.frontier(SPIDER)
        old = reclaimed_lease(frontier, "/a")
        (new,) = lease_from(frontier, 1)  # the same request, leased again by the same owner
        assert new.fingerprint == old.fingerprint and new.token != old.token

        assert frontier.complete([Completion(old, 1, items=['"old"'], children=entries("/x"))]) == Committed(stale=1)
        assert frontier.counts() == FrontierCounts(in_flight=1)
        assert item_texts(frontier) == []

        assert frontier.complete([Completion(new, 1, items=['"new"'])]) == Committed(recorded=1)
        assert frontier.counts() == FrontierCounts(done=1, items=1)
        assert item_texts(frontier) == ['"new"']
        assert frontier.add(entries("/x")) == 1


def test_a_batch_with_the_old_and_the_new_lease_of_a_request_commits_the_new_one_only(
    open_store: StoreFactory,
) -> None:
    with open_store(lease_time=SHORT_LEASE) as store:
        frontier = store.frontier(SPIDER)
        frontier.add(entries("/a", "/b"))
        old_a, old_b = lease_from(frontier, 2)
        wait_for_expiry()
        assert frontier.reclaim_expired() == 2
        new_a, new_b = lease_from(frontier, 2)

        old_first = frontier.complete([Completion(old_a, 1, items=['"old"']), Completion(new_a, 1, items=['"new a"'])])
        new_first = frontier.complete([Completion(new_b, 1, items=['"new b"']), Completion(old_b, 1, items=['"old"'])])

        assert (old_first, new_first) == (Committed(recorded=1, stale=1), Committed(recorded=1, stale=1))
        assert item_texts(frontier) == ['"new a"', '"new b"']
        assert frontier.counts() == FrontierCounts(done=2, items=2)


def test_releasing_a_reclaimed_lease_is_refused_and_counted(open_store: StoreFactory) -> None:
    with open_store(lease_time=SHORT_LEASE) as store:
        frontier = store.frontier(SPIDER)
        old = reclaimed_lease(frontier, "/a")

        assert frontier.release([old]) == 1
        assert frontier.counts() == FrontierCounts(queued=1)  # queued once, not twice
        (new,) = lease_from(frontier, 1)
        assert frontier.release([old]) == 1  # the new lease is not the old one's to give back
        assert frontier.counts() == FrontierCounts(in_flight=1)
        assert frontier.release([new]) == 0
        assert frontier.counts() == FrontierCounts(queued=1)


def test_renewing_a_reclaimed_lease_renews_nothing(open_store: StoreFactory) -> None:
    with open_store(lease_time=SHORT_LEASE) as store:
        frontier = store.frontier(SPIDER)
        old = reclaimed_lease(frontier, "/a")

        assert frontier.renew([old]) == 0
        assert frontier.counts() == FrontierCounts(queued=1)
        (new,) = lease_from(frontier, 1)
        assert frontier.renew([old]) == 0
        assert frontier.renew([old, new]) == 1
