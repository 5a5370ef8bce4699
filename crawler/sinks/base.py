"""What every table sink shares: columns from the item model, rows from stored items, and the
sink's position in the checkpoint, recorded once its database has committed a batch."""

from __future__ import annotations

import datetime
import decimal
import json
import logging
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from ..exceptions import OutputError
from ..exporters import WriterTurn
from ..frontier.base import Frontier, StoredItem

logger = logging.getLogger(__name__)

Kind = Literal["integer", "real", "numeric", "boolean", "text", "timestamp", "date", "json"]


class SinkError(OutputError):
    """A sink's database refused a batch or cannot be reached; what was committed to the
    checkpoint is safe, and the next run writes it from the sink's recorded position."""

    def __init__(self, sink: str, reason: str) -> None:
        super().__init__(sink, reason)
        self.sink = sink
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.sink}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Column:
    name: str
    kind: Kind


_KINDS: dict[type, Kind] = {
    bool: "boolean",  # before int: a bool is an int to issubclass
    int: "integer",
    float: "real",
    decimal.Decimal: "numeric",
    str: "text",
    datetime.datetime: "timestamp",
    datetime.date: "date",
}


def _kind_of(annotation: Any) -> Kind:
    """The column kind for a model field's type; lists, dicts, nested models and anything not
    plainly one of the scalar types are kept as JSON."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        present = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return _kind_of(present[0]) if len(present) == 1 else "json"
    if typing.get_origin(annotation) is typing.Annotated:
        return _kind_of(typing.get_args(annotation)[0])
    if isinstance(annotation, type):
        for python_type, kind in _KINDS.items():
            if issubclass(annotation, python_type):
                return kind
        if annotation.__module__.startswith("pydantic") and "Url" in annotation.__name__:
            return "text"
    return "json"


def _kind_of_value(value: Any) -> Kind:
    for python_type, kind in _KINDS.items():
        if isinstance(value, python_type):
            return kind
    return "json"


def table_columns(model: type[BaseModel] | None, first: dict[str, Any]) -> list[Column]:
    """The model's fields as columns, in its order; without a model, the first item's."""
    if model is None:
        return [Column(name, _kind_of_value(value)) for name, value in first.items()]
    return [Column(name, _kind_of(field.annotation)) for name, field in model.model_fields.items() if not field.exclude]


def row_of(item: dict[str, Any], columns: list[Column], convert: Callable[[Any, Kind], Any]) -> tuple[Any, ...]:
    """An item (as stored: JSON values) as a row of ``columns``; a missing field is NULL."""
    return tuple(None if (value := item.get(column.name)) is None else convert(value, column.kind) for column in columns)


def from_json(value: Any, kind: Kind) -> Any:
    """A stored item's JSON value as the Python value of its column's kind."""
    if kind == "numeric":
        return decimal.Decimal(str(value))
    if kind == "timestamp" and isinstance(value, str):
        return datetime.datetime.fromisoformat(value)
    if kind == "date" and isinstance(value, str):
        return datetime.date.fromisoformat(value)
    return value


class UnknownFields:
    """Says once per field that items have a field with no column (a pipeline added it, or the
    model lacks it): left out, but not silently."""

    def __init__(self, where: str) -> None:
        self.where = where
        self._reported: set[str] = set()

    def report(self, items: list[dict[str, Any]], columns: list[str]) -> None:
        known = set(columns) | self._reported
        if new := sorted({name for item in items for name in item} - known):
            self._reported.update(new)
            logger.warning("%s has no column for %s, so those values are not written (its columns: %s)",
                           self.where, ", ".join(new), ", ".join(columns))


class TableSink:
    """A table that committed items go to, with the sink's progress in the checkpoint.

    Subclasses open the connection and the table (``_open``), write rows in one transaction
    (``_write_rows``) and close (``_close``). With ``lock``, processes of one machine sharing a
    checkpoint on Redis take turns, as their output files do.
    """

    label = "sink"

    def __init__(
        self, frontier: Frontier, *, table: str, key: str | None, model: type[BaseModel] | None, state_key: str,
        lock: Path | None = None,
    ) -> None:
        self.frontier = frontier
        self.table = table
        self.key = key
        self.model = model
        self._state_key = state_key
        self._turn = WriterTurn(lock)
        self._opened = False
        self.columns: list[Column] = []
        self.position = 0
        self._unknown_fields = UnknownFields(f"table {table}")

    def ready(self) -> bool:
        if self._opened:
            return True
        try:
            if not self._turn.take():
                return False
        except OSError as error:
            raise SinkError(self.label, f"cannot take the turn to write: {error.strerror}") from None
        saved = self.frontier.get_state(self._state_key)
        self.position = int(json.loads(saved)["last_id"]) if saved else 0
        self._opened = True
        if self.model is not None:
            # The table is known from the model: opened now, so that a wrong one stops the
            # crawl before it starts, not at its first item.
            self._open_table(table_columns(self.model, {}))
        return True

    def write(self, items: list[StoredItem], up_to: int) -> int:
        if items:
            decoded = [json.loads(item.data) for item in items]
            if not self.columns:
                self._open_table(table_columns(None, decoded[0]))
            self._unknown_fields.report(decoded, [column.name for column in self.columns])
            self._write_rows(decoded)
        # Only once the database has committed: a crash before this writes the batch again.
        self.position = up_to
        self.frontier.set_state(self._state_key, json.dumps({"last_id": up_to}))
        return len(items)

    def close(self) -> None:
        try:
            if self.columns:
                self._close()
        finally:
            self._turn.release()

    def _open_table(self, columns: list[Column]) -> None:
        if self.key is not None and self.key not in {column.name for column in columns}:
            raise SinkError(self.label, f"key {self.key!r} is not a field of the items ({', '.join(c.name for c in columns)})")
        self.columns = columns
        self._open()

    def _check_columns(self, existing: list[str]) -> None:
        """A table that was there already must have every column (and the key) items fill."""
        if missing := [column.name for column in self.columns if column.name not in existing]:
            raise SinkError(self.label, f"table {self.table} has no column{'s' if len(missing) > 1 else ''} "
                                        f"{', '.join(missing)} (it has {', '.join(existing)})")
        if self.key is not None and self.key not in existing:
            raise SinkError(self.label, f"table {self.table} has no key column {self.key}")

    def _open(self) -> None:
        raise NotImplementedError

    def _write_rows(self, items: list[dict[str, Any]]) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError
