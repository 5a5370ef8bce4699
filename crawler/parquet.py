"""Parquet output files (``output.format = "parquet"``; pyarrow, the ``parquet`` extra).

A Parquet file cannot be appended to once its footer is written, so each run writes the whole
file: every committed item, from the checkpoint, then what the run commits, a row group per
append, into ``PATH.partial``; when the run ends the footer is written and the file renamed to
``PATH`` in one step. So ``PATH`` always holds a whole file (the last run's), never a torn one;
after a kill the next run writes it again from the checkpoint, each item once.

Columns come from the item model (``crawler.sinks.base`` decides their kinds, as for a table),
or the first item; decimals are kept as text (exact), lists, dicts and nested models as JSON text.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from .exceptions import OutputError
from .exporters import WriterTurn
from .frontier.base import StoredItem
from .sinks.base import Column, Kind, UnknownFields, table_columns

_TYPES: dict[Kind, pa.DataType] = {
    "integer": pa.int64(), "real": pa.float64(), "numeric": pa.string(), "boolean": pa.bool_(),
    "text": pa.string(), "timestamp": pa.string(), "date": pa.string(), "json": pa.string(),
}


def _cell(value: Any, kind: Kind) -> Any:
    if value is None:
        return None
    if kind == "json":
        return json.dumps(value, ensure_ascii=False)
    if kind in ("numeric", "timestamp", "date"):
        return str(value)
    return value


class ParquetFile:
    """An item consumer (see ``crawler.delivery``) that writes one Parquet file per run."""

    writing = True

    def __init__(self, path: Path, model: type[BaseModel] | None, *, shared: bool = False) -> None:
        self.path = path
        self.model = model
        self.position = 0  # always from the first item: the file is written whole each run
        self._partial = path.with_name(path.name + ".partial")
        self._turn = WriterTurn(path.with_name(path.name + ".lock") if shared else None)
        self._writer: pq.ParquetWriter | None = None
        self._columns: list[Column] = []
        self._started = False
        self._unknown_fields = UnknownFields(str(path))

    def ready(self) -> bool:
        if self._started:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self._turn.take():
                self.writing = False
                return False
        except OSError as error:
            raise OutputError(f"{self.path}: cannot write the output file: {error.strerror}") from None
        self.writing = self._started = True
        return True

    def write(self, items: list[StoredItem], up_to: int) -> int:
        if items:
            rows = [json.loads(item.data) for item in items]
            if self._writer is None:
                self._open(rows[0])
            assert self._writer is not None
            self._unknown_fields.report(rows, [column.name for column in self._columns])
            columns = {
                column.name: pa.array([_cell(row.get(column.name), column.kind) for row in rows], _TYPES[column.kind])
                for column in self._columns
            }
            try:
                self._writer.write_table(pa.table(columns, schema=self._writer.schema))
            except OSError as error:
                raise OutputError(f"{self._partial}: cannot write the output file: {error.strerror}") from None
        self.position = up_to
        return len(items)

    def _open(self, first: dict[str, Any]) -> None:
        self._columns = table_columns(self.model, first)
        schema = pa.schema([pa.field(column.name, _TYPES[column.kind]) for column in self._columns])
        try:
            self._writer = pq.ParquetWriter(self._partial, schema)
        except OSError as error:
            raise OutputError(f"{self._partial}: cannot write the output file: {error.strerror}") from None

    def close(self) -> None:
        try:
            if self._writer is not None:
                self._writer.close()
                self._writer = None
                with open(self._partial, "rb") as written:
                    os.fsync(written.fileno())
                os.replace(self._partial, self.path)
                directory = os.open(self.path.parent, os.O_RDONLY)
                try:
                    os.fsync(directory)  # the rename, on disk
                finally:
                    os.close(directory)
        except OSError as error:
            raise OutputError(f"{self.path}: cannot write the output file: {error.strerror}") from None
        finally:
            self._turn.release()
