"""Who works on the leases the engine hands out: threads of this process, or worker processes.

Either way the engine offers work through ``take`` (a lease, or None when the crawl is over for
workers) and hears of it through ``report``; workers never touch the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..frontier.base import Lease
from ..processing import Outcome

#: Blocks until there is a lease to work on; None: stop.
Take = Callable[[], Lease | None]
#: Called once for every lease taken, with what became of it.
Report = Callable[[Lease, Outcome], None]


class Workers(Protocol):
    def start(self, take: Take, report: Report) -> None: ...

    def stop(self, *, wait: bool) -> None:
        """After ``take`` has started to answer None: with ``wait``, until every lease taken is
        reported. Without it, what still runs is abandoned (its leases stay in flight)."""

    @property
    def sessions(self) -> int:
        """HTTP sessions the workers opened."""


__all__ = ["Report", "Take", "Workers"]
