"""Output files that hold exactly the committed items, across stops, crashes and resumes.

Items are committed to the checkpoint first; the output file is a copy of them, appended in commit
order. After each append the file is flushed to disk and then the checkpoint records how far it got
(last item id and file size). On the next run anything past that size (an append the crash
interrupted before its progress was recorded) is cut off and written again. So the file never
holds an item twice and never misses one, whatever moment the process died at.

A CSV file's columns are chosen once, when its header is written, and recorded with its progress:
a resumed crawl carries on with them, so the file never gets a second, different header.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from pydantic import BaseModel

from .exceptions import ConfigError, OutputError
from .frontier.base import Frontier, StoredItem

if TYPE_CHECKING:
    from .config import OutputConfig
    from .spider import Spider

logger = logging.getLogger(__name__)


class ItemFormat(Protocol):
    """How items become bytes in one output format: a header before the first item, a
    ``separator`` between one append's items and the next's, and a ``footer`` that closes the
    file after each append (and is cut off before the next)."""

    separator: bytes
    footer: bytes

    def header(self, first: dict[str, Any]) -> bytes: ...

    def encode(self, items: list[StoredItem]) -> bytes: ...


class JsonLinesFormat:
    """One JSON object per line; the checkpoint already holds items as JSON, so no re-encoding."""

    separator = footer = b""

    def header(self, first: dict[str, Any]) -> bytes:
        return b""

    def encode(self, items: list[StoredItem]) -> bytes:
        return "".join(item.data + "\n" for item in items).encode("utf-8")


class JsonArrayFormat:
    """One JSON array of the items, valid after every append: the closing bracket is written
    after each one, and cut off before the next (or when a resumed crawl aligns the file)."""

    separator = b",\n"
    footer = b"\n]\n"

    def header(self, first: dict[str, Any]) -> bytes:
        return b"[\n"

    def encode(self, items: list[StoredItem]) -> bytes:
        return ",\n".join(item.data for item in items).encode("utf-8")


def _cell(value: Any) -> str:
    """A string as it is, None as an empty cell, anything else as its JSON text: ``true``, ``1.5``,
    ``["a","b"]``, ``{"w":2}``, so lists and objects read back with ``json.loads``."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class CsvFormat:
    """CSV with a header row; columns are those the caller fixes, or else the first item's fields.

    A field that is not among the columns is not silently dropped: it is reported once, naming the
    spider, unless the columns were ``chosen`` (``output.fields``), which leaves the others out on
    purpose.
    """

    separator = footer = b""

    def __init__(self, columns: list[str] | None = None, *, spider: str = "", chosen: bool = False) -> None:
        self.columns = columns
        self.spider = spider
        self.chosen = chosen
        self.unknown_fields: set[str] = set()

    def keep_columns(self, columns: list[str]) -> None:
        """Carry on with the columns the file was started with: its header is already written."""
        if self.columns is not None and self.columns != columns:
            logger.warning(
                "spider %r: the CSV output was started with the columns %s, so this resumed crawl keeps "
                "them and not %s; run with --fresh to start the file over with the new ones",
                self.spider, ", ".join(columns), ", ".join(self.columns),
            )
        self.columns = columns

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
            if new := row.keys() - set(self.columns) - self.unknown_fields:
                self.unknown_fields |= new
                if not self.chosen:
                    logger.warning(
                        "spider %r: the CSV output has no column for %s, so those values are not written "
                        "(its columns: %s; set the spider's item_model or output.fields to choose them)",
                        self.spider, ", ".join(sorted(new)), ", ".join(self.columns),
                    )
            writer.writerow({key: _cell(value) for key, value in row.items()})
        return buffer.getvalue().encode("utf-8")


def model_columns(model: type[BaseModel]) -> list[str]:
    """The keys ``model_dump_json()`` (how items are stored) writes for ``model``, in its order:
    the fields, then the computed fields; by alias only if the model serializes by alias."""
    by_alias = bool(model.model_config.get("serialize_by_alias"))
    columns = [
        (field.serialization_alias or name) if by_alias else name
        for name, field in model.model_fields.items()
        if not field.exclude
    ]
    columns += [(field.alias or name) if by_alias else name for name, field in model.model_computed_fields.items()]
    return columns


def csv_columns(spider: Spider, fields: list[str] | None) -> list[str] | None:
    """``fields`` if given, else the spider's ``item_model`` columns; None: the first item's fields.

    With both, ``fields`` picks and orders the model's columns. A name the model does not have
    would be a column that stays empty, most likely a typo, so it is refused (unless the model
    allows extra fields).
    """
    model = spider.item_model
    if model is None:
        return fields
    columns = model_columns(model)
    if fields is None:
        return columns
    unknown = [name for name in fields if name not in columns]
    if unknown and model.model_config.get("extra") != "allow":
        raise ConfigError([
            f"output.fields: no field{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in "
            f"{model.__name__}, the item_model of spider {spider.name!r} (its fields: {', '.join(columns)})"
        ])
    return fields


def make_format(output: OutputConfig, spider: Spider) -> ItemFormat:
    """The format ``output`` asks for, with the CSV columns chosen for ``spider``'s items."""
    if output.format == "json":
        return JsonArrayFormat()
    if output.format != "csv":
        return JsonLinesFormat()
    columns = csv_columns(spider, output.fields)
    return CsvFormat(columns, spider=spider.name, chosen=output.fields is not None)


class OutputStream:
    """Committed items written to a stream (``-o -``: standard output) as the crawl commits them,
    from the first one: a stream keeps no progress, so a resumed crawl writes its earlier items
    again. An item consumer, as ``OutputFile`` is (see ``crawler.delivery``)."""

    writing = True

    def __init__(self, stream: BinaryIO, item_format: ItemFormat) -> None:
        self.path = Path("-")
        self.stream = stream
        self.format = item_format
        self.position = 0

    def ready(self) -> bool:
        return True

    def write(self, items: list[StoredItem], up_to: int) -> int:
        if items:
            self.stream.write(self.format.encode(items))
            self.stream.flush()
        self.position = up_to
        return len(items)

    def close(self) -> None:
        self.stream.flush()


class WriterTurn:
    """The turn to write one output among the processes of a crawl on one machine: an
    exclusive flock on ``path``, tried without waiting, held until ``release`` (or the holder's
    death, which hands the turn on at once). Without a path every process may write: nothing
    else shares the output."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._descriptor: int | None = None

    def take(self) -> bool:
        """Whether this process holds the turn now (OSError if the lock file cannot be made)."""
        if self.path is None:
            return True
        if self._descriptor is None:
            self._descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # another process of the crawl writes it
        return True

    def release(self) -> None:
        if self._descriptor is not None:
            os.close(self._descriptor)  # and with it the turn to write
            self._descriptor = None


class OutputFile:
    """Keeps one output file in step with a frontier's committed items.

    Its progress (the last item written, and the file's length then) is kept in the frontier
    under ``state_key``. With ``shared``, other processes of the crawl on this machine may keep
    the same file: the one that holds its lock writes it, the others wait their turn (taking
    the lock at each sync), so that a writer that dies is followed at once by another, from the
    progress it recorded.
    """

    def __init__(
        self, path: Path, frontier: Frontier, item_format: ItemFormat, *, state_key: str | None = None,
        shared: bool = False,
    ) -> None:
        self.path = path
        self.frontier = frontier
        self.format = item_format
        self._state_key = state_key or f"export:{path}"
        self._turn = WriterTurn(path.with_name(path.name + ".lock") if shared else None)
        self._file: BinaryIO | None = None
        self.last_id = self.offset = 0
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._take()
        except OSError as error:
            raise OutputError(f"{path}: cannot write the output file: {error.strerror}") from None

    @property
    def writing(self) -> bool:
        """Whether this process writes the file (with ``shared``, another may have the turn)."""
        return self._file is not None

    def _take(self) -> bool:
        """Open the file to write, if this process may: whether it is open now."""
        if self._file is not None:
            return True
        if not self._turn.take():
            return False
        self.last_id, self.offset = self._load_progress()
        self._file = open(self.path, "ab")  # noqa: SIM115 - kept open while the crawl runs
        self._align()
        return True

    def _load_progress(self) -> tuple[int, int]:
        saved = self.frontier.get_state(self._state_key)
        if saved is None:
            return 0, 0
        progress = json.loads(saved)
        if isinstance(self.format, CsvFormat) and progress.get("columns"):
            self.format.keep_columns(progress["columns"])
        return int(progress["last_id"]), int(progress["offset"])

    def _align(self) -> None:
        assert self._file is not None
        size = os.fstat(self._file.fileno()).st_size
        if size > self.offset:
            # Bytes written after the last recorded progress (or the footer): their items are
            # written again below, and the file is closed again until they are.
            self._file.truncate(self.offset)
            if self.offset:
                self._file.write(self.format.footer)
                self._file.flush()
        elif size < self.offset:
            # The file was deleted or cut short outside the crawl: rebuild it from the checkpoint.
            logger.warning("%s is shorter than the checkpoint says; rewriting it from the checkpoint", self.path)
            self._file.truncate(0)
            self.last_id = self.offset = 0

    @property
    def position(self) -> int:
        """The last item id the file holds (or was passed over, dropped by a pipeline)."""
        return self.last_id

    def ready(self) -> bool:
        """Whether this process writes the file now (with ``shared``, it may be another's turn)."""
        try:
            return self._take()
        except OSError as error:
            raise OutputError(f"{self.path}: cannot write the output file: {error.strerror}") from None

    def write(self, items: list[StoredItem], up_to: int) -> int:
        """Append ``items``, the committed ones up to id ``up_to`` that are to be written.

        If the disk is full, the items stay committed in the checkpoint and the next run writes
        them: the recorded progress only moves once the bytes are on disk.
        """
        assert self._file is not None, "ready() first"
        try:
            if items:
                if self.offset == 0:
                    data = self.format.header(json.loads(items[0].data)) + self.format.encode(items)
                else:
                    data = self.format.separator + self.format.encode(items)
                if self.format.footer:
                    self._file.truncate(self.offset)  # the footer the last append closed the file with
                self._file.write(data + self.format.footer)
                self._file.flush()
                # On disk before the checkpoint says so; otherwise a power cut could leave a gap.
                os.fsync(self._file.fileno())
                self.offset += len(data)
        except OSError as error:
            raise OutputError(f"{self.path}: cannot write the output file: {error.strerror}") from None
        self.last_id = up_to
        progress: dict[str, Any] = {"last_id": self.last_id, "offset": self.offset}
        if isinstance(self.format, CsvFormat):
            progress["columns"] = self.format.columns
        self.frontier.set_state(self._state_key, json.dumps(progress))
        return len(items)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._turn.release()
