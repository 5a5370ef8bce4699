"""A PostgreSQL table as a sink, through psycopg 3: made from the item model, upserted by a key,
a batch per transaction (sent in pipeline mode by ``executemany``)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from .base import Kind, SinkError, TableSink, from_json, row_of

_TYPES: dict[Kind, str] = {
    "integer": "BIGINT", "real": "DOUBLE PRECISION", "numeric": "NUMERIC", "boolean": "BOOLEAN", "text": "TEXT",
    "timestamp": "TIMESTAMPTZ", "date": "DATE", "json": "JSONB",
}


def _value(value: Any, kind: Kind) -> Any:
    return Jsonb(value) if kind == "json" else from_json(value, kind)


class PostgresSink(TableSink):
    """``url`` names the server and database, without a password (``password`` is given apart,
    from the environment); ``described`` is how messages name the server (no secrets)."""

    def __init__(self, url: str, password: str | None, described: str, **fields: Any) -> None:
        super().__init__(**fields)
        self._url = url
        self._password = password
        self.label = f"PostgreSQL sink ({described})"
        self._db: psycopg.Connection[Any] | None = None
        self._insert: sql.Composed | None = None

    def _table(self) -> sql.Identifier:
        return sql.Identifier(*self.table.split("."))

    def _open(self) -> None:
        try:
            self._db = psycopg.connect(self._url, password=self._password, connect_timeout=10)
            with self._db.transaction():
                existing = self._existing_columns()
                if not existing:
                    self._create()
                else:
                    self._check_columns(existing)
                    self._check_key_unique()
        except psycopg.Error as error:
            self._close()
            raise SinkError(self.label, f"cannot open table {self.table}: {_first_line(error)}") from None
        names = sql.SQL(", ").join(sql.Identifier(column.name) for column in self.columns)
        marks = sql.SQL(", ").join(sql.Placeholder() for _ in self.columns)
        insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(self._table(), names, marks)
        if self.key is not None:
            updates = [
                sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(column.name))
                for column in self.columns if column.name != self.key
            ]
            action = sql.SQL("UPDATE SET {}").format(sql.SQL(", ").join(updates)) if updates else sql.SQL("NOTHING")
            insert = sql.SQL("{} ON CONFLICT ({}) DO {}").format(insert, sql.Identifier(self.key), action)
        self._insert = insert

    def _where(self) -> tuple[str, str | None]:
        schema, _, name = self.table.rpartition(".")
        return name, schema or None

    def _existing_columns(self) -> list[str]:
        assert self._db is not None
        name, schema = self._where()
        rows = self._db.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = %s AND table_schema = coalesce(%s, current_schema()) ORDER BY ordinal_position",
            (name, schema),
        ).fetchall()
        return [row[0] for row in rows]

    def _create(self) -> None:
        assert self._db is not None
        definitions = sql.SQL(", ").join(
            sql.SQL("{} {}{}").format(
                sql.Identifier(column.name), sql.SQL(_TYPES[column.kind]),
                sql.SQL(" PRIMARY KEY" if column.name == self.key else ""),
            )
            for column in self.columns
        )
        self._db.execute(sql.SQL("CREATE TABLE {} ({})").format(self._table(), definitions))

    def _check_key_unique(self) -> None:
        assert self._db is not None
        if self.key is None:
            return
        name, schema = self._where()
        unique = self._db.execute(
            "SELECT 1 FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid "
            "JOIN pg_namespace n ON n.oid = t.relnamespace "
            "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = i.indkey[0] "
            "WHERE i.indisunique AND i.indnatts = 1 AND t.relname = %s "
            "AND n.nspname = coalesce(%s, current_schema()) AND a.attname = %s",
            (name, schema, self.key),
        ).fetchone()
        if unique is None:
            raise SinkError(self.label, f"table {self.table} has no unique index on {self.key}, the key to upsert by")

    def _write_rows(self, items: list[dict[str, Any]]) -> None:
        assert self._db is not None and self._insert is not None
        rows = [row_of(item, self.columns, _value) for item in items]
        try:
            with self._db.transaction(), self._db.cursor() as cursor:
                cursor.executemany(self._insert, rows)
        except psycopg.Error as error:
            raise SinkError(self.label, f"cannot write to table {self.table}: {_first_line(error)}") from None

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def _first_line(error: psycopg.Error) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
