"""What crosses the pipe between the coordinator and a worker process: pickled tuples.

Coordinator to worker process:
  ``("lease", Lease)``: work on it; ``("reply", call, value, error)``: the answer to a call;
  ``("stop",)``: finish what is in hand, give back what is not started, say bye and exit.
Worker process to coordinator:
  ``("done", [(lease key, completion fields or None, latency, ok), ...], {spider: stats changes})``;
  ``("pause", host, seconds)`` and ``("crawl_delay", host, seconds)`` for the host scheduler;
  ``("call", call, "login" | "robots", args)``: a robots.txt call is answered with the file's
  (status, body), its fetch's error, or None: fetch it, then send ``("robots_fetched", url,
  (status, body) or error)``, which others may be waiting for; ``("log", logger, level, text)``;
  ``("failed", CrawlerError)`` when it cannot start; ``("bye", sessions opened)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any

from ..frontier.base import Completion, Lease
from ..seen import SeenFilter

# A completion crosses the pipe as its fields after the lease, in this order.
_COMPLETION_FIELDS = tuple(field.name for field in fields(Completion) if field.name != "lease")


def to_wire(completion: Completion) -> tuple[Any, ...]:
    return tuple(getattr(completion, name) for name in _COMPLETION_FIELDS)


def from_wire(lease: Lease, wire: Sequence[Any], seen: SeenFilter) -> Completion:
    values = dict(zip(_COMPLETION_FIELDS, wire, strict=True))
    if values["children"]:
        # Worker processes do not know what the checkpoint holds: links it has are dropped here.
        values["children"] = [child for child in values["children"] if child.fingerprint not in seen]
    return Completion(lease, **values)
