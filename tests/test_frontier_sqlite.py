"""What only the SQLite checkpoint does: its file, lock and schema, what its rows hold, its
migrations. The behaviour every backend shares is in test_frontier_contract.py."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from helpers import lease_from

from crawler.exceptions import CheckpointError, CheckpointInUse
from crawler.frontier import Checkpoint, Completion, Entry, FrontierCounts, SQLiteBackend, SQLiteFrontier, State
from crawler.frontier.schema import APPLICATION_ID, SCHEMA_VERSION
from crawler.request import Request

SPIDER = "books"
OWNER = "test:1"
BASE = "http://example.test"


@pytest.fixture
def checkpoint_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "checkpoint.db"


@pytest.fixture
def checkpoint(checkpoint_path: Path) -> Iterator[Checkpoint]:
    with Checkpoint(checkpoint_path, owner=OWNER) as opened:
        yield opened


@pytest.fixture
def frontier(checkpoint: Checkpoint) -> SQLiteFrontier:
    return checkpoint.frontier(SPIDER)


def entries(*paths: str, depth: int = 0, **options: object) -> list[Entry]:
    return [Entry.of(SPIDER, Request(BASE + path, **options), depth) for path in paths]  # type: ignore[arg-type]


def rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    """Read the checkpoint file with a separate connection: what is committed, not what is cached."""
    with closing(sqlite3.connect(path)) as db:
        return db.execute(sql).fetchall()


# -- what the rows hold ---------------------------------------------------------------------------


def test_a_lease_marks_its_row_with_owner_token_and_deadline(frontier: SQLiteFrontier, checkpoint_path: Path) -> None:
    frontier.add(entries("/a", "/b", "/c"))
    before = time.time()
    first, second = lease_from(frontier, 2)

    assert rows(checkpoint_path, "SELECT state, owner FROM requests ORDER BY seq") == [
        (State.IN_FLIGHT, OWNER), (State.IN_FLIGHT, OWNER), (State.QUEUED, None),
    ]
    leased = rows(
        checkpoint_path, "SELECT seq, lease_token, lease_until FROM queue WHERE owner IS NOT NULL ORDER BY seq"
    )
    assert [(seq, token) for seq, token, _ in leased] == [(first.entry, first.token), (second.entry, second.token)]
    assert all(before + 59 < until < time.time() + 61 for _, _, until in leased)  # the default 60 s lease


def test_reclaiming_and_releasing_clear_the_lease_columns(checkpoint_path: Path) -> None:
    with Checkpoint(checkpoint_path, OWNER, lease_time=0.2) as checkpoint:
        frontier = checkpoint.frontier(SPIDER)
        frontier.add(entries("/a", "/b"))
        lease_from(frontier, 2)
        time.sleep(0.6)
        assert frontier.reclaim_expired() == 2
        assert rows(checkpoint_path, "SELECT owner, lease_token, lease_until FROM queue") == [(None, None, None)] * 2
        assert frontier.release(lease_from(frontier, 2)) == 0
        assert rows(checkpoint_path, "SELECT owner, lease_token, lease_until FROM queue") == [(None, None, None)] * 2


def test_renewing_moves_the_deadline_on_disk(checkpoint_path: Path) -> None:
    with Checkpoint(checkpoint_path, OWNER, lease_time=30.0) as checkpoint:
        frontier = checkpoint.frontier(SPIDER)
        frontier.add(entries("/a"))
        (lease,) = lease_from(frontier, 1)
        [(first,)] = rows(checkpoint_path, "SELECT lease_until FROM queue")
        time.sleep(0.05)
        assert frontier.renew([lease]) == 1
        [(renewed,)] = rows(checkpoint_path, "SELECT lease_until FROM queue")
        assert renewed > first


def test_a_done_request_keeps_only_its_fingerprint_and_counters(
    frontier: SQLiteFrontier, checkpoint_path: Path
) -> None:
    frontier.add(entries("/list"))
    (lease,) = lease_from(frontier, 1)
    frontier.complete([Completion(lease, attempts=2, children=entries("/item/1", "/item/2", depth=1), items=["{}"])])

    assert rows(checkpoint_path, "SELECT state, attempts, request, owner, depth FROM requests WHERE state = 2") == [
        (State.DONE, 2, None, None, None)
    ]
    assert rows(checkpoint_path, "SELECT count(*) FROM queue") == [(2,)]  # the children only


def test_a_rolled_back_complete_leaves_the_file_as_it_was(frontier: SQLiteFrontier, checkpoint_path: Path) -> None:
    frontier.add(entries("/list"))
    (lease,) = lease_from(frontier, 1)
    good = Completion(lease, attempts=1, items=["{}"], children=entries("/child"))
    bad = Completion(lease, attempts=1, items=[None])  # type: ignore[list-item]  # items.data is NOT NULL
    with pytest.raises(CheckpointError, match="NOT NULL"):
        frontier.complete([good, bad])

    assert rows(checkpoint_path, "SELECT count(*) FROM items") == [(0,)]
    assert rows(checkpoint_path, "SELECT state, owner FROM requests") == [(State.IN_FLIGHT, OWNER)]  # no child row


def test_a_failed_request_keeps_what_retry_failed_needs_in_its_seen_row(
    frontier: SQLiteFrontier, checkpoint_path: Path
) -> None:
    frontier.add([Entry.of(SPIDER, Request("http://Shop.test:8080/broken", priority=4), 2)])
    (lease,) = lease_from(frontier, 1)
    frontier.complete([Completion(lease, 4, "HTTP 503", "HTTPStatusError", status=503)])

    assert rows(checkpoint_path, "SELECT count(*) FROM queue") == [(0,)]
    assert rows(
        checkpoint_path, "SELECT state, attempts, error, error_kind, error_status, depth, host, priority FROM seen"
    ) == [(State.FAILED, 4, "HTTP 503", "HTTPStatusError", 503, 2, "shop.test:8080", 4)]
    assert rows(checkpoint_path, "SELECT request FROM seen") == [(lease.data,)]


def test_a_deferred_retry_keeps_its_wait_and_attempts_on_disk(
    frontier: SQLiteFrontier, checkpoint_path: Path
) -> None:
    """A crash does not reset a retry's wait or the tries it spent."""
    frontier.add(entries("/later", "/now"))
    later, _now = lease_from(frontier, 2)
    frontier.complete([Completion(later, 1, "HTTP 503", "HTTPStatusError", retry_at=time.time() + 3600)])
    assert rows(
        checkpoint_path,
        "SELECT attempts, not_before > strftime('%s','now'), owner FROM queue WHERE request LIKE '%later%'",
    ) == [(1, 1, None)]
    assert rows(checkpoint_path, "SELECT attempts FROM seen ORDER BY attempts") == [(0,), (1,)]


def test_links_of_an_add_that_was_rolled_back_are_queued_when_they_come_again(
    frontier: SQLiteFrontier, checkpoint: Checkpoint
) -> None:
    """A failed add leaves nothing behind, in the file or in the frontier, that would make the
    same links look seen."""
    checkpoint.db.execute(
        "CREATE TEMP TRIGGER refuse_boom BEFORE INSERT ON queue WHEN NEW.request LIKE '%boom%'"
        " BEGIN SELECT RAISE(ABORT, 'the disk is full'); END"
    )
    with pytest.raises(CheckpointError, match="the disk is full"):
        frontier.add(entries("/a", "/b", "/boom"))
    checkpoint.db.execute("DROP TRIGGER refuse_boom")
    assert frontier.counts() == FrontierCounts()
    assert frontier.add(entries("/a", "/b")) == 2
    assert frontier.add(entries("/a", "/b")) == 0
    assert frontier.counts() == FrontierCounts(queued=2)


# -- the file itself ------------------------------------------------------------------------------


def test_new_checkpoint_is_marked_as_ours(checkpoint: Checkpoint, checkpoint_path: Path) -> None:
    assert rows(checkpoint_path, "PRAGMA application_id") == [(APPLICATION_ID,)]
    assert rows(checkpoint_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert rows(checkpoint_path, "PRAGMA journal_mode") == [("wal",)]


def test_a_second_checkpoint_on_the_same_file_is_refused(checkpoint: Checkpoint, checkpoint_path: Path) -> None:
    with pytest.raises(CheckpointInUse, match="in use"):
        Checkpoint(checkpoint_path, owner="intruder:2")
    # The refusal did not disturb the owner.
    assert checkpoint.frontier(SPIDER).add(entries("/a")) == 1


def test_the_lock_is_released_on_close(checkpoint_path: Path) -> None:
    Checkpoint(checkpoint_path, owner="a:1").close()
    with Checkpoint(checkpoint_path, owner="b:2") as reopened:
        assert reopened.frontier(SPIDER).counts() == FrontierCounts()


def test_status_names_the_owner_of_a_running_crawl(checkpoint_path: Path) -> None:
    backend = SQLiteBackend(checkpoint_path)
    with backend.open("crawl:7", lease_time=60.0):
        assert backend.status({}).running == "crawl:7"
    assert backend.status({}).running is None


def test_discard_removes_the_file_so_the_next_open_starts_over(checkpoint_path: Path) -> None:
    checkpoint_path.parent.mkdir(parents=True)
    checkpoint_path.write_bytes(b"not ours")
    backend = SQLiteBackend(checkpoint_path)
    backend.discard()
    assert not checkpoint_path.exists()
    with backend.open(OWNER, lease_time=60.0) as store:
        assert store.frontier(SPIDER).add(entries("/a")) == 1


def test_another_sqlite_database_is_refused_and_left_alone(checkpoint_path: Path) -> None:
    checkpoint_path.parent.mkdir(parents=True)
    with closing(sqlite3.connect(checkpoint_path)) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
        db.execute("INSERT INTO notes VALUES ('keep me')")
        db.commit()

    with pytest.raises(CheckpointError, match="not a crawler checkpoint"):
        Checkpoint(checkpoint_path, owner=OWNER)

    assert rows(checkpoint_path, "SELECT text FROM notes") == [("keep me",)]
    assert rows(checkpoint_path, "PRAGMA journal_mode") == [("delete",)]
    # The failed open released its lock.
    with pytest.raises(CheckpointError, match="not a crawler checkpoint"):
        Checkpoint(checkpoint_path, owner=OWNER)


def test_a_garbage_file_is_refused(checkpoint_path: Path) -> None:
    checkpoint_path.parent.mkdir(parents=True)
    checkpoint_path.write_bytes(b"this is not a database at all\n" * 200)
    with pytest.raises(CheckpointError, match="not a usable crawler checkpoint"):
        Checkpoint(checkpoint_path, owner=OWNER)


def test_an_empty_file_becomes_a_new_checkpoint(checkpoint_path: Path) -> None:
    checkpoint_path.parent.mkdir(parents=True)
    checkpoint_path.touch()
    with Checkpoint(checkpoint_path, owner=OWNER) as opened:
        assert opened.frontier(SPIDER).add(entries("/a")) == 1


def test_a_newer_schema_is_refused(checkpoint_path: Path) -> None:
    Checkpoint(checkpoint_path, owner=OWNER).close()
    with closing(sqlite3.connect(checkpoint_path)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(CheckpointError, match="newer"):
        Checkpoint(checkpoint_path, owner=OWNER)


def test_a_checkpoint_in_an_unwritable_place_is_a_checkpoint_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(CheckpointError, match="cannot open the checkpoint"):
        Checkpoint(blocker / "checkpoint.db", owner=OWNER)


# -- migration from schema 5 ----------------------------------------------------------------------

# A schema-5 file as that version wrote it: no lease token or deadline on queue rows, and a
# failed request's host and priority only inside its JSON.
SCHEMA_5 = """
PRAGMA auto_vacuum = INCREMENTAL;
PRAGMA application_id = 1129464151;
PRAGMA user_version = 5;
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE spiders (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE items (id INTEGER PRIMARY KEY, spider INTEGER NOT NULL, fingerprint BLOB NOT NULL, data TEXT NOT NULL);
CREATE INDEX items_by_spider ON items (spider, id);
CREATE TABLE rejected (id INTEGER PRIMARY KEY, spider INTEGER NOT NULL, url TEXT NOT NULL, error TEXT NOT NULL,
                       data TEXT NOT NULL);
CREATE TABLE seen (fingerprint BLOB PRIMARY KEY, spider INTEGER NOT NULL, state INTEGER NOT NULL,
                   attempts INTEGER NOT NULL DEFAULT 0, error TEXT, error_kind TEXT, request TEXT, depth INTEGER,
                   error_status INTEGER) WITHOUT ROWID;
CREATE INDEX seen_failed ON seen (spider) WHERE state = 3;
CREATE TABLE queue (seq INTEGER PRIMARY KEY, spider INTEGER NOT NULL, fingerprint BLOB NOT NULL,
                    priority INTEGER NOT NULL, depth INTEGER NOT NULL, owner TEXT, request TEXT NOT NULL,
                    host TEXT NOT NULL DEFAULT '', not_before REAL NOT NULL DEFAULT 0,
                    attempts INTEGER NOT NULL DEFAULT 0);
CREATE INDEX queue_ready ON queue (spider, host, priority DESC, seq) WHERE owner IS NULL;
CREATE INDEX queue_leased ON queue (spider, owner) WHERE owner IS NOT NULL;
CREATE VIEW requests AS
SELECT seen.fingerprint, seen.spider, queue.seq,
       CASE WHEN queue.owner IS NOT NULL THEN 1 ELSE seen.state END AS state,
       queue.priority, coalesce(queue.depth, seen.depth) AS depth, seen.attempts, queue.owner,
       coalesce(queue.request, seen.request) AS request, seen.error, seen.error_kind, seen.error_status
FROM seen LEFT JOIN queue ON queue.fingerprint = seen.fingerprint;
INSERT INTO spiders VALUES (1, 'old');
INSERT INTO seen (fingerprint, spider, state, attempts, error, error_kind, request, depth, error_status) VALUES
    (x'01', 1, 0, 0, NULL, NULL, NULL, NULL, NULL),
    (x'02', 1, 0, 0, NULL, NULL, NULL, NULL, NULL),
    (x'03', 1, 3, 4, 'HTTP 503', 'HTTPStatusError', '{"url":"https://Shop.example:8443/down","priority":5}', 2, 503),
    (x'04', 1, 3, 1, 'HTTP 404', 'HTTPStatusError', '{"url":"http://other.example/gone"}', 1, 404);
INSERT INTO queue (spider, fingerprint, priority, depth, owner, request, host) VALUES
    (1, x'01', 0, 1, NULL, '{"url":"https://shop.example:8443/queued"}', 'shop.example:8443'),
    (1, x'02', 0, 1, 'dead:1', '{"url":"https://shop.example:8443/in-flight"}', 'shop.example:8443');
"""


def test_a_checkpoint_from_schema_5_is_migrated_and_retries_its_failures_on_their_host(tmp_path: Path) -> None:
    """The failed request comes back with the host and priority schema 6 reads from its seen row."""
    path = tmp_path / "checkpoint.db"
    with closing(sqlite3.connect(path)) as db:
        db.executescript(SCHEMA_5)

    with Checkpoint(path, OWNER) as checkpoint:
        frontier = checkpoint.frontier("old")
        assert frontier.resume.reclaimed == 1  # the dead process's lease came back
        assert frontier.counts() == FrontierCounts(queued=2, failed=2)
        assert rows(path, "SELECT host, priority FROM seen WHERE state = 3 ORDER BY fingerprint") == [
            ("shop.example:8443", 5), ("other.example", 0),
        ]

        assert frontier.retry_failed(statuses=[503]) == 1
        assert frontier.failed_statuses() == {404: 1}
        assert frontier.ready_hosts() == {"shop.example:8443": 3}
        leases = frontier.lease({"shop.example:8443": 5})
        assert [(lease.request.url, lease.host, lease.depth) for lease in leases] == [
            ("https://Shop.example:8443/down", "shop.example:8443", 2),  # priority 5 first
            ("https://shop.example:8443/queued", "shop.example:8443", 1),
            ("https://shop.example:8443/in-flight", "shop.example:8443", 1),
        ]
        assert all(lease.token for lease in leases)
        (version,) = checkpoint.db.execute("PRAGMA user_version").fetchone()
    assert version == SCHEMA_VERSION == 6


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


def test_an_entry_stores_the_request_json_as_given(frontier: SQLiteFrontier, checkpoint_path: Path) -> None:
    request = Request(BASE + "/a", "parse_item", meta={"k": 1})
    frontier.add([Entry.of(SPIDER, request, 0)])
    assert rows(checkpoint_path, "SELECT request FROM queue") == [(request.to_json(),)]


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
