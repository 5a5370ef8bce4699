"""Machine-readable accounts of a crawl: ``crawler status --json`` and ``crawler run
--stats-file``, in one documented schema (README, "Machine-readable status and stats").

Both are JSON objects with ``"schema": 1``; a later schema adds keys, and a new number means
keys changed meaning. Counts are those of ``FrontierCounts`` (queued, in_flight, done, failed,
items, rejected, refused); times are Unix seconds.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .frontier.base import CheckpointStatus, FrontierCounts
from .runner import RunReport

SCHEMA = 1


def status_document(status: CheckpointStatus) -> dict[str, Any]:
    """Where the crawl stands, per spider, as ``crawler status`` prints it."""
    return {
        "schema": SCHEMA,
        "checkpoint": status.location,
        "running": status.running,
        "spiders": [
            {
                "spider": spider.spider,
                "finished": spider.finished,
                "counts": dataclasses.asdict(spider.counts),
                "last_activity": spider.last_activity,
                "in_flight_owners": spider.in_flight_owners,
                "hosts": spider.hosts,
                "reasons": spider.reasons,
                "failed_kinds": spider.failed_kinds,
                "failed_statuses": {str(code): count for code, count in spider.failed_statuses.items()},
            }
            for spider in status.spiders
        ],
    }


def run_document(report: RunReport, exit_code: int) -> dict[str, Any]:
    """What one ``crawler run`` did, and where the crawl stands after it."""
    return {
        "schema": SCHEMA,
        "exit_code": exit_code,
        "interrupted": report.interrupted,
        "elapsed": round(report.elapsed, 3),
        "whole_crawl": _counts(report.whole_crawl),
        "this_run": _counts(report.this_run),
        "spiders": [
            {
                "spider": result.spider,
                "finished": result.finished,
                "already_finished": result.already_finished,
                "counts": _counts(result.counts),
                "failed_kinds": result.failed_kinds,
                "failed_statuses": {str(code): count for code, count in result.failed_statuses.items()},
                "reasons": result.reasons,
                "hosts": result.hosts,
            }
            for result in report.results
        ],
        "stats": report.stats,
        "http": {
            "sessions": report.sessions,
            "requests_per_connection": round(report.requests_per_connection, 2),
        },
    }


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Whole or not at all: written beside ``path`` and renamed over it, so a reader (or a
    crash) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            json.dump(document, file, indent=2, sort_keys=True, default=str)
            file.write("\n")
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _counts(counts: FrontierCounts) -> dict[str, int]:
    return dataclasses.asdict(counts)
