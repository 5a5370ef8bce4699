"""Worker processes: one crawl's fetching and parsing spread over several processes.

One process, the coordinator, owns everything that must have one writer: the checkpoint, the
per-host scheduler, the login and the output files. Each worker process runs threads (each
with its own HTTP session) that fetch leases and run the spider's callbacks, and sends back
what became of each: the coordinator commits it as if its own threads had done the work. So
every guarantee of one process holds for many: each lease is worked on by one process at a time,
per-host limits hold for the whole crawl (the coordinator's scheduler hands out every lease),
the crawl logs in once (a worker process asks the coordinator, which logs in at most once per
login generation, and gets the cookies), and items are written once, by the coordinator.

A worker process that dies (kill -9, a crash in a C extension) closes its end of the pipe: its
leases go back to the queue at once and the others carry on. When the coordinator dies, its
worker processes see their pipe close and exit; the next run reclaims what was in flight.

The pipe carries pickled tuples; the messages are the ``_Coordinator``'s and ``ChildLink``'s.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import queue
import shlex
import signal
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from multiprocessing import spawn
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ..auth.cookies import CrawlCookieJar
from ..auth.login import Login, LoginCoordinator
from ..exceptions import CrawlerError, LoginFailed
from ..frontier.base import Completion, Lease
from ..politeness.hosts import HostScheduler
from ..politeness.robots import RobotsFetch, SharedRobotsFetch
from ..processing import LeaseProcessor, Outcome
from ..response import Response
from ..seen import SeenFilter
from ..stats import Stats
from ..stopping import StopSignal
from . import Report, Take
from .threads import ThreadWorkers

logger = logging.getLogger(__name__)

# A completion crosses the pipe as its fields after the lease, in this order.
_COMPLETION_FIELDS = tuple(field.name for field in fields(Completion) if field.name != "lease")
# Results a worker process sends in one message, at most.
_RESULT_BATCH = 256
# Leases a worker process may hold beyond one per thread: the next ones are there when a thread
# finishes, without a round trip to the coordinator.
_PREFETCH = 2
# How long stopped worker processes get to exit before they are killed: when the crawl stopped
# (what they hold stays in flight, for the next run), and when it finished (they hold nothing).
_EXIT_GRACE = 2.0
_FINISHED_EXIT = 30.0
# Signals a worker process leaves to its coordinator (SIGKILL still ends it).
_COORDINATORS_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _to_wire(completion: Completion) -> tuple[Any, ...]:
    return tuple(getattr(completion, name) for name in _COMPLETION_FIELDS)


def _from_wire(lease: Lease, wire: Sequence[Any], seen: SeenFilter) -> Completion:
    values = dict(zip(_COMPLETION_FIELDS, wire, strict=True))
    if values["children"]:
        # Worker processes do not know what the checkpoint holds: links it has are dropped here.
        values["children"] = [child for child in values["children"] if child.fingerprint not in seen]
    return Completion(lease, **values)


class ProcessWorkers:
    """``processes`` worker processes, each running ``target(connection, *args)`` (which builds
    a LeaseProcessor for every spider and calls ``serve_coordinator``). ``stats`` and ``logins``
    are each spider's, by name; ``counts`` the pool's own (processes started, lost)."""

    def __init__(
        self,
        target: Callable[..., None],
        args: tuple[Any, ...],
        processes: int,
        threads: int,
        *,
        scheduler: HostScheduler,
        stats: Mapping[str, Stats],
        stop: StopSignal,
        logins: Mapping[str, LoginCoordinator],
        seen: Mapping[str, SeenFilter],
        robots: SharedRobotsFetch | None = None,
        counts: Stats,
    ) -> None:
        self.target = target
        self.counts = counts
        self.args = args
        self.processes = processes
        self.threads = threads
        self.scheduler = scheduler
        self.stats = stats
        self.stop_signal = stop
        self.logins = logins
        self.seen = seen
        self.robots = robots
        # Calls from worker processes (a login, a robots.txt) are served here: few, but one may
        # take as long as a login, and must not hold up the results coming in.
        self.calls = ThreadPoolExecutor(max_workers=4, thread_name_prefix="crawler-serve")
        self._children: list[_Coordinator] = []
        self._stopping = threading.Event()
        self._launcher: _Launcher | None = None

    @property
    def sessions(self) -> int:
        return sum(child.sessions for child in self._children)

    def start(self, take: Take, report: Report) -> None:
        # spawn, not fork: the coordinator runs threads (the practice site's, say), and a fork
        # would copy their locks in whatever state they were.
        context = multiprocessing.get_context("spawn")
        self._launcher = _Launcher()
        for number in range(self.processes):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=self.target, args=(theirs, *self.args), name=f"crawler-worker-process-{number}", daemon=True
            )
            self._launcher.start(process)
            theirs.close()
            child = _Coordinator(self, number, process, ours, take, report)
            self._children.append(child)
            child.start()
        self.counts.inc("worker_processes", self.processes)
        threading.Thread(target=self._pass_on_stop, name="crawler-stop-watch", daemon=True).start()

    def _pass_on_stop(self) -> None:
        while not self._stopping.is_set():
            if self.stop_signal.graceful.wait(0.1):
                for child in self._children:
                    child.stop()
                return

    def stop(self, *, wait: bool) -> None:
        self._stopping.set()
        for child in self._children:
            child.stop()
        for child in self._children:
            child.join(wait=wait)
        self.calls.shutdown(wait=False, cancel_futures=True)
        if self._launcher is not None:
            self._launcher.close()

    def child_lost(self) -> None:
        children = self._children
        if not self._stopping.is_set() and all(child.dead for child in children) and any(child.lost for child in children):
            self.stop_signal.fail(CrawlerError("every worker process died; the checkpoint keeps their work"))

    def serve_login(self, spider: str, seen: int) -> tuple[int, list[Any]]:
        """A worker process needs ``spider``'s login, newer than generation ``seen`` (0: any)."""
        login = self.logins.get(spider)
        if login is None:
            raise CrawlerError(f"a worker process asked for a login {spider} does not have")
        try:
            if seen:
                login.log_in_unless_moved_on(seen)
            else:
                login.ensure()
        except LoginFailed as error:
            self.stop_signal.fail(error)
            raise
        return login.generation, list(login.cookies)


class _Launcher:
    """Starts worker processes that ignore SIGINT and SIGTERM from their first instruction on.

    Ctrl-C reaches every process of the terminal's group, and a service manager's SIGTERM every
    process of the service: stopping is the coordinator's to handle. A Python handler is reset
    by exec and a blocked mask too (multiprocessing's spawn unblocks every signal), but an
    ignored signal stays ignored, and Python leaves it so. So the interpreter is started through
    a two-line shell script that ignores them first; the coordinator itself never does, even
    for a moment, so its own Ctrl-C is never lost. The script stays until the processes stop:
    the shell reads it after its exec.
    """

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="crawler-worker-")
        self.python = os.fsdecode(spawn.get_executable())
        self.script = Path(self._folder.name) / "python"
        self.script.write_text(f"#!/bin/sh\ntrap '' INT TERM\nexec {shlex.quote(self.python)} \"$@\"\n")
        self.script.chmod(0o700)

    def start(self, process: Any) -> None:
        previous = spawn.get_executable()
        spawn.set_executable(str(self.script))
        try:
            process.start()
        finally:
            spawn.set_executable(previous)

    def close(self) -> None:
        self._folder.cleanup()


class _Coordinator:
    """The coordinator's side of one worker process: a thread that hands it leases as the host
    scheduler releases them, and one that reads what it sends back."""

    def __init__(
        self, pool: ProcessWorkers, number: int, process: Any, connection: Connection, take: Take, report: Report
    ) -> None:
        self.pool = pool
        self.number = number
        self.process = process
        self.connection = connection
        self.take = take
        self.report = report
        self.sessions = 0
        self.dead = False
        self.lost = False  # it died without being told to stop
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._sent: dict[tuple[int, int], Lease] = {}  # leases with the process, by key
        self._slots = threading.Semaphore(pool.threads + _PREFETCH)
        self._stop_sent = False
        self._threads = [
            threading.Thread(target=self._dispatch, name=f"crawler-dispatch-{number}", daemon=True),
            threading.Thread(target=self._receive, name=f"crawler-receive-{number}", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _send(self, message: tuple[Any, ...]) -> None:
        try:
            with self._send_lock:
                self.connection.send(message)
        except (OSError, ValueError):
            pass  # the process is gone: the receiving thread hands its leases back

    def stop(self) -> None:
        """Finish what is in hand, give back what is not started, exit."""
        with self._lock:
            if self._stop_sent:
                return
            self._stop_sent = True
        self._send(("stop",))

    def join(self, *, wait: bool) -> None:
        # Waited for only when the crawl is finished, and the process has nothing in hand.
        self.process.join(_FINISHED_EXIT if wait else _EXIT_GRACE)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self._threads[1].join()
        self.connection.close()
        self.process.close()  # its sentinel descriptor, now rather than when it is collected

    def _dispatch(self) -> None:
        while True:
            self._slots.acquire()
            if self.dead:
                return
            lease = self.take()
            if lease is None:
                self.stop()
                return
            with self._lock:
                if self.dead:
                    lost = True
                else:
                    lost = False
                    self._sent[lease.key] = lease
            if lost:
                self.report(lease, Outcome(None))
                return
            self._send(("lease", lease))

    def _receive(self) -> None:
        while True:
            try:
                message = self.connection.recv()
            except (EOFError, OSError):
                break
            kind = message[0]
            if kind == "done":
                self._completed(message[1])
                for spider, changes in message[2].items():
                    self.pool.stats[spider].merge(changes)
            elif kind == "pause":
                self.pool.scheduler.pause(message[1], message[2])
            elif kind == "crawl_delay":
                self.pool.scheduler.set_crawl_delay(message[1], message[2])
            elif kind == "call":
                self.pool.calls.submit(self._serve, *message[1:])
            elif kind == "log":
                _, name, level, text = message
                logging.getLogger(name).log(level, "%s", text)
            elif kind == "bye":
                self.sessions = message[1]
            elif kind == "failed":  # it could not start: the same error would stop every one
                self.pool.stop_signal.fail(message[1])
        self._lost()

    def _completed(self, results: Iterable[tuple[tuple[int, int], Any, float | None, bool]]) -> None:
        for key, wire, latency, ok in results:
            with self._lock:
                lease = self._sent.pop(key)
            self._slots.release()
            completion = None if wire is None else _from_wire(lease, wire, self.pool.seen[lease.spider])
            self.report(lease, Outcome(completion, latency, ok))

    def _serve(self, call: int, name: str, args: tuple[Any, ...]) -> None:
        try:
            if name == "login":
                value = self.pool.serve_login(*args)
            elif name == "robots" and self.pool.robots is not None:
                spider, url = args
                value = self.pool.robots.fetch(url, self.pool.stats[spider])
            else:
                raise CrawlerError(f"a worker process asked for {name!r}, which the coordinator does not serve")
            error = None
        except CrawlerError as failure:
            value, error = None, failure
        except Exception as failure:  # noqa: BLE001 - the worker process waits for an answer
            logger.error("internal error (a bug in crawler) serving a worker process's %s", name, exc_info=True)
            value, error = None, CrawlerError(f"the coordinator could not serve {name}: {failure!r}")
        self._send(("reply", call, value, error))

    def _lost(self) -> None:
        with self._lock:
            self.dead = True
            orphans = list(self._sent.values())
            self._sent.clear()
        self._slots.release(self.pool.threads + _PREFETCH)  # the dispatching thread sees it is dead
        self.process.join(_EXIT_GRACE)
        self.lost = not self._stop_sent
        if self.lost:
            self.pool.counts.inc("worker_processes_lost")
            logger.warning(
                "worker process %d (pid %s) ended with exit code %s; its %d requests go back to the queue",
                self.number, self.process.pid, self.process.exitcode, len(orphans),
            )
        for lease in orphans:
            self.report(lease, Outcome(None))
        self.pool.child_lost()


# The worker process's side ------------------------------------------------------------------


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


def remote_robots(link: ChildLink, spider: str) -> RobotsFetch:
    """A worker process's robots.txt fetch: the coordinator's, one for the whole crawl."""

    def fetch(url: str) -> tuple[int, bytes]:
        status, body = link.call("robots", spider, url)
        return status, body

    return fetch


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
    for number in _COORDINATORS_SIGNALS:  # already ignored from the start (see _Launcher)
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
    while True:
        try:
            message = link.connection.recv()
        except (EOFError, OSError):
            link.close()
            os._exit(0)  # the coordinator is gone: what this process holds is reclaimed next run
        kind = message[0]
        if kind == "lease":
            inbox.put(message[1])
        elif kind == "reply":
            link.answered(*message[1:])
        elif kind == "stop":
            break
    stop.request()  # what is not started goes back, what is in hand is finished
    for _ in range(threads):
        inbox.put(None)
    # Calls still waiting (a login) are answered while the in-hand work ends.
    replies = threading.Thread(target=_answer_replies, args=(link,), daemon=True)
    replies.start()
    workers.stop(wait=True)
    outbox.put(None)
    sender.join()
    link.send(("bye", sessions()))


def _answer_replies(link: ChildLink) -> None:
    while True:
        try:
            message = link.connection.recv()
        except (EOFError, OSError):
            link.close()
            return
        if message[0] == "reply":
            link.answered(*message[1:])


def _send_results(
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
            (lease.key, None if outcome.completion is None else _to_wire(outcome.completion), outcome.latency, outcome.ok)
            for lease, outcome in batch
        ]
        if results or changes:
            link.send(("done", results, changes))
