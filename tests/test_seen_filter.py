"""SeenFilter: links the checkpoint already holds, dropped in memory before they reach it.

It must only ever hold what a commit made durable: a link remembered from a batch that was
rolled back (or refused as stale) would be dropped every time it came again, and never crawled.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest

from crawler.engine import Crawl
from crawler.exceptions import CheckpointError
from crawler.delivery import ItemFeed
from crawler.exporters import JsonLinesFormat, OutputFile
from crawler.frontier import Checkpoint, Completion, Entry, FrontierCounts, Lease
from crawler.request import Request
from crawler.seen import SeenFilter
from crawler.spider import Spider
from crawler.stats import Stats

SPIDER = "books"
BASE = "http://example.test"


# -- the filter on its own ------------------------------------------------------------------------


def test_a_fingerprint_is_known_once_committed() -> None:
    seen = SeenFilter(limit=10)
    assert b"a" not in seen
    seen.committed(iter([b"a", b"b"]))  # the engine passes generators
    assert b"a" in seen and b"b" in seen and b"c" not in seen
    assert len(seen) == 2


def test_the_filter_fills_up_to_its_limit() -> None:
    seen = SeenFilter(limit=3)
    seen.committed([b"1", b"2"])
    seen.committed([b"3"])
    assert len(seen) == 3
    assert all(fingerprint in seen for fingerprint in (b"1", b"2", b"3"))


def test_past_its_limit_the_filter_starts_over_with_the_newest() -> None:
    """Memory stays bounded; what is forgotten only costs a lookup in the backend."""
    seen = SeenFilter(limit=3)
    seen.committed([b"1", b"2"])
    seen.committed([b"3", b"4"])
    assert len(seen) == 2
    assert b"3" in seen and b"4" in seen
    assert b"1" not in seen and b"2" not in seen


# -- the engine remembers a link only once its commit succeeded -----------------------------------


class Books(Spider):
    name = SPIDER
    start_urls = (BASE + "/start-1", BASE + "/start-2")


@pytest.fixture
def checkpoint_path(tmp_path: Path) -> Path:
    return tmp_path / "checkpoint.db"


@contextmanager
def crawl_of_books(checkpoint_path: Path, tmp_path: Path, *, lease_time: float = 60.0) -> Iterator[Crawl]:
    """A crawl of Books as the runner wires one, over a real checkpoint file."""
    with Checkpoint(checkpoint_path, "test:1", lease_time=lease_time) as checkpoint:
        frontier = checkpoint.frontier(SPIDER)
        output = ItemFeed(frontier, OutputFile(tmp_path / "books.jsonl", frontier, JsonLinesFormat()))
        try:
            yield Crawl(Books(), frontier, output, Stats(), seen=SeenFilter())
        finally:
            output.close()


@pytest.fixture
def crawl(checkpoint_path: Path, tmp_path: Path) -> Iterator[Crawl]:
    with crawl_of_books(checkpoint_path, tmp_path) as opened:
        yield opened


def refuse(path: Path, table: str) -> None:
    """From outside the crawl, make every insert into ``table`` fail (as a full disk would)."""
    with closing(sqlite3.connect(path)) as db:
        db.execute(
            f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} BEGIN SELECT RAISE(ABORT, 'disk full'); END"
        )
        db.commit()


def accept(path: Path, table: str) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.execute(f"DROP TRIGGER refuse_{table}")
        db.commit()


def lease_out(crawl: Crawl) -> list[Lease]:
    """Lease the crawl's queued work as the engine does, recording it as out."""
    return crawl.lease({host: 10 for host in crawl.frontier.ready_hosts()})


def links(crawl: Crawl, depth: int, *paths: str) -> list[Entry]:
    """A page's links, as the processor hands them on: those the filter does not know."""
    found = [Entry.of(SPIDER, Request(BASE + path), depth) for path in paths]
    return [entry for entry in found if entry.fingerprint not in crawl.seen]


def commit(crawl: Crawl, *completions: Completion) -> None:
    """What the workers handed back, committed as the engine does."""
    crawl.commit([(completion.lease, completion) for completion in completions])


def fingerprints(*paths: str) -> list[bytes]:
    return [Entry.of(SPIDER, Request(BASE + path), 0).fingerprint for path in paths]


def test_start_requests_are_remembered_only_once_queued(crawl: Crawl, checkpoint_path: Path) -> None:
    refuse(checkpoint_path, "queue")
    with pytest.raises(CheckpointError, match="disk full"):
        crawl.seed()
    assert not any(fingerprint in crawl.seen for fingerprint in fingerprints("/start-1", "/start-2"))

    accept(checkpoint_path, "queue")
    crawl.seed()  # the next try queues them: nothing remembered them as seen
    assert crawl.frontier.counts() == FrontierCounts(queued=2)
    assert all(fingerprint in crawl.seen for fingerprint in fingerprints("/start-1", "/start-2"))


def test_links_of_a_batch_whose_commit_failed_are_queued_when_they_come_again(
    crawl: Crawl, checkpoint_path: Path
) -> None:
    crawl.seed()
    first, second = lease_out(crawl)

    refuse(checkpoint_path, "items")  # the page's children are written, then rolled back with it
    with pytest.raises(CheckpointError, match="disk full"):
        commit(crawl, Completion(first, 1, items=['{"page":1}'], children=links(crawl, 1, "/item/1", "/item/2")))
    assert not any(fingerprint in crawl.seen for fingerprint in fingerprints("/item/1", "/item/2"))

    accept(checkpoint_path, "items")
    # Another page links to the same items: the filter lets them through, and they are queued.
    again = links(crawl, 1, "/item/1", "/item/2")
    assert len(again) == 2
    commit(crawl, Completion(second, 1, items=['{"page":2}'], children=again))
    assert all(fingerprint in crawl.seen for fingerprint in fingerprints("/item/1", "/item/2"))
    assert links(crawl, 1, "/item/1", "/item/2") == []  # known now: dropped before the backend

    # On disk: the items are queued, and the page whose commit failed is still in flight.
    with closing(sqlite3.connect(checkpoint_path)) as db:
        queue = db.execute("SELECT request, owner FROM queue ORDER BY seq").fetchall()
        (items,) = db.execute("SELECT count(*) FROM items").fetchone()
    assert queue == [
        (first.data, "test:1"),
        (Request(BASE + "/item/1").to_json(), None),
        (Request(BASE + "/item/2").to_json(), None),
    ]
    assert items == 1


def test_links_of_a_completion_refused_as_stale_are_not_remembered(checkpoint_path: Path, tmp_path: Path) -> None:
    """The lease expired and was reclaimed: its result is dropped, children and all."""
    with crawl_of_books(checkpoint_path, tmp_path, lease_time=0.2) as crawl:
        crawl.seed()
        late, _ = lease_out(crawl)
        time.sleep(0.6)
        assert crawl.frontier.reclaim_expired() == 2  # as another engine's heartbeat would

        commit(crawl, Completion(late, 1, items=['"late"'], children=links(crawl, 1, "/item/1")))
        assert crawl.stats.snapshot().get("stale_completions") == 1
        assert fingerprints("/item/1")[0] not in crawl.seen
        assert crawl.frontier.counts() == FrontierCounts(queued=2)
        assert links(crawl, 1, "/item/1") != []  # when the page is crawled again, its link goes on
