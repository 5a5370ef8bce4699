"""The embedded checkpoint: one SQLite file (WAL) holding every spider's frontier, seen-set and items.

Two tables share the work, so that the seen-set stays small on disk:

- ``seen`` is the seen-set: one row of fixed size per request ever queued (a 16-byte fingerprint,
  its state and attempt count). Rows never shrink, so its pages stay full: about 30 bytes per URL.
- ``queue`` holds the requests still to do or in flight, as JSON (never pickled). A row is deleted
  when its request is done, so its pages are reused, and given back with incremental vacuum.

A failed request's JSON moves to its ``seen`` row, so it can be queued again. The ``requests``
view shows both tables as one, for people inspecting a checkpoint.

One process at a time owns a checkpoint file: an advisory lock on ``<file>.lock`` is taken on
open and dies with the process, so a killed crawl never leaves a stale lock behind. Because of
that lock, whatever a previous run left in flight is known to be abandoned and is requeued at once.
Leases still carry a token and a deadline (the contract's, see ``base``): a lease its owner let
expire is reclaimed, and its late completion refused.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import itertools
import json
import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from ..exceptions import CheckpointError, CheckpointInUse, CheckpointWriteFailed
from ..items import RejectedItem
from .base import (
    CheckpointStatus,
    Committed,
    Completion,
    Entry,
    FailedRequest,
    FrontierCounts,
    Lease,
    Limits,
    ResumeInfo,
    State,
    StoredItem,
)
from .schema import SCHEMA_VERSION, check_integrity, check_schema, create, migrate

if TYPE_CHECKING:
    from ..processing import HostControl


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


class SQLiteBackend:
    """The embedded checkpoint: one SQLite file on this machine."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.location = str(path)

    def open(self, owner: str, *, lease_time: float = 60.0) -> Checkpoint:
        return Checkpoint(self.path, owner, lease_time=lease_time)

    def discard(self) -> None:
        delete_checkpoint(self.path)

    def status(self, limits: Mapping[str, Limits]) -> CheckpointStatus:
        from .sqlite_status import read_status

        return read_status(self.path, limits)


class Checkpoint:
    """An open, locked checkpoint file: the SQLite ``Store``."""

    def __init__(self, path: Path, owner: str, *, lease_time: float = 60.0) -> None:
        self.path = path
        self.location = str(path)
        self.owner = owner
        self.lease_time = lease_time
        # Tokens tell one lease of an entry from a later one; counted from the clock, so a later
        # run's never meet an earlier run's.
        self.tokens = itertools.count(time.time_ns())
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._lock_file = os.fdopen(_owner_only(Path(f"{path}.lock")), "a+b")
        except OSError as error:
            raise _cannot_open(path, error) from None
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.seek(0)
            holder = self._lock_file.read().decode(errors="replace").strip() or "another process"
            self._lock_file.close()
            raise CheckpointInUse(str(path), holder) from None
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
        try:
            # Queued requests are stored whole, their own headers included: readable by the
            # owner only. SQLite gives its -wal and -shm files the database file's mode.
            os.close(_owner_only(self.path))
            for suffix in ("-wal", "-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.chmod(f"{self.path}{suffix}", 0o600)
            db = sqlite3.connect(self.path, isolation_level=None)
        except OSError as error:
            raise _cannot_open(self.path, error) from None
        except sqlite3.Error as error:
            raise CheckpointError(f"{self.path}: cannot open the checkpoint: {error}") from None
        try:
            if self._is_empty(db):
                create(db)
            else:
                self._check(db)
            db.execute("PRAGMA journal_mode = WAL")
            # In WAL mode NORMAL loses nothing on a process crash (only on power loss, the last
            # commits), and saves an fsync per commit.
            db.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as error:
            db.close()
            if error.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN):
                raise _cannot_open(self.path, error) from None
            raise CheckpointError(f"{self.path}: not a usable crawler checkpoint ({error})") from None
        except CheckpointError:
            db.close()
            raise
        return db

    @staticmethod
    def _is_empty(db: sqlite3.Connection) -> bool:
        """No schema yet: a new file, or one whose creation was killed half-way.

        Asked of SQLite, not of the file size: a process killed while creating the checkpoint
        leaves a non-empty file and a hot journal, which SQLite rolls back to nothing on this
        first read.
        """
        (tables,) = db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        (application_id,) = db.execute("PRAGMA application_id").fetchone()
        return tables == 0 and application_id == 0

    def _check(self, db: sqlite3.Connection) -> None:
        version = check_schema(db, self.path)
        check_integrity(db, self.path)
        if version < SCHEMA_VERSION:
            migrate(db, version)

    def claim_spider_set(self, spiders: list[str]) -> None:
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
        spider_id = self.spider_id(spider)
        with self.db:
            self.db.execute("BEGIN")
            for table in ("seen", "queue", "items", "rejected"):
                self.db.execute(f"DELETE FROM {table} WHERE spider = ?", (spider_id,))
            self.db.execute("DELETE FROM meta WHERE key LIKE ?", (f"spider:{spider_id}:%",))

    def frontier(self, spider: str) -> SQLiteFrontier:
        return SQLiteFrontier(self, spider)

    def host_control(self, local: HostControl) -> HostControl:
        # One process holds the file: its scheduler is the whole crawl's.
        return local

    def _release_lock(self) -> None:
        fcntl.flock(self._lock_file, fcntl.LOCK_UN)
        self._lock_file.close()

    def close(self) -> None:
        try:
            # Give the pages of finished queue rows back to the file system. executescript, not
            # execute: the pragma frees one page per step, and a script runs it to the end.
            self.db.executescript("PRAGMA incremental_vacuum;")
        except sqlite3.Error:
            pass  # a full disk or a read-only file: the checkpoint is still whole, only larger
        finally:
            self.db.close()
            self._release_lock()

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _cannot_open(path: Path, error: OSError | sqlite3.Error) -> CheckpointError:
    """The error for a checkpoint that cannot be opened for writing, with what to do when it is
    a matter of permissions: it is nothing to do with the crawl, and --fresh would not help."""
    reason = error.strerror if isinstance(error, OSError) else str(error)
    writable = isinstance(error, sqlite3.Error) or error.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
    advice = (
        "; the checkpoint, its lock file and its folder must be writable by you (check their "
        "permissions, and that the disk is not mounted read-only), then run the same command"
    ) if writable else ""
    return CheckpointError(f"{path}: cannot open the checkpoint: {reason}{advice}")


def _owner_only(path: Path) -> int:
    """Open ``path`` for reading and appending, created if need be, readable by its owner only;
    returns the descriptor."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(descriptor, 0o600)  # a file made by an earlier version may be wider
    return descriptor


def delete_checkpoint(path: Path) -> None:
    """Remove an unusable checkpoint file and its WAL files (``--fresh`` on a file that is not ours)."""
    for suffix in ("", "-wal", "-shm"):
        try:
            os.unlink(f"{path}{suffix}")
        except FileNotFoundError:
            pass


# Variables per statement when a batch is looked up with IN (...): well under SQLite's limit.
_SQL_BATCH = 500

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
            raise CheckpointWriteFailed(f"{frontier.path}: cannot write the checkpoint: {error}") from None

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
        # Children are staged here, then queued in one statement unless already seen.
        self._db.execute(
            "CREATE TEMP TABLE IF NOT EXISTS candidates"
            " (position INTEGER, fingerprint BLOB, priority INTEGER, depth INTEGER, request TEXT, host TEXT)"
        )
        self._lease_time = checkpoint.lease_time
        self._tokens = checkpoint.tokens
        self.resume = ResumeInfo(reclaimed=self._reclaim_in_flight())
        self._counts = self._count()
        self.resume.counts = self.counts()
        # Queued (not leased) requests per host, and the hosts whose queued requests all wait
        # for a retry time (until when): kept here so leasing asks SQLite only where it pays.
        self._queued_by_host: Counter[str] = Counter(
            dict(self._db.execute(
                "SELECT host, count(*) FROM queue WHERE spider = ? AND owner IS NULL GROUP BY host", (self._id,)
            ).fetchall())
        )
        self._waiting_until: dict[str, float] = {}

    def _reclaim_in_flight(self) -> int:
        """Requeue what an earlier run left in flight: we hold the lock, so its owner is gone."""
        with self._db:
            self._db.execute("BEGIN")
            return self._db.execute(
                "UPDATE queue SET owner = NULL, lease_token = NULL, lease_until = NULL"
                " WHERE spider = ? AND owner IS NOT NULL",
                (self._id,),
            ).rowcount

    def _count(self) -> dict[str, int]:
        counts = dict.fromkeys(("queued", "in_flight", "done", "failed", "items", "rejected", "refused"), 0)
        names = {State.DONE: "done", State.FAILED: "failed", State.REFUSED: "refused"}
        for state, number in self._db.execute(
            "SELECT state, count(*) FROM seen WHERE spider = ? AND state IN (2, 3, 4) GROUP BY state", (self._id,)
        ):
            counts[names[State(state)]] = number
        for leased, number in self._db.execute(
            "SELECT owner IS NOT NULL, count(*) FROM queue WHERE spider = ? GROUP BY 1", (self._id,)
        ):
            counts["in_flight" if leased else "queued"] = number
        for table in ("items", "rejected"):
            (counts[table],) = self._db.execute(
                f"SELECT count(*) FROM {table} WHERE spider = ?", (self._id,)
            ).fetchone()
        return counts

    def _queue_new(self, entries: Iterable[Entry]) -> Counter[str]:
        """Queue the requests whose fingerprint was never seen, inside the caller's transaction;
        how many on each host (counted in memory by ``_queued_new`` once it commits)."""
        rows = [
            (position, entry.fingerprint, entry.priority, entry.depth, entry.data, entry.host)
            for position, entry in enumerate(entries)
        ]
        if not rows:
            return Counter()
        self._db.executemany("INSERT INTO temp.candidates VALUES (?, ?, ?, ?, ?, ?)", rows)
        # One row per new fingerprint (the first of a batch's duplicates), in the order given.
        hosts = Counter(host for (host,) in self._db.execute(
            "INSERT INTO queue (spider, fingerprint, priority, depth, request, host)"
            " SELECT ?, fingerprint, priority, depth, request, host FROM ("
            "  SELECT min(position) AS position, fingerprint, priority, depth, request, host"
            "  FROM temp.candidates AS c"
            "  WHERE NOT EXISTS (SELECT 1 FROM seen WHERE seen.fingerprint = c.fingerprint)"
            "  GROUP BY fingerprint) ORDER BY position"
            " RETURNING host",
            (self._id,),
        ))
        self._db.execute(
            "INSERT OR IGNORE INTO seen (fingerprint, spider, state) SELECT fingerprint, ?, 0 FROM temp.candidates",
            (self._id,),
        )
        self._db.execute("DELETE FROM temp.candidates")
        return hosts

    def _queued_new(self, hosts: Counter[str]) -> int:
        self._queued_more(hosts)
        self._counts["queued"] += (added := hosts.total())
        return added

    @_checkpoint_errors
    def add(self, entries: Iterable[Entry]) -> int:
        with self._db:
            self._db.execute("BEGIN")
            hosts = self._queue_new(entries)
        return self._queued_new(hosts)

    def _queued_more(self, hosts: Counter[str]) -> None:
        """Requests became ready on these hosts (new, released or requeued)."""
        self._queued_by_host.update(hosts)
        for host in hosts:
            self._waiting_until.pop(host, None)

    def ready_hosts(self) -> dict[str, int]:
        now = time.time()
        return {
            host: number
            for host, number in self._queued_by_host.items()
            if number > 0 and self._waiting_until.get(host, 0.0) <= now
        }

    @_checkpoint_errors
    def lease(self, wants: Mapping[str, int]) -> list[Lease]:
        now = time.time()
        token = next(self._tokens)
        leases: list[Lease] = []
        with self._db:
            self._db.execute("BEGIN")
            for host, want in wants.items():
                if want <= 0 or self._queued_by_host[host] <= 0:
                    continue
                rows = self._db.execute(
                    "UPDATE queue SET owner = ?, lease_token = ?, lease_until = ? WHERE seq IN ("
                    " SELECT seq FROM queue WHERE spider = ? AND host = ? AND owner IS NULL AND not_before <= ?"
                    " ORDER BY priority DESC, seq LIMIT ?)"
                    " RETURNING seq, fingerprint, request, depth, priority, attempts",
                    (self._owner, token, now + self._lease_time, self._id, host, now, want),
                ).fetchall()
                # RETURNING gives no order guarantee; hand work out in queue order.
                rows.sort(key=lambda row: (-row[4], row[0]))
                leases.extend(
                    Lease(fp, text, depth, seq, host, attempts, token, self.spider)
                    for seq, fp, text, depth, _, attempts in rows
                )
                self._queued_by_host[host] -= len(rows)
                if len(rows) < want and self._queued_by_host[host] > 0:
                    # What is left of this host waits for a retry time: do not ask again before it.
                    (ready_at,) = self._db.execute(
                        "SELECT min(not_before) FROM queue WHERE spider = ? AND host = ? AND owner IS NULL",
                        (self._id, host),
                    ).fetchone()
                    self._waiting_until[host] = ready_at
                elif self._queued_by_host[host] <= 0:
                    del self._queued_by_host[host]
        self._counts["queued"] -= len(leases)
        self._counts["in_flight"] += len(leases)
        return leases

    def _held(self, leases: Iterable[Lease]) -> set[tuple[int, int]]:
        """The keys of those of these leases still held as they were handed out (a batch may
        hold an expired lease of an entry and the lease that took it over)."""
        entries = list({lease.entry for lease in leases})
        held: set[tuple[int, int]] = set()
        for start in range(0, len(entries), _SQL_BATCH):
            chunk = entries[start : start + _SQL_BATCH]
            held.update(self._db.execute(
                f"SELECT seq, lease_token FROM queue WHERE owner = ? AND seq IN ({','.join('?' * len(chunk))})",
                (self._owner, *chunk),
            ))
        return held

    @_checkpoint_errors
    def renew(self, leases: Iterable[Lease]) -> int:
        rows = [(time.time() + self._lease_time, lease.entry, lease.token, self._owner) for lease in leases]
        if not rows:
            return 0
        with self._db:
            self._db.execute("BEGIN")
            return self._db.executemany(
                "UPDATE queue SET lease_until = ? WHERE seq = ? AND lease_token = ? AND owner = ?", rows
            ).rowcount

    @_checkpoint_errors
    def reclaim_expired(self) -> int:
        with self._db:
            self._db.execute("BEGIN")
            hosts = Counter(host for (host,) in self._db.execute(
                "UPDATE queue SET owner = NULL, lease_token = NULL, lease_until = NULL"
                " WHERE spider = ? AND owner IS NOT NULL AND lease_until < ? RETURNING host",
                (self._id, time.time()),
            ))
        if reclaimed := hosts.total():
            self._queued_more(hosts)
            self._counts["in_flight"] -= reclaimed
            self._counts["queued"] += reclaimed
        return reclaimed

    @_checkpoint_errors
    def complete(self, completions: Sequence[Completion]) -> Committed:
        if not completions:
            return Committed()
        held = self._held(completion.lease for completion in completions)
        finished, done, failed, refused, children, items, rejected = [], [], [], [], [], [], []
        deferred, tried, deferred_hosts = [], [], Counter[str]()
        stale = 0
        for completion in completions:
            lease = completion.lease
            if lease.key not in held:
                stale += 1  # reclaimed since: whoever holds it now commits it
                continue
            if completion.retry_at is not None:
                # Back in the queue until its time; the tries so far count against its budget.
                deferred.append((completion.retry_at, completion.attempts, lease.entry))
                tried.append((completion.attempts, lease.fingerprint))
                deferred_hosts[lease.host] += 1
                continue
            finished.append((lease.entry,))
            if completion.refused:
                refused.append((completion.error, completion.error_kind, lease.fingerprint))
            elif completion.error is None:
                done.append((completion.attempts, lease.fingerprint))
                children.extend(completion.children)
                items.extend((self._id, lease.fingerprint, data) for data in completion.items)
                rejected.extend(
                    (self._id, reject.url, reject.error, reject.data) for reject in completion.rejected
                )
            else:
                failed.append(
                    (completion.attempts, completion.error, completion.error_kind, completion.status,
                     lease.data, lease.depth, lease.host, lease.request.priority, lease.fingerprint)
                )
        with self._db:
            self._db.execute("BEGIN")
            # The queue row goes; the seen row stays, small, as the memory that it was fetched.
            self._db.executemany("DELETE FROM queue WHERE seq = ?", finished)
            self._db.executemany(
                "UPDATE seen SET state = 2, attempts = attempts + ? WHERE fingerprint = ?", done
            )
            # A failed request keeps its JSON and depth, so retry-failed can queue it again.
            self._db.executemany(
                "UPDATE seen SET state = 3, attempts = attempts + ?, error = ?, error_kind = ?,"
                " error_status = ?, request = ?, depth = ?, host = ?, priority = ? WHERE fingerprint = ?",
                failed,
            )
            self._db.executemany(
                "UPDATE seen SET state = 4, error = ?, error_kind = ? WHERE fingerprint = ?", refused
            )
            self._db.executemany(
                "UPDATE queue SET owner = NULL, lease_token = NULL, lease_until = NULL, not_before = ?,"
                " attempts = attempts + ? WHERE seq = ?",
                deferred,
            )
            self._db.executemany("UPDATE seen SET attempts = attempts + ? WHERE fingerprint = ?", tried)
            new_hosts = self._queue_new(children)
            self._db.executemany("INSERT INTO items (spider, fingerprint, data) VALUES (?, ?, ?)", items)
            self._db.executemany(
                "INSERT INTO rejected (spider, url, error, data) VALUES (?, ?, ?, ?)", rejected
            )
            self._put_state("last_activity", str(time.time()))
        self._queued_new(new_hosts)
        # Deferred rows are queued again but not ready: leasing finds when they will be.
        self._queued_by_host.update(deferred_hosts)
        self._counts["in_flight"] -= len(completions) - stale
        self._counts["queued"] += len(deferred)
        self._counts["done"] += len(done)
        self._counts["failed"] += len(failed)
        self._counts["refused"] += len(refused)
        self._counts["items"] += len(items)
        self._counts["rejected"] += len(rejected)
        return Committed(len(completions) - stale, stale)

    @_checkpoint_errors
    def release(self, leases: Iterable[Lease]) -> int:
        leases = list(leases)
        if not leases:
            return 0
        with self._db:
            self._db.execute("BEGIN")
            held = self._held(leases)
            released = [lease for lease in leases if lease.key in held]
            self._db.executemany(
                "UPDATE queue SET owner = NULL, lease_token = NULL, lease_until = NULL WHERE seq = ?",
                [(lease.entry,) for lease in released],
            )
        self._queued_more(Counter(lease.host for lease in released))
        self._counts["in_flight"] -= len(released)
        self._counts["queued"] += len(released)
        return len(leases) - len(released)

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

    def failed_kinds(self) -> dict[str, int]:
        return failed_kinds(self._db, self._id)

    def failed_statuses(self) -> dict[int, int]:
        return failed_statuses(self._db, self._id)

    def failed(self, limit: int) -> list[FailedRequest]:
        rows = self._db.execute(
            "SELECT request, attempts, error, error_kind FROM seen WHERE spider = ? AND state = 3 LIMIT ?",
            (self._id, limit),
        )
        return [FailedRequest(text, attempts, error, kind) for text, attempts, error, kind in rows]

    @_checkpoint_errors
    def retry_failed(self, statuses: Iterable[int] = (), kinds: Iterable[str] = ()) -> int:
        conditions, parameters = [], []
        for status in statuses:
            conditions.append("error_status = ?")
            parameters.append(status)
        for kind in kinds:
            conditions.append("error_kind = ?")
            parameters.append(kind)
        where = f" AND ({' OR '.join(conditions)})" if conditions else ""
        with self._db:
            self._db.execute("BEGIN")
            chosen = self._db.execute(
                "SELECT fingerprint, coalesce(priority, 0), coalesce(depth, 0), request, host FROM seen"
                f" WHERE spider = ? AND state = 3{where}",
                (self._id, *parameters),
            ).fetchall()
            rows = [(self._id, *row) for row in chosen]
            self._db.executemany(
                "INSERT INTO queue (spider, fingerprint, priority, depth, request, host) VALUES (?, ?, ?, ?, ?, ?)", rows
            )
            self._db.executemany(
                "UPDATE seen SET state = 0, error = NULL, error_kind = NULL, error_status = NULL,"
                " request = NULL, depth = NULL, host = NULL, priority = NULL"
                " WHERE fingerprint = ?",
                [(row[0],) for row in chosen],
            )
        self._queued_more(Counter(row[-1] for row in chosen))
        self._counts["failed"] -= len(chosen)
        self._counts["queued"] += len(chosen)
        return len(chosen)

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


def failed_kinds(db: sqlite3.Connection, spider_id: int) -> dict[str, int]:
    """A spider's failed requests by error kind (also read by ``crawler status``)."""
    rows = db.execute(
        "SELECT error_kind, count(*) FROM seen WHERE spider = ? AND state = 3 GROUP BY error_kind", (spider_id,)
    )
    return {kind or "unknown": count for kind, count in rows}


def failed_statuses(db: sqlite3.Connection, spider_id: int) -> dict[int, int]:
    """A spider's requests failed by an HTTP status, by status (also read by ``crawler status``)."""
    rows = db.execute(
        "SELECT error_status, count(*) FROM seen WHERE spider = ? AND state = 3 AND error_status IS NOT NULL"
        " GROUP BY error_status",
        (spider_id,),
    )
    return dict(rows)
