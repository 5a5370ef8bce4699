"""The embedded checkpoint: one SQLite file (WAL) holding every spider's frontier, seen-set and items.

The seen-set is the requests table itself, keyed by a 16-byte fingerprint, so it lives on disk and
costs the process no memory. A finished row keeps only its fingerprint and counters: the request
body is dropped once it is done. Requests are stored as JSON, never pickled.

One process at a time owns a checkpoint file: an advisory lock on ``<file>.lock`` is taken on
open and dies with the process, so a killed crawl never leaves a stale lock behind. Because of
that lock, whatever a previous run left in flight is known to be abandoned and is requeued at once.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import ParamSpec, TypeVar

from ..exceptions import CheckpointError
from ..items import RejectedItem
from ..request import Request, fingerprint
from .base import (
    Completion,
    FailedRequest,
    FrontierCounts,
    Lease,
    Pending,
    ResumeInfo,
    State,
    StoredItem,
)

SCHEMA_VERSION = 2
# Marks the file as ours, so any other SQLite database is refused rather than written into.
APPLICATION_ID = 0x43524157  # "CRAW"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE spiders (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE requests (
    fingerprint BLOB PRIMARY KEY,
    spider INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    state INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    depth INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    owner TEXT,
    request TEXT,
    error TEXT,
    error_kind TEXT
) WITHOUT ROWID;
CREATE INDEX requests_queued ON requests (spider, priority DESC, seq) WHERE state = 0;
CREATE INDEX requests_unfinished ON requests (spider, state) WHERE state IN (1, 3);
CREATE TABLE items (
    id INTEGER PRIMARY KEY,
    spider INTEGER NOT NULL,
    fingerprint BLOB NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX items_by_spider ON items (spider, id);
CREATE TABLE rejected (
    id INTEGER PRIMARY KEY,
    spider INTEGER NOT NULL,
    url TEXT NOT NULL,
    error TEXT NOT NULL,
    data TEXT NOT NULL
);
"""


# What each older schema needs to become the next: index 0 takes schema 1 to 2, and so on.
_MIGRATIONS = (
    "ALTER TABLE requests ADD COLUMN error_kind TEXT",  # 2: failed requests keep their error kind
)


def check_schema(db: sqlite3.Connection, path: Path) -> int:
    """Refuse a file that is not a checkpoint of ours, or one from a newer crawler; its version."""
    (application_id,) = db.execute("PRAGMA application_id").fetchone()
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if application_id != APPLICATION_ID:
        raise CheckpointError(f"{path}: not a crawler checkpoint; use --fresh to replace it")
    if version > SCHEMA_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint schema {version} is newer than this crawler's "
            f"({SCHEMA_VERSION}); upgrade crawler"
        )
    return int(version)


def _migrate(db: sqlite3.Connection, version: int) -> None:
    """Bring an older checkpoint up to this schema, in one transaction."""
    db.execute("BEGIN")
    for statement in _MIGRATIONS[version - 1 :]:
        db.execute(statement)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    db.execute("COMMIT")


def lock_holder(path: Path) -> str | None:
    """Who holds the checkpoint's lock (a crawl running now), or None."""
    try:
        lock_file = open(f"{path}.lock", "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        return None
    with lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return lock_file.read().decode(errors="replace").strip() or "another process"
        fcntl.flock(lock_file, fcntl.LOCK_UN)
        return None


class Checkpoint:
    """An open, locked checkpoint file."""

    def __init__(self, path: Path, owner: str) -> None:
        self.path = path
        self.owner = owner
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_file = open(f"{path}.lock", "a+b")  # noqa: SIM115 - held for the crawl's life
        except OSError as error:
            raise CheckpointError(f"{path}: cannot open checkpoint: {error.strerror}") from None
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._lock_file.read().decode(errors="replace").strip() or "another process"
            self._lock_file.close()
            raise CheckpointError(f"{path}: checkpoint is in use by another crawl ({holder})") from None
        try:
            # Who holds it, for `crawler status` and the error above; the lock itself is the flock.
            self._lock_file.truncate(0)
            self._lock_file.write(owner.encode())
            self._lock_file.flush()
            self.db = self._connect()
        except BaseException:
            self._release_lock()
            raise

    def _connect(self) -> sqlite3.Connection:
        fresh = not self.path.exists() or self.path.stat().st_size == 0
        try:
            db = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as error:
            raise CheckpointError(f"{self.path}: cannot open checkpoint: {error}") from None
        try:
            if fresh:
                self._create(db)
            else:
                self._check(db)
            db.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL loses nothing on a process crash (only on power loss, the last
            # commits), and saves an fsync per commit.
            db.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as error:
            db.close()
            raise CheckpointError(f"{self.path}: not a usable crawler checkpoint ({error})") from None
        except CheckpointError:
            db.close()
            raise
        return db

    def _create(self, db: sqlite3.Connection) -> None:
        db.executescript(
            f"BEGIN; PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};"
            f"{_SCHEMA} COMMIT;"
        )

    def _check(self, db: sqlite3.Connection) -> None:
        version = check_schema(db, self.path)
        if version < SCHEMA_VERSION:
            _migrate(db, version)

    def claim_spider_set(self, spiders: list[str]) -> None:
        """Record which spiders this checkpoint is for, or refuse a config that runs others.

        Resuming one set of spiders from another set's checkpoint would silently mix two crawls.
        """
        wanted = json.dumps(sorted(spiders))
        row = self.db.execute("SELECT value FROM meta WHERE key = 'spider_set'").fetchone()
        if row is None:
            self.db.execute("INSERT INTO meta (key, value) VALUES ('spider_set', ?)", (wanted,))
        elif row[0] != wanted:
            raise CheckpointError(
                f"{self.path}: written for spiders {', '.join(json.loads(row[0]))}, but the config runs "
                f"{', '.join(sorted(spiders))}; use --fresh to start over, or another checkpoint.path"
            )

    def spider_id(self, name: str) -> int:
        self.db.execute("INSERT OR IGNORE INTO spiders (name) VALUES (?)", (name,))
        (spider_id,) = self.db.execute("SELECT id FROM spiders WHERE name = ?", (name,)).fetchone()
        return int(spider_id)

    def reset(self, spider: str) -> None:
        """Forget everything about one spider's crawl (``--fresh``)."""
        spider_id = self.spider_id(spider)
        with self.db:
            self.db.execute("BEGIN")
            for table in ("requests", "items", "rejected"):
                self.db.execute(f"DELETE FROM {table} WHERE spider = ?", (spider_id,))
            self.db.execute("DELETE FROM meta WHERE key LIKE ?", (f"spider:{spider_id}:%",))

    def frontier(self, spider: str) -> SQLiteFrontier:
        return SQLiteFrontier(self, spider)

    def _release_lock(self) -> None:
        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()

    def close(self) -> None:
        self.db.close()
        self._release_lock()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def delete_checkpoint(path: Path) -> None:
    """Remove an unusable checkpoint file and its WAL files (``--fresh`` on a file that is not ours)."""
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(f"{path}{suffix}")
        except FileNotFoundError:
            pass


P = ParamSpec("P")
R = TypeVar("R")


def _checkpoint_errors(method: Callable[P, R]) -> Callable[P, R]:
    """Turn SQLite's errors (disk full, I/O error, read-only file) into one CheckpointError.

    The failed transaction is rolled back, so what was committed before stays, and leases in
    flight are taken back by the next run: stopping here loses nothing.
    """

    @functools.wraps(method)
    def translated(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as error:
            frontier = args[0]
            assert isinstance(frontier, SQLiteFrontier)
            raise CheckpointError(f"{frontier.path}: cannot write the checkpoint: {error}") from None

    return translated


class SQLiteFrontier:
    """One spider's frontier inside a checkpoint file. Used from one thread only."""

    def __init__(self, checkpoint: Checkpoint, spider: str) -> None:
        self.spider = spider
        self.path = checkpoint.path
        self._checkpoint = checkpoint
        self._db = checkpoint.db
        self._owner = checkpoint.owner
        self._id = checkpoint.spider_id(spider)
        (last_seq,) = self._db.execute(
            "SELECT coalesce(max(seq), 0) FROM requests WHERE spider = ?", (self._id,)
        ).fetchone()
        self._seq = int(last_seq)
        self.resume = ResumeInfo(reclaimed=self._reclaim_in_flight())
        self._counts = self._count()
        self.resume.counts = self.counts()

    def _reclaim_in_flight(self) -> int:
        """Requeue what an earlier run left in flight: we hold the lock, so its owner is gone."""
        cursor = self._db.execute(
            "UPDATE requests SET state = 0, owner = NULL WHERE spider = ? AND state = 1", (self._id,)
        )
        return cursor.rowcount

    def _count(self) -> dict[str, int]:
        counts = dict.fromkeys(("queued", "in_flight", "done", "failed", "items", "rejected"), 0)
        names = {State.QUEUED: "queued", State.IN_FLIGHT: "in_flight", State.DONE: "done", State.FAILED: "failed"}
        for state, number in self._db.execute(
            "SELECT state, count(*) FROM requests WHERE spider = ? GROUP BY state", (self._id,)
        ):
            counts[names[State(state)]] = number
        for table in ("items", "rejected"):
            (counts[table],) = self._db.execute(
                f"SELECT count(*) FROM {table} WHERE spider = ?", (self._id,)
            ).fetchone()
        return counts

    def _rows(self, pending: Iterable[Pending]) -> list[tuple[object, ...]]:
        rows = []
        for entry in pending:
            self._seq += 1
            rows.append(
                (
                    fingerprint(self.spider, entry.request),
                    self._id,
                    self._seq,
                    entry.request.priority,
                    entry.depth,
                    entry.request.to_json(),
                )
            )
        return rows

    def _insert(self, rows: list[tuple[object, ...]]) -> int:
        if not rows:
            return 0
        cursor = self._db.executemany(
            "INSERT OR IGNORE INTO requests (fingerprint, spider, seq, state, priority, depth, request)"
            " VALUES (?, ?, ?, 0, ?, ?, ?)",
            rows,
        )
        added = cursor.rowcount
        self._counts["queued"] += added
        return added

    @_checkpoint_errors
    def add(self, pending: Iterable[Pending]) -> int:
        rows = self._rows(pending)
        with self._db:
            self._db.execute("BEGIN")
            return self._insert(rows)

    @_checkpoint_errors
    def lease(self, limit: int) -> list[Lease]:
        if limit <= 0 or not self._counts["queued"]:
            return []
        with self._db:
            self._db.execute("BEGIN")
            rows = self._db.execute(
                "UPDATE requests SET state = 1, owner = ? WHERE fingerprint IN ("
                " SELECT fingerprint FROM requests WHERE spider = ? AND state = 0"
                " ORDER BY priority DESC, seq LIMIT ?)"
                " RETURNING fingerprint, request, depth, attempts, priority, seq",
                (self._owner, self._id, limit),
            ).fetchall()
        self._counts["queued"] -= len(rows)
        self._counts["in_flight"] += len(rows)
        # RETURNING gives no order guarantee; hand work out in queue order.
        rows.sort(key=lambda row: (-row[4], row[5]))
        return [Lease(row[0], Request.from_json(row[1]), row[2], row[3]) for row in rows]

    @_checkpoint_errors
    def complete(self, completions: Sequence[Completion]) -> None:
        if not completions:
            return
        done, failed, children, items, rejected = [], [], [], [], []
        for completion in completions:
            lease = completion.lease
            if completion.error is None:
                done.append((completion.attempts, lease.fingerprint))
                children.extend(completion.children)
                items.extend((self._id, lease.fingerprint, data) for data in completion.items)
                rejected.extend(
                    (self._id, reject.url, reject.error, reject.data) for reject in completion.rejected
                )
            else:
                failed.append((completion.attempts, completion.error, completion.error_kind, lease.fingerprint))
        child_rows = self._rows(children)
        with self._db:
            self._db.execute("BEGIN")
            # The request is dropped from a done row: its fingerprint is all the seen-set needs.
            self._db.executemany(
                "UPDATE requests SET state = 2, attempts = attempts + ?, owner = NULL,"
                " request = NULL, error = NULL WHERE fingerprint = ?",
                done,
            )
            self._db.executemany(
                "UPDATE requests SET state = 3, attempts = attempts + ?, owner = NULL, error = ?,"
                " error_kind = ? WHERE fingerprint = ?",
                failed,
            )
            self._insert(child_rows)
            self._db.executemany("INSERT INTO items (spider, fingerprint, data) VALUES (?, ?, ?)", items)
            self._db.executemany(
                "INSERT INTO rejected (spider, url, error, data) VALUES (?, ?, ?, ?)", rejected
            )
            self._put_state("last_activity", str(time.time()))
        self._counts["in_flight"] -= len(completions)
        self._counts["done"] += len(done)
        self._counts["failed"] += len(failed)
        self._counts["items"] += len(items)
        self._counts["rejected"] += len(rejected)

    @_checkpoint_errors
    def release(self, leases: Iterable[Lease]) -> None:
        keys = [(lease.fingerprint,) for lease in leases]
        if not keys:
            return
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "UPDATE requests SET state = 0, owner = NULL WHERE fingerprint = ? AND state = 1", keys
            )
        self._counts["in_flight"] -= len(keys)
        self._counts["queued"] += len(keys)

    def counts(self) -> FrontierCounts:
        return FrontierCounts(**self._counts)

    def is_finished(self) -> bool:
        return not self._counts["queued"] and not self._counts["in_flight"]

    def items_after(self, item_id: int, limit: int) -> list[StoredItem]:
        rows = self._db.execute(
            "SELECT id, data FROM items WHERE spider = ? AND id > ? ORDER BY id LIMIT ?",
            (self._id, item_id, limit),
        )
        return [StoredItem(row_id, data) for row_id, data in rows]

    def failed(self, limit: int) -> list[FailedRequest]:
        rows = self._db.execute(
            "SELECT request, attempts, error, error_kind FROM requests WHERE spider = ? AND state = 3 LIMIT ?",
            (self._id, limit),
        )
        return [
            FailedRequest(Request.from_json(text).url, attempts, error, kind)
            for text, attempts, error, kind in rows
        ]

    @_checkpoint_errors
    def retry_failed(self, statuses: Iterable[int] = (), kinds: Iterable[str] = ()) -> int:
        conditions, parameters = [], []
        for status in statuses:
            conditions.append("error = ?")
            parameters.append(f"HTTP {status}")
        for kind in kinds:
            conditions.append("error_kind = ?")
            parameters.append(kind)
        where = f" AND ({' OR '.join(conditions)})" if conditions else ""
        with self._db:
            self._db.execute("BEGIN")
            requeued = self._db.execute(
                "UPDATE requests SET state = 0, error = NULL, error_kind = NULL"
                f" WHERE spider = ? AND state = 3{where}",
                (self._id, *parameters),
            ).rowcount
        self._counts["failed"] -= requeued
        self._counts["queued"] += requeued
        return requeued

    def rejected(self, limit: int) -> list[RejectedItem]:
        rows = self._db.execute(
            "SELECT url, error, data FROM rejected WHERE spider = ? ORDER BY id LIMIT ?", (self._id, limit)
        )
        return [RejectedItem(url, error, data) for url, error, data in rows]

    def get_state(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (self._key(key),)).fetchone()
        return None if row is None else str(row[0])

    @_checkpoint_errors
    def set_state(self, key: str, value: str) -> None:
        self._put_state(key, value)

    def _put_state(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (self._key(key), value),
        )

    def _key(self, key: str) -> str:
        return f"spider:{self._id}:{key}"
