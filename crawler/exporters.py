"""Output files that hold exactly the committed items, across stops, crashes and resumes.

Items are committed to the checkpoint first; the output file is a copy of them, appended in commit
order. After each append the file is flushed to disk and then the checkpoint records how far it got
(last item id and file size). On the next run anything past that size (an append the crash
interrupted before its progress was recorded) is cut off and written again. So the file never
holds an item twice and never misses one, whatever moment the process died at.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path
from typing import Any, Protocol

from .exceptions import OutputError
from .frontier.base import Frontier, StoredItem

logger = logging.getLogger(__name__)

_BATCH = 2000


class ItemFormat(Protocol):
    """How items become bytes in one output format."""

    def header(self, first: dict[str, Any]) -> bytes: ...

    def encode(self, items: list[StoredItem]) -> bytes: ...


class JsonLinesFormat:
    """One JSON object per line; the checkpoint already holds items as JSON, so no re-encoding."""

    def header(self, first: dict[str, Any]) -> bytes:
        return b""

    def encode(self, items: list[StoredItem]) -> bytes:
        return "".join(item.data + "\n" for item in items).encode("utf-8")


class CsvFormat:
    """CSV with a header row; columns are the fields of the first item (or those the caller fixes).

    Nested values are written as JSON. A field that is not among the columns is not silently
    dropped: it is counted and reported once.
    """

    def __init__(self, columns: list[str] | None = None) -> None:
        self.columns = columns
        self.unknown_fields: set[str] = set()

    def header(self, first: dict[str, Any]) -> bytes:
        if self.columns is None:
            self.columns = list(first)
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(self.columns)
        return buffer.getvalue().encode("utf-8")

    def encode(self, items: list[StoredItem]) -> bytes:
        return self._rows([json.loads(item.data) for item in items])

    def _rows(self, rows: list[dict[str, Any]]) -> bytes:
        assert self.columns is not None
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, extrasaction="ignore", lineterminator="\n")
        for row in rows:
            extra = row.keys() - set(self.columns)
            if extra - self.unknown_fields:
                logger.warning("CSV output has no column for %s; those values are not written", sorted(extra))
                self.unknown_fields |= extra
            writer.writerow(
                {k: json.dumps(v, ensure_ascii=False) if isinstance(v, (dict, list)) else v for k, v in row.items()}
            )
        return buffer.getvalue().encode("utf-8")


def make_format(name: str, columns: list[str] | None = None) -> ItemFormat:
    return CsvFormat(columns) if name == "csv" else JsonLinesFormat()


class OutputFile:
    """Keeps one output file in step with a frontier's committed items."""

    def __init__(self, path: Path, frontier: Frontier, item_format: ItemFormat) -> None:
        self.path = path
        self.frontier = frontier
        self.format = item_format
        self._state_key = f"export:{path}"
        self.last_id, self.offset = self._load_progress()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "ab")  # noqa: SIM115 - kept open while the crawl runs
            self._align()
        except OSError as error:
            raise OutputError(f"{path}: cannot write the output file: {error.strerror}") from None

    def _load_progress(self) -> tuple[int, int]:
        saved = self.frontier.get_state(self._state_key)
        if saved is None:
            return 0, 0
        progress = json.loads(saved)
        if isinstance(self.format, CsvFormat) and progress.get("columns"):
            self.format.columns = progress["columns"]
        return int(progress["last_id"]), int(progress["offset"])

    def _align(self) -> None:
        size = os.fstat(self._file.fileno()).st_size
        if size > self.offset:
            # Bytes written after the last recorded progress: their items are written again below.
            self._file.truncate(self.offset)
        elif size < self.offset:
            # The file was deleted or cut short outside the crawl: rebuild it from the checkpoint.
            logger.warning("%s is shorter than the checkpoint says; rewriting it from the checkpoint", self.path)
            self._file.truncate(0)
            self.last_id = self.offset = 0

    def sync(self) -> int:
        """Append items committed since the last sync; returns how many were written.

        If the disk is full, the items stay committed in the checkpoint and the next run writes
        them: the recorded progress only moves once the bytes are on disk.
        """
        try:
            return self._append_committed()
        except OSError as error:
            raise OutputError(f"{self.path}: cannot write the output file: {error.strerror}") from None

    def _append_committed(self) -> int:
        written = 0
        while batch := self.frontier.items_after(self.last_id, _BATCH):
            header = self.format.header(json.loads(batch[0].data)) if self.offset == 0 else b""
            data = header + self.format.encode(batch)
            self._file.write(data)
            self._file.flush()
            # On disk before the checkpoint says so; otherwise a power cut could leave a gap.
            os.fsync(self._file.fileno())
            self.last_id = batch[-1].id
            self.offset += len(data)
            progress: dict[str, Any] = {"last_id": self.last_id, "offset": self.offset}
            if isinstance(self.format, CsvFormat):
                progress["columns"] = self.format.columns
            self.frontier.set_state(self._state_key, json.dumps(progress))
            written += len(batch)
        return written

    def close(self) -> None:
        self._file.close()
