"""A SQLite table as a sink: made from the item model, upserted by a key, a batch per transaction."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from .base import Kind, SinkError, TableSink, row_of

_TYPES: dict[Kind, str] = {
    "integer": "INTEGER", "real": "REAL", "numeric": "TEXT", "boolean": "INTEGER", "text": "TEXT",
    "timestamp": "TEXT", "date": "TEXT", "json": "TEXT",
}


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _value(value: Any, kind: Kind) -> Any:
    """A stored item's JSON value as SQLite keeps it: decimals, dates and times stay the text
    they are stored as (SQLite's NUMERIC would turn 474.60 into the float 474.6)."""
    if kind == "json":
        return json.dumps(value, ensure_ascii=False)
    if kind == "boolean":
        return int(bool(value))
    return value


class SqliteSink(TableSink):
    label = "SQLite sink"

    def __init__(self, path: Path, **fields: Any) -> None:
        super().__init__(**fields)
        self.path = path
        self.label = f"SQLite sink {path}"
        self._db: sqlite3.Connection | None = None
        self._insert = ""

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            existing = [row[1] for row in self._db.execute(f"PRAGMA table_info({_quoted(self.table)})")]
            if not existing:
                self._create()
            else:
                self._check_columns(existing)
                self._check_key_unique()
        except sqlite3.Error as error:
            raise SinkError(self.label, f"cannot open table {self.table}: {error}") from None
        names = ", ".join(_quoted(column.name) for column in self.columns)
        marks = ", ".join("?" for _ in self.columns)
        self._insert = f"INSERT INTO {_quoted(self.table)} ({names}) VALUES ({marks})"
        if self.key is not None:
            updates = ", ".join(
                f"{_quoted(column.name)} = excluded.{_quoted(column.name)}" for column in self.columns if column.name != self.key
            )
            self._insert += f" ON CONFLICT ({_quoted(self.key)}) DO " + (f"UPDATE SET {updates}" if updates else "NOTHING")

    def _create(self) -> None:
        assert self._db is not None
        definitions = [
            f"{_quoted(column.name)} {_TYPES[column.kind]}" + (" PRIMARY KEY" if column.name == self.key else "")
            for column in self.columns
        ]
        self._db.execute(f"CREATE TABLE {_quoted(self.table)} ({', '.join(definitions)})")

    def _check_key_unique(self) -> None:
        assert self._db is not None
        if self.key is None:
            return
        primary = [row[1] for row in self._db.execute(f"PRAGMA table_info({_quoted(self.table)})") if row[5]]
        if primary == [self.key]:
            return
        for _, index, unique, *_ in self._db.execute(f"PRAGMA index_list({_quoted(self.table)})"):
            columns = [row[2] for row in self._db.execute(f"PRAGMA index_info({_quoted(index)})")]
            if unique and columns == [self.key]:
                return
        raise SinkError(self.label, f"table {self.table} has no unique index on {self.key}, the key to upsert by")

    def _write_rows(self, items: list[dict[str, Any]]) -> None:
        assert self._db is not None
        rows = [row_of(item, self.columns, _value) for item in items]
        try:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany(self._insert, rows)
            self._db.execute("COMMIT")
        except sqlite3.Error as error:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise SinkError(self.label, f"cannot write to table {self.table}: {error}") from None

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
