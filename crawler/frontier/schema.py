"""The SQLite checkpoint's schema: its tables, its version, and how older files are migrated."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from ..exceptions import CheckpointError
from ..request import host_key

SCHEMA_VERSION = 6
# Marks the file as ours, so any other SQLite database is refused rather than written into.
APPLICATION_ID = 0x43524157  # "CRAW"

_TABLES = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE spiders (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
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

# The seen-set and the queue apart (schema 3), and the view. Queue rows carry their host, so
# work is leased host by host, and a not-before time, so a retry waits in the queue (schema 4).
# A request failed by an HTTP status keeps it as a number, for retry-failed --status (schema 5).
# A lease has a token and a deadline; a failed request keeps its host and priority, so it is
# queued again without reading its stored form (schema 6).
_FRONTIER_TABLES = """
CREATE TABLE seen (
    fingerprint BLOB PRIMARY KEY,
    spider INTEGER NOT NULL,
    state INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    error_kind TEXT,
    request TEXT,
    depth INTEGER,
    error_status INTEGER,
    host TEXT,
    priority INTEGER
) WITHOUT ROWID;
CREATE INDEX seen_failed ON seen (spider) WHERE state = 3;
CREATE TABLE queue (
    seq INTEGER PRIMARY KEY,
    spider INTEGER NOT NULL,
    fingerprint BLOB NOT NULL,
    priority INTEGER NOT NULL,
    depth INTEGER NOT NULL,
    owner TEXT,
    request TEXT NOT NULL,
    host TEXT NOT NULL DEFAULT '',
    not_before REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    lease_token INTEGER,
    lease_until REAL
);
CREATE INDEX queue_ready ON queue (spider, host, priority DESC, seq) WHERE owner IS NULL;
CREATE INDEX queue_leased ON queue (spider, owner) WHERE owner IS NOT NULL;
CREATE INDEX queue_expiring ON queue (spider, lease_until) WHERE owner IS NOT NULL;
CREATE VIEW requests AS
SELECT seen.fingerprint, seen.spider, queue.seq,
       CASE WHEN queue.owner IS NOT NULL THEN 1 ELSE seen.state END AS state,
       queue.priority, coalesce(queue.depth, seen.depth) AS depth, seen.attempts, queue.owner,
       coalesce(queue.request, seen.request) AS request, seen.error, seen.error_kind, seen.error_status
FROM seen LEFT JOIN queue ON queue.fingerprint = seen.fingerprint;
"""

# What each older schema needs to become the next: (the version it reaches, its SQL). Schema 3
# rebuilt the frontier tables, and builds them in today's layout: a file older than 3 skips
# the steps after it. ``crawler_host(request)`` is a function migrate() lends SQLite.
_REBUILT_AT = 3
_MIGRATIONS: tuple[tuple[int, str], ...] = (
    # 2: failed requests keep their error kind
    (2, "ALTER TABLE requests ADD COLUMN error_kind TEXT;"),
    # 3: the one requests table split into seen and queue
    (3, _FRONTIER_TABLES.replace("CREATE VIEW requests", "CREATE VIEW requests_v3")
    + """
    INSERT INTO seen (fingerprint, spider, state, attempts, error, error_kind, request, depth, error_status,
                      host, priority)
    SELECT fingerprint, spider, CASE state WHEN 1 THEN 0 ELSE state END, attempts, error, error_kind,
           CASE WHEN state = 3 THEN request END, CASE WHEN state = 3 THEN depth END,
           CASE WHEN state = 3 AND coalesce(error_kind, 'HTTPStatusError') = 'HTTPStatusError'
                     AND error GLOB 'HTTP [0-9][0-9][0-9]'
                THEN CAST(substr(error, 6) AS INTEGER) END,
           CASE WHEN state = 3 THEN crawler_host(request) END, CASE WHEN state = 3 THEN priority END
    FROM requests;
    INSERT INTO queue (spider, fingerprint, priority, depth, owner, request, host)
    SELECT spider, fingerprint, priority, depth, owner, request, crawler_host(request)
    FROM requests WHERE state IN (0, 1) ORDER BY seq;
    DROP TABLE requests;
    DROP VIEW requests_v3;
    """
    + _FRONTIER_TABLES[_FRONTIER_TABLES.index("CREATE VIEW requests") :]),
    # 4: queue rows know their host, their not-before time and their attempts so far
    (4, """
    ALTER TABLE queue ADD COLUMN host TEXT NOT NULL DEFAULT '';
    ALTER TABLE queue ADD COLUMN not_before REAL NOT NULL DEFAULT 0;
    ALTER TABLE queue ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    UPDATE queue SET host = crawler_host(request);
    DROP INDEX queue_ready;
    CREATE INDEX queue_ready ON queue (spider, host, priority DESC, seq) WHERE owner IS NULL;
    """),
    # 5: a request failed by an HTTP status keeps the status as a number. Files before it said
    # it only in the error text ("HTTP 503"), which is read this once (schema 1 had no kinds).
    (5, """
    ALTER TABLE seen ADD COLUMN error_status INTEGER;
    UPDATE seen SET error_status = CAST(substr(error, 6) AS INTEGER)
    WHERE state = 3 AND coalesce(error_kind, 'HTTPStatusError') = 'HTTPStatusError' AND error GLOB 'HTTP [0-9][0-9][0-9]';
    DROP VIEW IF EXISTS requests;
    """ + _FRONTIER_TABLES[_FRONTIER_TABLES.index("CREATE VIEW requests") :]),
    # 6: leases have a token and a deadline; failed requests keep their host and priority
    (6, """
    ALTER TABLE queue ADD COLUMN lease_token INTEGER;
    ALTER TABLE queue ADD COLUMN lease_until REAL;
    CREATE INDEX queue_expiring ON queue (spider, lease_until) WHERE owner IS NOT NULL;
    ALTER TABLE seen ADD COLUMN host TEXT;
    ALTER TABLE seen ADD COLUMN priority INTEGER;
    UPDATE seen SET host = crawler_host(request), priority = coalesce(json_extract(request, '$.priority'), 0)
    WHERE state = 3;
    """),
)


def _host_of_request(text: str) -> str:
    return host_key(json.loads(text)["url"])


def create(db: sqlite3.Connection) -> None:
    """Lay out a new, empty checkpoint file."""
    # auto_vacuum must be chosen before the first table exists: it lets Checkpoint.close() give
    # back the pages that finished queue rows leave behind.
    db.executescript(
        f"PRAGMA auto_vacuum = INCREMENTAL; BEGIN; PRAGMA application_id = {APPLICATION_ID};"
        f" PRAGMA user_version = {SCHEMA_VERSION}; {_TABLES} {_FRONTIER_TABLES} COMMIT;"
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


def check_integrity(db: sqlite3.Connection, path: Path) -> None:
    """Refuse a damaged file now, with what to do, rather than fail on the first page that
    reads the damaged part, mid-crawl. SQLite's quick check reads every page once (about a
    second for a checkpoint of a million URLs)."""
    try:
        (result,) = db.execute("PRAGMA quick_check(1)").fetchone()
    except sqlite3.DatabaseError as error:
        result = str(error)
    if result != "ok":
        problem = result.strip().splitlines()[-1]
        raise CheckpointError(
            f"{path}: the checkpoint is damaged ({problem}); restore it from a copy, "
            "or run with --fresh to start the crawl over"
        )


def migrate(db: sqlite3.Connection, version: int) -> None:
    """Bring an older checkpoint up to this schema, in one transaction."""
    steps = ""
    for reaches, sql in _MIGRATIONS:
        if reaches > version:
            steps += sql
            if reaches == _REBUILT_AT:
                break
    db.create_function("crawler_host", 1, _host_of_request, deterministic=True)
    try:
        db.executescript(f"BEGIN; {steps} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
    except sqlite3.Error:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    if version < 3:
        # Incremental vacuum can only be switched on by rebuilding the file once.
        db.executescript("PRAGMA auto_vacuum = INCREMENTAL; VACUUM;")
