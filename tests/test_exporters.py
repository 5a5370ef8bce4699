"""OutputFile: the output holds exactly the committed items, across resumes and crashes."""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import lease_from

from crawler.delivery import ItemFeed
from crawler.exporters import CsvFormat, JsonArrayFormat, JsonLinesFormat, OutputFile
from crawler.frontier import Checkpoint, Completion, Entry, SQLiteFrontier
from crawler.request import Request


@pytest.fixture
def checkpoint(tmp_path: Path) -> Iterator[Checkpoint]:
    with Checkpoint(tmp_path / "checkpoint.db", owner="test:1") as opened:
        yield opened


@pytest.fixture
def frontier(checkpoint: Checkpoint) -> SQLiteFrontier:
    return checkpoint.frontier("books")


@pytest.fixture
def out_path(tmp_path: Path) -> Path:
    return tmp_path / "output" / "books.jsonl"


_page_numbers = itertools.count(1)


def commit(frontier: SQLiteFrontier, *items: dict[str, Any]) -> None:
    """Crawl one made-up page whose callback yielded ``items``."""
    frontier.add([Entry.of(frontier.spider, Request(f"http://example.test/page/{next(_page_numbers)}"), 0)])
    (lease,) = lease_from(frontier, 1)
    frontier.complete([Completion(lease, 1, items=[json.dumps(item) for item in items])])


def sync_once(path: Path, frontier: SQLiteFrontier, item_format: Any = None) -> int:
    """Open the output as a (re)started run would, sync it, close it."""
    output = ItemFeed(frontier, OutputFile(path, frontier, item_format or JsonLinesFormat()))
    try:
        return output.sync()
    finally:
        output.close()


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -- JSON lines -----------------------------------------------------------------------------------


def test_sync_writes_committed_items_once(frontier: SQLiteFrontier, out_path: Path) -> None:
    commit(frontier, {"n": 1}, {"n": 2})
    output = ItemFeed(frontier, OutputFile(out_path, frontier, JsonLinesFormat()))
    try:
        assert output.sync() == 2
        assert output.sync() == 0
        commit(frontier, {"n": 3, "name": "Café"})
        assert output.sync() == 1
    finally:
        output.close()

    assert lines(out_path) == [{"n": 1}, {"n": 2}, {"n": 3, "name": "Café"}]


def test_output_folder_is_created(frontier: SQLiteFrontier, tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "books.jsonl"
    commit(frontier, {"n": 1})
    assert sync_once(path, frontier) == 1
    assert lines(path) == [{"n": 1}]


def test_a_resumed_output_continues_without_duplicates(frontier: SQLiteFrontier, out_path: Path) -> None:
    commit(frontier, {"n": 1})
    sync_once(out_path, frontier)
    commit(frontier, {"n": 2})

    assert sync_once(out_path, frontier) == 1
    assert sync_once(out_path, frontier) == 0
    assert lines(out_path) == [{"n": 1}, {"n": 2}]


def test_progress_survives_closing_the_checkpoint(tmp_path: Path, out_path: Path) -> None:
    with Checkpoint(tmp_path / "cp.db", owner="a:1") as first:
        frontier = first.frontier("books")
        commit(frontier, {"n": 1})
        sync_once(out_path, frontier)
        commit(frontier, {"n": 2})  # committed, but the run stops before syncing it
    with Checkpoint(tmp_path / "cp.db", owner="b:2") as second:
        assert sync_once(out_path, second.frontier("books")) == 1
    assert lines(out_path) == [{"n": 1}, {"n": 2}]


def test_bytes_after_the_recorded_offset_are_cut_and_written_again(
    frontier: SQLiteFrontier, out_path: Path
) -> None:
    commit(frontier, {"n": 1})
    sync_once(out_path, frontier)
    commit(frontier, {"n": 2}, {"n": 3})
    # A crash between the write and the watermark: the items are in the file, half of the last one
    # too, but the checkpoint does not know.
    with out_path.open("ab") as file:
        file.write(b'{"n": 2}\n{"n"')

    assert sync_once(out_path, frontier) == 2
    assert lines(out_path) == [{"n": 1}, {"n": 2}, {"n": 3}]


def test_a_file_shorter_than_recorded_is_rebuilt(
    frontier: SQLiteFrontier, out_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    commit(frontier, {"n": 1}, {"n": 2})
    sync_once(out_path, frontier)
    out_path.write_bytes(b'{"n": 1}\n')  # cut short outside the crawl

    with caplog.at_level(logging.WARNING, logger="crawler.exporters"):
        assert sync_once(out_path, frontier) == 2

    assert lines(out_path) == [{"n": 1}, {"n": 2}]
    assert "shorter than the checkpoint says" in caplog.text


def test_a_deleted_file_is_rebuilt(frontier: SQLiteFrontier, out_path: Path) -> None:
    commit(frontier, {"n": 1})
    sync_once(out_path, frontier)
    out_path.unlink()
    assert sync_once(out_path, frontier) == 1
    assert lines(out_path) == [{"n": 1}]


def test_each_spider_keeps_its_own_progress(checkpoint: Checkpoint, tmp_path: Path) -> None:
    books, films = checkpoint.frontier("books"), checkpoint.frontier("films")
    commit(books, {"b": 1})
    commit(films, {"f": 1}, {"f": 2})
    assert sync_once(tmp_path / "books.jsonl", books) == 1
    assert sync_once(tmp_path / "films.jsonl", films) == 2
    assert lines(tmp_path / "books.jsonl") == [{"b": 1}]
    assert lines(tmp_path / "films.jsonl") == [{"f": 1}, {"f": 2}]


# -- CSV ------------------------------------------------------------------------------------------


def csv_rows(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))


def test_csv_header_is_written_once_across_resumes(frontier: SQLiteFrontier, tmp_path: Path) -> None:
    path = tmp_path / "books.csv"
    commit(frontier, {"id": 1, "name": "Café"})
    sync_once(path, frontier, CsvFormat(["id", "name"]))
    commit(frontier, {"id": 2, "name": "Über"})
    sync_once(path, frontier, CsvFormat(["id", "name"]))

    assert csv_rows(path) == [["id", "name"], ["1", "Café"], ["2", "Über"]]


def test_csv_columns_are_remembered_by_the_checkpoint(frontier: SQLiteFrontier, tmp_path: Path) -> None:
    path = tmp_path / "books.csv"
    commit(frontier, {"id": 1, "name": "a"})
    sync_once(path, frontier, CsvFormat(["name", "id"]))
    commit(frontier, {"id": 2, "name": "b"})
    resumed = CsvFormat(["id", "name"])  # a later run must not reorder the existing file's columns
    sync_once(path, frontier, resumed)

    assert resumed.columns == ["name", "id"]
    assert csv_rows(path) == [["name", "id"], ["a", "1"], ["b", "2"]]


def test_csv_writes_nested_values_as_json(frontier: SQLiteFrontier, tmp_path: Path) -> None:
    path = tmp_path / "books.csv"
    commit(frontier, {"id": 1, "tags": ["a", "é"], "dims": {"w": 2}, "note": None})
    sync_once(path, frontier, CsvFormat(["id", "tags", "dims", "note"]))

    header, row = csv_rows(path)
    assert header == ["id", "tags", "dims", "note"]
    assert json.loads(row[1]) == ["a", "é"]
    assert json.loads(row[2]) == {"w": 2}
    assert row[3] == ""


def test_csv_reports_a_field_without_a_column_once(
    frontier: SQLiteFrontier, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "books.csv"
    commit(frontier, {"id": 1, "extra": "x"}, {"id": 2, "extra": "y"})
    item_format = CsvFormat(["id"])

    with caplog.at_level(logging.WARNING, logger="crawler.exporters"):
        sync_once(path, frontier, item_format)

    assert item_format.unknown_fields == {"extra"}
    warnings = [record for record in caplog.records if "no column" in record.getMessage()]
    assert len(warnings) == 1
    assert "extra" in warnings[0].getMessage()
    assert csv_rows(path) == [["id"], ["1"], ["2"]]


def test_csv_rebuilt_after_truncation_gets_its_header_again(frontier: SQLiteFrontier, tmp_path: Path) -> None:
    path = tmp_path / "books.csv"
    commit(frontier, {"id": 1})
    sync_once(path, frontier, CsvFormat(["id"]))
    path.write_bytes(b"")
    sync_once(path, frontier, CsvFormat(["id"]))
    assert csv_rows(path) == [["id"], ["1"]]


def test_csv_columns_default_to_the_first_items_fields(frontier: SQLiteFrontier, tmp_path: Path) -> None:
    path = tmp_path / "books.csv"
    commit(frontier, {"id": 1, "name": "a"}, {"id": 2, "name": "b"})
    sync_once(path, frontier, CsvFormat())
    assert csv_rows(path) == [["id", "name"], ["1", "a"], ["2", "b"]]


# -- one JSON array ----------------------------------------------------------------------------------


def test_a_json_array_is_valid_after_every_append(frontier: SQLiteFrontier, tmp_path: Path) -> None:
    path = tmp_path / "books.json"
    feed = ItemFeed(frontier, OutputFile(path, frontier, JsonArrayFormat()))
    try:
        for batch in ([{"n": 1}, {"n": 2}], [{"n": 3}], [{"n": 4, "name": "Café"}]):
            commit(frontier, *batch)
            feed.sync()
            assert json.loads(path.read_text(encoding="utf-8"))[-1] == batch[-1]
    finally:
        feed.close()
    assert json.loads(path.read_text(encoding="utf-8")) == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4, "name": "Café"}]


def test_a_json_array_cut_mid_append_is_closed_again_and_continued(frontier: SQLiteFrontier, tmp_path: Path) -> None:
    path = tmp_path / "books.json"
    commit(frontier, {"n": 1})
    sync_once(path, frontier, JsonArrayFormat())
    with open(path, "ab") as file:
        file.write(b',\n{"n": 2, "cut off')  # an append a kill -9 stopped before its progress was recorded
    # Opened again with nothing new committed: the file is the array it was, closed.
    assert sync_once(path, frontier, JsonArrayFormat()) == 0
    assert json.loads(path.read_text()) == [{"n": 1}]
    commit(frontier, {"n": 2})
    assert sync_once(path, frontier, JsonArrayFormat()) == 1
    assert json.loads(path.read_text()) == [{"n": 1}, {"n": 2}]
