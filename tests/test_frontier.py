"""The SQLite frontier contract, against real checkpoint files in tmp_path."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from helpers import lease_from

from crawler.exceptions import CheckpointError
from crawler.frontier import Checkpoint, Completion, FrontierCounts, Pending, SQLiteFrontier, State
from crawler.frontier.schema import APPLICATION_ID, SCHEMA_VERSION
from crawler.items import RejectedItem
from crawler.request import Request

BASE = "http://example.test"


@pytest.fixture
def checkpoint_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "checkpoint.db"


@pytest.fixture
def checkpoint(checkpoint_path: Path) -> Iterator[Checkpoint]:
    with Checkpoint(checkpoint_path, owner="test:1") as opened:
        yield opened


@pytest.fixture
def frontier(checkpoint: Checkpoint) -> SQLiteFrontier:
    return checkpoint.frontier("books")


def pending(*paths: str, depth: int = 0, **options: object) -> list[Pending]:
    return [Pending(Request(BASE + path, **options), depth) for path in paths]  # type: ignore[arg-type]


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read the checkpoint file with a separate connection: what is committed, not what is cached."""
    with closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


# -- add and dedupe -------------------------------------------------------------------------------


def test_add_returns_how_many_were_new(frontier: SQLiteFrontier) -> None:
    assert frontier.add(pending("/a", "/b")) == 2
    assert frontier.add(pending("/b", "/c")) == 1
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
def test_same_page_written_differently_is_added_once(frontier: SQLiteFrontier, duplicate: str) -> None:
    assert frontier.add([Pending(Request("http://example.test/list?a=1&b=2"), 0)]) == 1
    assert frontier.add([Pending(Request(duplicate), 0)]) == 0
    assert frontier.counts().queued == 1


def test_duplicates_within_one_batch_count_once(frontier: SQLiteFrontier) -> None:
    assert frontier.add(pending("/a", "/a#x", "/a")) == 1


def test_different_method_or_body_is_a_different_request(frontier: SQLiteFrontier) -> None:
    requests = [
        Request(BASE + "/form"),
        Request(BASE + "/form", method="POST", body=b"q=1"),
        Request(BASE + "/form", method="POST", body=b"q=2"),
    ]
    assert frontier.add([Pending(request, 0) for request in requests]) == 3


def test_dont_filter_adds_the_same_url_again(frontier: SQLiteFrontier) -> None:
    frontier.add(pending("/a"))
    assert frontier.add(pending("/a", dont_filter=True)) == 1
    assert frontier.add(pending("/a", dont_filter=True)) == 1
    assert frontier.counts().queued == 3


def test_seen_set_is_per_spider(checkpoint: Checkpoint) -> None:
    books, films = checkpoint.frontier("books"), checkpoint.frontier("films")
    assert books.add(pending("/a")) == 1
    assert films.add(pending("/a")) == 1


def test_a_done_request_is_still_seen(frontier: SQLiteFrontier) -> None:
    frontier.add(pending("/a"))
    (lease,) = lease_from(frontier, 1)
    frontier.complete([Completion(lease, attempts=1)])
    assert frontier.add(pending("/a")) == 0


def test_links_of_a_batch_that_was_rolled_back_are_queued_when_they_come_again(
    frontier: SQLiteFrontier, checkpoint: Checkpoint
) -> None:
    # The frontier remembers what the seen-set holds, to skip known links cheaply; what a
    # failed transaction added was never committed, and must not be remembered.
    checkpoint.db.execute(
        "CREATE TEMP TRIGGER refuse_boom BEFORE INSERT ON queue WHEN NEW.request LIKE '%boom%'"
        " BEGIN SELECT RAISE(ABORT, 'the disk is full'); END"
    )
    with pytest.raises(CheckpointError):
        frontier.add(pending("/a", "/b", "/boom"))
    checkpoint.db.execute("DROP TRIGGER refuse_boom")
    assert frontier.add(pending("/a", "/b")) == 2
    assert frontier.add(pending("/a", "/b")) == 0  # and now they are known
    assert frontier.counts() == FrontierCounts(queued=2)


# -- leases ---------------------------------------------------------------------------------------


def test_lease_order_is_priority_first_then_fifo(frontier: SQLiteFrontier) -> None:
    frontier.add(
        [
            Pending(Request(BASE + "/low-1", priority=-1), 0),
            Pending(Request(BASE + "/mid-1"), 0),
            Pending(Request(BASE + "/high-1", priority=5), 0),
            Pending(Request(BASE + "/mid-2"), 0),
            Pending(Request(BASE + "/high-2", priority=5), 0),
        ]
    )
    first = [lease.request.url for lease in lease_from(frontier, 3)]
    rest = [lease.request.url for lease in lease_from(frontier, 10)]
    assert first == [BASE + "/high-1", BASE + "/high-2", BASE + "/mid-1"]
    assert rest == [BASE + "/mid-2", BASE + "/low-1"]


def test_later_higher_priority_jumps_the_queue(frontier: SQLiteFrontier) -> None:
    frontier.add(pending("/old-1", "/old-2"))
    frontier.add(pending("/urgent", priority=10))
    assert [lease.request.url for lease in lease_from(frontier, 1)] == [BASE + "/urgent"]


def test_lease_marks_rows_in_flight_and_counts_them(frontier: SQLiteFrontier, checkpoint_path: Path) -> None:
    frontier.add(pending("/a", "/b", "/c"))
    leases = lease_from(frontier, 2)

    assert len(leases) == 2
    assert frontier.counts() == FrontierCounts(queued=1, in_flight=2)
    states = rows(checkpoint_path, "SELECT state, owner FROM requests ORDER BY seq")
    assert states == [(State.IN_FLIGHT, "test:1"), (State.IN_FLIGHT, "test:1"), (State.QUEUED, None)]
    assert lease_from(frontier, 5) != []  # the third one
    assert lease_from(frontier, 5) == []  # nothing is leased twice


def test_lease_carries_depth_and_the_request(frontier: SQLiteFrontier) -> None:
    request = Request(BASE + "/a", "parse_item", meta={"page": 2}, priority=1)
    frontier.add([Pending(request, depth=3)])
    (lease,) = lease_from(frontier, 1)
    assert lease.request == request
    assert lease.depth == 3
    assert len(lease.fingerprint) == 16


@pytest.mark.parametrize("limit", [0, -1])
def test_lease_with_no_room_takes_nothing(frontier: SQLiteFrontier, limit: int) -> None:
    frontier.add(pending("/a"))
    assert lease_from(frontier, limit) == []
    assert frontier.counts().queued == 1


# -- complete -------------------------------------------------------------------------------------


def test_complete_commits_items_and_children_and_drops_done_request(
    frontier: SQLiteFrontier, checkpoint_path: Path
) -> None:
    frontier.add(pending("/list"))
    (lease,) = lease_from(frontier, 1)
    frontier.complete(
        [
            Completion(
                lease,
                attempts=2,
                children=pending("/item/1", "/item/2", depth=1),
                items=['{"n":1}', '{"n":2}'],
                rejected=[RejectedItem(BASE + "/list", "price: missing", '{"n":3}')],
            )
        ]
    )

    assert frontier.counts() == FrontierCounts(queued=2, done=1, items=2, rejected=1)
    assert [item.data for item in frontier.items_after(0, 10)] == ['{"n":1}', '{"n":2}']
    assert frontier.rejected(10) == [RejectedItem(BASE + "/list", "price: missing", '{"n":3}')]
    # Committed to the file, and the done row keeps only its fingerprint and counters.
    assert rows(checkpoint_path, "SELECT state, attempts, request, owner, depth FROM requests WHERE state = 2") == [
        (State.DONE, 2, None, None, None)
    ]
    assert rows(checkpoint_path, "SELECT count(*) FROM queue") == [(2,)]  # the children only
    children = lease_from(frontier, 10)
    assert [(lease.request.url, lease.depth) for lease in children] == [
        (BASE + "/item/1", 1),
        (BASE + "/item/2", 1),
    ]


def test_children_already_seen_are_not_added_again(frontier: SQLiteFrontier) -> None:
    frontier.add(pending("/list", "/item/1"))
    leases = lease_from(frontier, 1)
    frontier.complete([Completion(leases[0], 1, children=pending("/item/1", "/item/2", depth=1))])
    assert frontier.counts().queued == 2


def test_complete_is_atomic(frontier: SQLiteFrontier, checkpoint_path: Path) -> None:
    frontier.add(pending("/list"))
    (lease,) = lease_from(frontier, 1)
    # The second completion's item cannot be stored (items.data is NOT NULL): nothing of the
    # batch may be committed, not even the first completion's item, child and state change.
    good = Completion(lease, attempts=1, items=["{}"], children=pending("/child"))
    bad = Completion(lease, attempts=1, items=[None])  # type: ignore[list-item]
    with pytest.raises(CheckpointError, match="NOT NULL"):
        frontier.complete([good, bad])

    assert rows(checkpoint_path, "SELECT count(*) FROM items") == [(0,)]
    assert rows(checkpoint_path, "SELECT state FROM requests") == [(State.IN_FLIGHT,)]  # no child row


def test_failed_rows_keep_their_error_attempts_and_request(frontier: SQLiteFrontier, checkpoint_path: Path) -> None:
    frontier.add(pending("/broken"))
    (lease,) = lease_from(frontier, 1)
    frontier.complete([Completion(lease, attempts=4, error="HTTP 503", items=['{"ignored":1}'])])

    assert frontier.counts() == FrontierCounts(failed=1)
    (failure,) = frontier.failed(10)
    assert (failure.url, failure.attempts, failure.error) == (BASE + "/broken", 4, "HTTP 503")
    assert frontier.items_after(0, 10) == []  # a failed page's items are not committed
    assert rows(checkpoint_path, "SELECT state FROM requests") == [(State.FAILED,)]


def test_release_puts_leases_back_untouched(frontier: SQLiteFrontier) -> None:
    frontier.add(pending("/a", "/b"))
    leases = lease_from(frontier, 2)
    frontier.release(leases)

    assert frontier.counts() == FrontierCounts(queued=2)
    again = lease_from(frontier, 2)
    assert [lease.request for lease in again] == [lease.request for lease in leases]


def test_is_finished_when_nothing_is_queued_or_in_flight(frontier: SQLiteFrontier) -> None:
    assert frontier.is_finished()
    frontier.add(pending("/a", "/b"))
    assert not frontier.is_finished()
    done, failed = lease_from(frontier, 2)
    assert not frontier.is_finished()
    frontier.complete([Completion(done, 1)])
    assert not frontier.is_finished()
    frontier.complete([Completion(failed, 1, error="HTTP 500")])
    assert frontier.is_finished()  # failed requests do not keep a crawl open


def test_items_after_pages_through_items_in_commit_order(frontier: SQLiteFrontier) -> None:
    frontier.add(pending("/a", "/b"))
    first, second = lease_from(frontier, 2)
    frontier.complete([Completion(first, 1, items=['"a1"', '"a2"'])])
    frontier.complete([Completion(second, 1, items=['"b1"'])])

    page = frontier.items_after(0, 2)
    assert [item.data for item in page] == ['"a1"', '"a2"']
    rest = frontier.items_after(page[-1].id, 2)
    assert [item.data for item in rest] == ['"b1"']
    assert frontier.items_after(rest[-1].id, 2) == []


def test_state_is_kept_per_spider(checkpoint: Checkpoint) -> None:
    books, films = checkpoint.frontier("books"), checkpoint.frontier("films")
    assert books.get_state("export") is None
    books.set_state("export", "1")
    books.set_state("export", "2")
    assert books.get_state("export") == "2"
    assert films.get_state("export") is None


# -- reopening ------------------------------------------------------------------------------------


def test_reopening_reclaims_what_was_in_flight(checkpoint_path: Path) -> None:
    with Checkpoint(checkpoint_path, owner="first:1") as first:
        frontier = first.frontier("books")
        frontier.add(pending("/a", "/b", "/c"))
        done, abandoned = lease_from(frontier, 2)
        frontier.complete([Completion(done, 1, items=['{"n":1}'])])
        # The process "dies" holding `abandoned`.

    with Checkpoint(checkpoint_path, owner="second:2") as second:
        frontier = second.frontier("books")
        assert frontier.resume.reclaimed == 1
        assert frontier.resume.counts == FrontierCounts(queued=2, done=1, items=1)
        urls = [lease.request.url for lease in lease_from(frontier, 10)]
        assert urls == [abandoned.request.url, BASE + "/c"]


def test_reopening_keeps_the_seen_set_and_fifo_order(checkpoint_path: Path) -> None:
    with Checkpoint(checkpoint_path, owner="first:1") as first:
        first.frontier("books").add(pending("/a", "/b"))
    with Checkpoint(checkpoint_path, owner="second:2") as second:
        frontier = second.frontier("books")
        assert frontier.resume.reclaimed == 0
        assert frontier.add(pending("/a", "/c")) == 1
        assert [lease.request.url for lease in lease_from(frontier, 10)] == [BASE + "/a", BASE + "/b", BASE + "/c"]


def test_reset_forgets_one_spider_only(checkpoint: Checkpoint) -> None:
    books, films = checkpoint.frontier("books"), checkpoint.frontier("films")
    for frontier in (books, films):
        frontier.add(pending("/a"))
        (lease,) = lease_from(frontier, 1)
        frontier.complete([Completion(lease, 1, items=["1"], rejected=[RejectedItem("u", "e", "d")])])
        frontier.set_state("export", "x")

    checkpoint.reset("books")

    fresh = checkpoint.frontier("books")
    assert fresh.counts() == FrontierCounts()
    assert fresh.get_state("export") is None
    assert fresh.add(pending("/a")) == 1
    kept = checkpoint.frontier("films")
    assert kept.counts() == FrontierCounts(done=1, items=1, rejected=1)
    assert kept.get_state("export") == "x"


# -- the file itself ------------------------------------------------------------------------------


def test_new_checkpoint_is_marked_as_ours(checkpoint: Checkpoint, checkpoint_path: Path) -> None:
    assert rows(checkpoint_path, "PRAGMA application_id") == [(APPLICATION_ID,)]
    assert rows(checkpoint_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert rows(checkpoint_path, "PRAGMA journal_mode") == [("wal",)]


def test_a_second_checkpoint_on_the_same_file_is_refused(checkpoint: Checkpoint, checkpoint_path: Path) -> None:
    with pytest.raises(CheckpointError, match="in use"):
        Checkpoint(checkpoint_path, owner="intruder:2")
    # The refusal did not disturb the owner.
    frontier = checkpoint.frontier("books")
    assert frontier.add(pending("/a")) == 1


def test_the_lock_is_released_on_close(checkpoint_path: Path) -> None:
    Checkpoint(checkpoint_path, owner="a:1").close()
    with Checkpoint(checkpoint_path, owner="b:2") as reopened:
        assert reopened.frontier("books").counts() == FrontierCounts()


def test_another_sqlite_database_is_refused_and_left_alone(checkpoint_path: Path) -> None:
    checkpoint_path.parent.mkdir(parents=True)
    with closing(sqlite3.connect(checkpoint_path)) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
        db.execute("INSERT INTO notes VALUES ('keep me')")
        db.commit()

    with pytest.raises(CheckpointError, match="not a crawler checkpoint"):
        Checkpoint(checkpoint_path, owner="test:1")

    assert rows(checkpoint_path, "SELECT text FROM notes") == [("keep me",)]
    assert rows(checkpoint_path, "PRAGMA journal_mode") == [("delete",)]
    # The failed open released its lock.
    with pytest.raises(CheckpointError, match="not a crawler checkpoint"):
        Checkpoint(checkpoint_path, owner="test:1")


def test_a_garbage_file_is_refused(checkpoint_path: Path) -> None:
    checkpoint_path.parent.mkdir(parents=True)
    checkpoint_path.write_bytes(b"this is not a database at all\n" * 200)
    with pytest.raises(CheckpointError, match="not a usable crawler checkpoint"):
        Checkpoint(checkpoint_path, owner="test:1")


def test_an_empty_file_becomes_a_new_checkpoint(checkpoint_path: Path) -> None:
    checkpoint_path.parent.mkdir(parents=True)
    checkpoint_path.touch()
    with Checkpoint(checkpoint_path, owner="test:1") as opened:
        assert opened.frontier("books").add(pending("/a")) == 1


def test_a_newer_schema_is_refused(checkpoint_path: Path) -> None:
    Checkpoint(checkpoint_path, owner="test:1").close()
    with closing(sqlite3.connect(checkpoint_path)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(CheckpointError, match="newer"):
        Checkpoint(checkpoint_path, owner="test:1")


def test_a_checkpoint_in_an_unwritable_place_is_a_checkpoint_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(CheckpointError, match="cannot open the checkpoint"):
        Checkpoint(blocker / "checkpoint.db", owner="test:1")


# -- requests as JSON -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "request_",
    [
        Request(BASE + "/plain"),
        Request(
            BASE + "/form",
            "parse_result",
            method="post",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            body=b"\x00\xffq=caf\xc3\xa9",
            meta={"page": 2, "tags": ["a", "b"], "nested": {"ok": True}, "name": "Café"},
            priority=-3,
            dont_filter=True,
            idempotent=True,
        ),
        Request(BASE + "/empty-body", method="PUT", body=b"", idempotent=False),
    ],
    ids=["defaults", "every-field", "empty-body"],
)
def test_request_round_trips_through_json(request_: Request) -> None:
    assert Request.from_json(request_.to_json()) == request_


def test_request_json_leaves_defaults_out_and_encodes_bodies() -> None:
    assert Request(BASE + "/").to_json() == '{"url":"http://example.test/"}'
    assert '"body":"AP8="' in Request(BASE + "/", method="POST", body=b"\x00\xff").to_json()


def test_request_normalises_callback_method_and_str_body() -> None:
    class Spiderish:
        def parse_page(self) -> None: ...

    request = Request(BASE + "/", Spiderish().parse_page, method="post", body="é")
    assert request.callback == "parse_page"
    assert request.method == "POST"
    assert request.body == "é".encode()


def test_request_with_meta_that_is_not_json_cannot_be_stored() -> None:
    with pytest.raises(TypeError):
        Request(BASE + "/", meta={"when": object()}).to_json()


def test_leased_request_comes_back_exactly_as_added(frontier: SQLiteFrontier) -> None:
    request = Request(BASE + "/api", "parse_api", method="POST", body=b"\x01\x02", meta={"k": [1, 2]}, headers={"X": "y"})
    frontier.add([Pending(request, 0)])
    (lease,) = lease_from(frontier, 1)
    assert lease.request == request
    assert isinstance(lease.request.body, bytes)


# -- retries wait in the queue; robots refusals --------------------------------------------------


def test_a_deferred_retry_waits_for_its_time_and_keeps_its_attempts(
    checkpoint_path: Path, frontier: SQLiteFrontier
) -> None:
    import time

    frontier.add(pending("/later", "/now"))
    later, now = lease_from(frontier, 2)
    frontier.complete([Completion(later, 1, "HTTP 503", "HTTPStatusError", retry_at=time.time() + 3600)])
    assert frontier.counts() == FrontierCounts(queued=1, in_flight=1)
    assert lease_from(frontier, 5) == []  # not before its time
    assert frontier.ready_hosts() == {}  # and leasing does not ask again for the host meanwhile
    frontier.release([now])
    assert [lease.request.url for lease in lease_from(frontier, 5)] == [BASE + "/now"]
    # The wait and the attempt are on disk: a crash does not reset them.
    assert rows(checkpoint_path, "SELECT attempts, not_before > strftime('%s','now') FROM queue WHERE request LIKE '%later%'") == [(1, 1)]
    assert rows(checkpoint_path, "SELECT attempts FROM seen ORDER BY attempts") == [(0,), (1,)]


def test_a_deferred_retry_comes_back_with_the_attempts_it_spent(frontier: SQLiteFrontier) -> None:
    frontier.add(pending("/flaky"))
    (first,) = lease_from(frontier, 1)
    frontier.complete([Completion(first, 1, "HTTP 503", "HTTPStatusError", retry_at=0.0)])
    (second,) = lease_from(frontier, 1)
    assert second.attempts == 1
    frontier.complete([Completion(second, 1, "HTTP 503", "HTTPStatusError")])
    [failure] = frontier.failed(10)
    assert failure.attempts == 2


def test_a_refused_request_is_neither_done_nor_failed_and_stays_seen(frontier: SQLiteFrontier) -> None:
    frontier.add(pending("/private"))
    (lease,) = lease_from(frontier, 1)
    frontier.complete([Completion(lease, 0, "disallowed by robots.txt", "RobotsDisallowed", refused=True)])
    assert frontier.counts() == FrontierCounts(refused=1)
    assert frontier.add(pending("/private")) == 0
    assert frontier.is_finished()
    assert frontier.retry_failed() == 0


def test_leases_are_taken_per_host(frontier: SQLiteFrontier) -> None:
    frontier.add([Pending(Request(f"http://{host}/{n}"), 0) for n in range(3) for host in ("a", "b:8080")])
    assert frontier.ready_hosts() == {"a": 3, "b:8080": 3}
    leases = frontier.lease({"a": 1, "b:8080": 2})
    assert sorted(lease.request.url for lease in leases) == ["http://a/0", "http://b:8080/0", "http://b:8080/1"]
    assert frontier.ready_hosts() == {"a": 2, "b:8080": 1}
