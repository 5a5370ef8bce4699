"""A worker process's side of ``crawler.workers.processes``: its end of the pipe, the login,
host control and robots.txt fetch it borrows from the coordinator, and the loop that works on
the leases it is sent."""

from __future__ import annotations

import itertools
import logging
import os
import queue
import signal
import threading
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from typing import Any

from ..auth.cookies import CrawlCookieJar
from ..auth.login import Login
from ..exceptions import CrawlerError
from ..frontier.base import Lease
from ..politeness.robots import RobotsFetch
from ..processing import LeaseProcessor, Outcome
from ..response import Response
from ..stats import Stats
from ..stopping import StopSignal
from .threads import ThreadWorkers
from .wire import to_wire

logger = logging.getLogger(__name__)

# Results a worker process sends in one message, at most.
_RESULT_BATCH = 256
# Signals a worker process leaves to its coordinator (SIGKILL still ends it).
COORDINATORS_SIGNALS = frozenset({signal.SIGINT, signal.SIGTERM})


class ChildLink:
    """A worker process's end of the pipe: sends to the coordinator from any thread, and waits
    for the answers to its calls."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._send_lock = threading.Lock()
        self._calls = itertools.count()
        self._waiting: dict[int, queue.SimpleQueue[tuple[Any, BaseException | None]]] = {}
        self.closed = threading.Event()

    def send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock:
            self.connection.send(message)

    def call(self, name: str, *args: Any) -> Any:
        call = next(self._calls)
        answer: queue.SimpleQueue[tuple[Any, BaseException | None]] = queue.SimpleQueue()
        self._waiting[call] = answer
        if self.closed.is_set():
            raise CrawlerError("the coordinator is gone")
        self.send(("call", call, name, args))
        value, error = answer.get()
        if error is not None:
            raise error
        return value

    def answered(self, call: int, value: Any, error: BaseException | None) -> None:
        self._waiting.pop(call).put((value, error))

    def close(self) -> None:
        self.closed.set()
        for answer in list(self._waiting.values()):
            answer.put((None, CrawlerError("the coordinator is gone")))


class RemoteHosts:
    """``HostControl`` for a worker process: what responses say about hosts goes to the
    coordinator's scheduler. A Crawl-delay is passed on when it changes, not for every request."""

    def __init__(self, link: ChildLink) -> None:
        self.link = link
        self._delays: dict[str, float | None] = {}

    def pause(self, name: str, seconds: float) -> None:
        self.link.send(("pause", name, seconds))

    def set_crawl_delay(self, name: str, seconds: float | None) -> None:
        if name not in self._delays or self._delays[name] != seconds:
            self._delays[name] = seconds
            self.link.send(("crawl_delay", name, seconds))


class RemoteLogin:
    """``SharedLogin`` for a worker process: the coordinator logs in, at most once per login
    generation for all processes, and this process's jar adopts the cookies under the same
    generation number."""

    def __init__(self, spider: str, login: Login, cookies: CrawlCookieJar, link: ChildLink, stats: Stats) -> None:
        self.spider = spider
        self.login = login
        self.cookies = cookies
        self.link = link
        self.stats = stats
        self._lock = threading.Lock()

    @property
    def generation(self) -> int:
        return self.cookies.generation

    def ensure(self) -> None:
        if self.cookies.generation == 0:
            self._catch_up(0)

    def relogin(self, seen: int) -> None:
        self.stats.inc("logged_out_responses")
        self._catch_up(seen)

    def is_logged_out(self, response: Response) -> bool:
        return self.login.is_logged_out(response)

    def _catch_up(self, seen: int) -> None:
        with self._lock:  # one call at a time from this process; its other threads then replay
            if self.cookies.generation != seen:
                return
            generation, cookies = self.link.call("login", self.spider, seen)
            if generation > self.cookies.generation:
                self.cookies.adopt_login(cookies, generation)


def remote_robots(link: ChildLink, fetch: RobotsFetch, stats: Stats) -> RobotsFetch:
    """A worker process's robots.txt fetch, one for the whole crawl: the coordinator has the
    answer, or another process is fetching it, or this one fetches it (with ``fetch``, on the
    asking thread's own session) and tells the coordinator what came of it."""

    def fetch_once(url: str) -> tuple[int, bytes]:
        answer = link.call("robots", url)
        if answer is not None:
            return answer
        stats.inc("robots:fetched")
        try:
            answer = fetch(url)
        except CrawlerError as error:
            link.send(("robots_fetched", url, error))
            raise
        except Exception as error:
            # A bug here must not leave the other processes waiting for this file.
            link.send(("robots_fetched", url, CrawlerError(f"fetching {url} failed: {error!r}")))
            raise
        link.send(("robots_fetched", url, answer))
        return answer

    return fetch_once


class _LogToCoordinator(logging.Handler):
    """Log records of a worker process, formatted here, logged again by the coordinator."""

    def __init__(self, link: ChildLink) -> None:
        super().__init__()
        self.link = link

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self.link.send(("log", record.name, record.levelno, text))
        except Exception:  # noqa: BLE001 - a log line must never stop the work
            self.handleError(record)


def prepare_child(connection: Connection, log_level: int) -> ChildLink:
    """The first thing a worker process does: Ctrl-C and SIGTERM are for the coordinator, which
    tells its worker processes when to stop, and log records go to it."""
    for number in COORDINATORS_SIGNALS:  # already ignored from the start (see processes._Launcher)
        signal.signal(number, signal.SIG_IGN)
    link = ChildLink(connection)
    root = logging.getLogger()
    root.handlers[:] = [_LogToCoordinator(link)]
    root.setLevel(log_level)
    return link


def serve_coordinator(
    link: ChildLink, processors: Mapping[str, LeaseProcessor], threads: int, stop: StopSignal,
    sessions: Callable[[], int],
) -> None:
    """Work on the leases the coordinator sends until it says stop (or is gone)."""
    inbox: queue.SimpleQueue[Lease | None] = queue.SimpleQueue()
    outbox: queue.SimpleQueue[tuple[Lease, Outcome] | None] = queue.SimpleQueue()
    workers = ThreadWorkers(processors, threads, stop)
    stats = {name: processor.stats for name, processor in processors.items()}
    workers.start(inbox.get, lambda lease, outcome: outbox.put((lease, outcome)))
    sender = threading.Thread(target=_send_results, args=(link, outbox, stats), name="crawler-results", daemon=True)
    sender.start()
    stopped = threading.Event()
    threading.Thread(target=_read, args=(link, inbox, stopped), name="crawler-inbox", daemon=True).start()
    stopped.wait()
    stop.request()  # what is not started goes back, what is in hand is finished
    for _ in range(threads):
        inbox.put(None)
    workers.stop(wait=True)
    outbox.put(None)
    sender.join()
    link.send(("bye", sessions()))


def _read(link: ChildLink, inbox: queue.SimpleQueue[Lease | None], stopped: threading.Event) -> None:
    """Take in what the coordinator sends until its end of the pipe closes. After "stop", the
    answers to calls still waiting (a login) go on coming in while the in-hand work ends; a
    lease sent meanwhile is left alone (the coordinator takes it back when this process exits)."""
    while True:
        try:
            message = link.connection.recv()
        except (EOFError, OSError):
            link.close()
            if not stopped.is_set():
                os._exit(0)  # the coordinator is gone: what this process holds is reclaimed next run
            return
        kind = message[0]
        if kind == "lease" and not stopped.is_set():
            inbox.put(message[1])
        elif kind == "reply":
            link.answered(*message[1:])
        elif kind == "stop":
            stopped.set()


def _send_results(
    link: ChildLink, outbox: queue.SimpleQueue[tuple[Lease, Outcome] | None], stats: Mapping[str, Stats]
) -> None:
    try:
        _send_batches(link, outbox, stats)
    except BaseException:  # noqa: BLE001 - a worker process that cannot report must not live on
        # Working on without telling anyone would hang the crawl: end the process, so its pipe
        # closes and the coordinator queues its requests again.
        logger.critical("a worker process cannot send its results; it stops", exc_info=True)
        os._exit(70)


def _send_batches(
    link: ChildLink, outbox: queue.SimpleQueue[tuple[Lease, Outcome] | None], stats: Mapping[str, Stats]
) -> None:
    reported: dict[str, dict[str, int]] = {name: {} for name in stats}
    finished = False
    while not finished:
        first = outbox.get()
        batch = [] if first is None else [first]
        finished = first is None
        while not finished and len(batch) < _RESULT_BATCH:
            try:
                item = outbox.get_nowait()
            except queue.Empty:
                break
            if item is None:
                finished = True
            else:
                batch.append(item)
        changes = {}
        for name, spider_stats in stats.items():
            delta, reported[name] = spider_stats.changes_since(reported[name])
            if delta:
                changes[name] = delta
        results = [
            (lease.key, None if outcome.completion is None else to_wire(outcome.completion), outcome.latency, outcome.ok)
            for lease, outcome in batch
        ]
        if results or changes:
            link.send(("done", results, changes))
