"""Reading where a crawl stands from its SQLite checkpoint, without crawling or locking.

Safe while a crawl is running: the file is opened read-only, and WAL lets a reader see the
last commit without blocking the writer.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path

from ..exceptions import CheckpointError
from .base import RUN_STATS, SEEDED, CheckpointStatus, FrontierCounts, Limits, SpiderStatus, State, crawl_is_finished
from .schema import check_integrity, check_schema
from .sqlite import failed_kinds, failed_statuses, lock_holder


def read_status(path: Path, limits: Mapping[str, Limits] | None = None) -> CheckpointStatus:
    """Where each spider's crawl stands; ``limits`` are the spiders' caps from the config, which
    decide whether a crawl that stopped at one is finished."""
    # An empty file is what a run that was killed as it created the checkpoint leaves, and what
    # `crawler run` starts a new crawl in: nothing has been crawled in it either.
    if not path.exists() or path.stat().st_size == 0:
        raise CheckpointError(f"{path}: no checkpoint yet; nothing has been crawled")
    running = lock_holder(path)
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            check_schema(db, path)
            check_integrity(db, path)
            spiders = [
                _spider_status(db, spider_id, name, (limits or {}).get(name, Limits()))
                for spider_id, name in db.execute("SELECT id, name FROM spiders ORDER BY id").fetchall()
            ]
    except sqlite3.Error as error:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({error})") from None
    return CheckpointStatus(str(path), running, spiders)


def _spider_status(db: sqlite3.Connection, spider_id: int, name: str, limits: Limits) -> SpiderStatus:
    by_state = dict(
        db.execute("SELECT state, count(*) FROM seen WHERE spider = ? AND state IN (2, 3, 4) GROUP BY state", (spider_id,))
    )
    owners = dict(
        db.execute(
            "SELECT owner, count(*) FROM queue WHERE spider = ? AND owner IS NOT NULL GROUP BY owner",
            (spider_id,),
        )
    )
    (queued,) = db.execute("SELECT count(*) FROM queue WHERE spider = ? AND owner IS NULL", (spider_id,)).fetchone()
    (items,) = db.execute("SELECT count(*) FROM items WHERE spider = ?", (spider_id,)).fetchone()
    (rejected,) = db.execute("SELECT count(*) FROM rejected WHERE spider = ?", (spider_id,)).fetchone()
    counts = FrontierCounts(
        queued=queued,
        in_flight=sum(owners.values()),
        done=by_state.get(State.DONE, 0),
        failed=by_state.get(State.FAILED, 0),
        items=items,
        rejected=rejected,
        refused=by_state.get(State.REFUSED, 0),
    )
    state = dict(db.execute("SELECT key, value FROM meta WHERE key LIKE ?", (f"spider:{spider_id}:%",)))
    seeded = f"spider:{spider_id}:{SEEDED}" in state
    last = state.get(f"spider:{spider_id}:last_activity")
    run_stats = json.loads(state.get(f"spider:{spider_id}:{RUN_STATS}") or "{}")
    return SpiderStatus(
        spider=name,
        counts=counts,
        finished=crawl_is_finished(seeded, counts, limits),
        last_activity=float(last) if last else None,
        in_flight_owners=owners,
        hosts=run_stats.get("hosts", {}),
        reasons=run_stats.get("counts", {}),
        failed_kinds=failed_kinds(db, spider_id),
        failed_statuses=failed_statuses(db, spider_id),
    )
