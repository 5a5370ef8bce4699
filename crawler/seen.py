"""Links the checkpoint already holds, remembered in memory in front of it.

About ten links a page are found, and only one in ten or so is new (navigation, related items).
Without this, every one of them is given its stored form and handed to the backend, which looks
it up in the seen-set only to drop it. A set lookup drops it here instead, for any backend.
"""

from __future__ import annotations

from collections.abc import Iterable

# How many fingerprints are remembered before starting over: about 16 MB, enough to hold a
# site's navigation many times over, and a bound that keeps memory flat on a crawl of millions.
DEFAULT_LIMIT = 200_000


class SeenFilter:
    """Fingerprints known to be committed to the seen-set. Only what a commit has made durable
    is added (a link remembered before a rolled-back commit would never be queued); workers may
    look up while the engine adds."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self.limit = limit
        self._known: set[bytes] = set()

    def __contains__(self, fingerprint: object) -> bool:
        return fingerprint in self._known

    def __len__(self) -> int:
        return len(self._known)

    def committed(self, fingerprints: Iterable[bytes]) -> None:
        fingerprints = list(fingerprints)
        if len(self._known) + len(fingerprints) > self.limit:
            # Starting over costs a few duplicate lookups in the backend; a sliding window would
            # cost bookkeeping on every link.
            self._known = set()
        self._known.update(fingerprints)
