"""One login for a crawl that runs as several processes on several machines.

Every ``crawler run`` of a cluster has its own ``ClusterLogin``; they meet on a ``LoginBoard``
(Redis: ``crawler.frontier.redis_shared.RedisLoginBoard``), which holds the cluster's latest login
generation with its cookies, and a lock that makes logging in single-flight across machines.
A process that needs a login adopts the board's when it is newer than the one its request was
sent under, and logs in itself only when it is not, holding the lock; whoever waits for the
lock watches the board and adopts what the holder publishes. So the first login, and each
re-login after the site revokes the session, is made once for the whole cluster, and every
process's jar holds it under the same generation number (the number ``CrawlCookieJar``'s
stamps, and the requests sent under it, go by).

Only the cookies the login's own session set cross the board, as plain dicts: never the
credentials, nor any token header.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from http.cookiejar import Cookie
from typing import Any, Protocol

import requests

from ..exceptions import CheckpointError, LoginFailed
from ..stats import Stats
from .cookies import CrawlCookieJar, cookie_from_dict, cookie_to_dict
from .login import Login, SingleFlightLogin, attempt_login

logger = logging.getLogger(__name__)

#: A cookie as the board hands it back: as published (a dict), or as a cookie object.
CookieRecord = Mapping[str, Any] | Cookie

# Polling a lock another machine holds: the first wait, doubling up to the longest.
_FIRST_POLL = 0.01
_LONGEST_POLL = 0.2


class LoginBoard(Protocol):
    """Where the processes of a cluster find one spider's login. Raises CheckpointError (or
    CheckpointUnavailable) when it cannot be read or written."""

    def current(self) -> tuple[int, Sequence[CookieRecord]] | None:
        """The latest login generation and its cookies; None before the first login."""

    def try_lock(self, holder: str, ttl: float) -> bool:
        """Take the login lock for ``ttl`` seconds, unless anyone holds it."""

    def renew_lock(self, holder: str, ttl: float) -> bool:
        """Hold the lock ``ttl`` seconds more from now, if ``holder`` still holds it."""

    def unlock(self, holder: str) -> None:
        """Let the lock go, if ``holder`` holds it (a lock that lapsed may be another's now)."""

    def publish(self, holder: str, generation: int, cookies: Sequence[Mapping[str, Any]]) -> bool:
        """Make ``cookies`` the login ``generation``, in one atomic step, only if ``holder``
        holds the lock and ``generation`` is the board's + 1; whether it did."""


def poll_delays() -> Iterator[float]:
    """How long to wait between looks at a lock another machine holds: short at first, since
    most waits are for a step about to end, then longer; jittered, so that machines which
    started waiting together do not keep asking together."""
    delay = _FIRST_POLL
    while True:
        yield random.uniform(delay / 2, delay)
        delay = min(2 * delay, _LONGEST_POLL)


class KeepLocked:
    """Renews a lock from a timer thread while the slow step run under it lasts (``with``),
    every third of its ttl: a holder that is working keeps it, a holder that died loses it a
    ttl later. ``renew`` answers whether the lock is still ours; once it is not, renewing
    stops, and what only the holder may do (publish a login) is refused."""

    def __init__(self, renew: Callable[[], bool], ttl: float, what: str) -> None:
        self.renew = renew
        self.every = ttl / 3
        self.what = what
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._keep, name=f"crawler-lock {what}", daemon=True)

    def __enter__(self) -> KeepLocked:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join()

    def _keep(self) -> None:
        while not self._done.wait(self.every):
            try:
                if not self.renew():
                    logger.warning("the lock of %s lapsed while it was held; another may take it", self.what)
                    return
            except CheckpointError as error:  # the next renewal may get through, before the ttl ends
                logger.warning("cannot renew the lock of %s: %s", self.what, error)


def default_holder() -> str:
    """A name for this process on the board, unique across the cluster's machines."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class ClusterLogin(SingleFlightLogin):
    """``SharedLogin`` for one process of a crawl whose login all its processes share.

    ``cookies`` is this process's jar (every worker's session holds it). It starts empty: the
    board is where the cluster keeps its login, between runs too (a cookie file loaded into the
    jar would number its login apart from the board's). ``new_session`` makes the session each
    login runs in, with a jar of its own (as for ``LoginCoordinator``). ``holder`` names this
    process on the board's lock; ``lock_ttl`` is how long the cluster waits for a holder that
    died before another process logs in.

    The threads of this process make one call at a time; the others then find the generation
    moved on, and replay. A login that failed (LoginFailed) is raised again to every later call
    of this process, without trying again; each process of the cluster finds that out by
    trying once itself.
    """

    def __init__(
        self,
        login: Login,
        stats: Stats,
        *,
        board: LoginBoard,
        cookies: CrawlCookieJar,
        new_session: Callable[[], requests.Session],
        holder: str | None = None,
        lock_ttl: float = 10.0,
    ) -> None:
        if lock_ttl <= 0:
            raise ValueError("lock_ttl must be > 0 seconds")
        super().__init__(login, stats, cookies)
        self.board = board
        self.new_session = new_session
        self.holder = holder or default_holder()
        self.lock_ttl = lock_ttl

    def log_in_unless_moved_on(self, seen: int) -> None:
        """Adopt the cluster's login if it is newer than generation ``seen``; else log in, once
        for the cluster (unless the login failed here before)."""
        with self._lock:
            if self._failure is not None:
                raise self._failure
            if self.cookies.generation != seen:
                return  # this process took a newer login since that request was sent
            try:
                self._catch_up(seen)
            except LoginFailed as failure:
                self._failure = failure
                raise

    def _catch_up(self, seen: int) -> None:
        delays = poll_delays()
        unpublished: list[dict[str, Any]] | None = None
        while True:
            if self._adopt_newer(seen):
                return
            if self.board.try_lock(self.holder, self.lock_ttl):
                try:
                    unpublished = self._publish_login(seen, unpublished)
                finally:
                    self._unlock()
                if unpublished is None:
                    return
            else:
                time.sleep(next(delays))  # another process is logging in: watch for its login

    def _publish_login(self, seen: int, made: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        """Holding the lock, publish a login as generation ``seen`` + 1: ``made`` (the cookies
        of one this process made, but could not publish), or a new one. None once it is
        published, or adopted from the board; else the login's cookies, which could not be
        published because the lock lapsed meanwhile (the board then goes to whoever took the
        lock; if it has nothing newer by the time this process takes the lock again, these
        cookies are published then, rather than logging in once more)."""
        with KeepLocked(lambda: self.board.renew_lock(self.holder, self.lock_ttl), self.lock_ttl, "the login"):
            # The holder before us may have published just before we took the lock.
            if self._adopt_newer(seen):
                return None
            generation = seen + 1  # the board is at ``seen``: neither newer nor behind
            if made is None:
                made = [cookie_to_dict(cookie) for cookie in attempt_login(self.login, self.new_session, self.stats)]
                self.stats.inc("logins")
                if seen:  # a login because the site logged us out
                    self.stats.inc("relogins")
            if not self.board.publish(self.holder, generation, made):
                logger.warning("the login lock lapsed while logging in; publishing the login when it is ours again")
                return made
        self.cookies.adopt_login(map(cookie_from_dict, made), generation)
        logger.info("logged in for the cluster (login %d)", generation)
        return None

    def _adopt_newer(self, seen: int) -> bool:
        """Take the board's login if it is newer than ``seen``; whether it was."""
        latest = self.board.current()
        generation, records = latest if latest is not None else (0, ())
        if generation < seen:
            # Generations only grow on a board, and this process's come from it: it lost its data.
            raise CheckpointError(
                f"the cluster's login is at generation {generation}, behind this process's {seen}: "
                "the board lost it (its server restarted without its data?); start the crawl's processes again"
            )
        if generation == seen:
            return False
        cookies = [cookie_from_dict(record if isinstance(record, Mapping) else cookie_to_dict(record)) for record in records]
        # A login from a run long ago may hold cookies that have expired since.
        self.cookies.adopt_login([cookie for cookie in cookies if not cookie.is_expired()], generation)
        logger.info("took the cluster's login %d", generation)
        return True

    def _unlock(self) -> None:
        try:
            self.board.unlock(self.holder)
        except CheckpointError as error:  # harmless: the lock lapses after its ttl
            logger.warning("cannot let the login lock go: %s", error)
