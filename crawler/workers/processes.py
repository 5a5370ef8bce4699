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

The pipe carries pickled tuples (see ``wire``); the worker process's side is ``child``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shlex
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from multiprocessing import spawn
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from ..auth.login import SingleFlightLogin
from ..exceptions import CrawlerError, LoginFailed
from ..frontier.base import Lease
from ..politeness.hosts import HostScheduler
from ..politeness.robots import RobotsOutcome, SharedRobotsFetch
from ..processing import HostControl, Outcome
from ..seen import SeenFilter
from ..stats import Stats
from ..stopping import StopSignal
from . import Report, Take
from .wire import from_wire

logger = logging.getLogger(__name__)

# Leases a worker process may hold beyond one per thread: the next ones are there when a thread
# finishes, without a round trip to the coordinator.
_PREFETCH = 2
# How long stopped worker processes get to exit before they are killed: when the crawl stopped
# (what they hold stays in flight, for the next run), and when it finished (they hold nothing).
_EXIT_GRACE = 2.0
_FINISHED_EXIT = 30.0


class ProcessWorkers:
    """One worker process per entry of ``threads``, each running ``target(connection, its
    threads, *args)`` (which builds a LeaseProcessor for every spider and calls
    ``serve_coordinator``). ``stats`` and ``logins``
    are each spider's, by name; ``counts`` the pool's own (processes started, lost)."""

    def __init__(
        self,
        target: Callable[..., None],
        args: tuple[Any, ...],
        threads: Sequence[int],
        *,
        scheduler: HostScheduler,
        hosts: HostControl | None = None,
        stats: Mapping[str, Stats],
        stop: StopSignal,
        logins: Mapping[str, SingleFlightLogin],
        seen: Mapping[str, SeenFilter],
        robots: SharedRobotsFetch | None = None,
        counts: Stats,
    ) -> None:
        self.target = target
        self.counts = counts
        self.args = args
        self.threads = threads
        self.scheduler = scheduler
        self.hosts = hosts or scheduler  # what responses say about hosts (the scheduler, and more)
        self.stats = stats
        self.stop_signal = stop
        self.logins = logins
        self.seen = seen
        self.robots = robots
        # Logins for worker processes are made here: few, but one may take long, and must not
        # hold up the results coming in.
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
        for number, threads in enumerate(self.threads):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=self.target, args=(theirs, threads, *self.args), name=f"crawler-worker-process-{number}",
                daemon=True,
            )
            self._launcher.start(process)
            theirs.close()
            child = _Coordinator(self, number, threads, process, ours, take, report)
            self._children.append(child)
            child.start()
        self.counts.inc("worker_processes", len(self.threads))
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
    the shell reads it after its exec. Where it cannot be run (a temporary folder mounted
    noexec), processes start as multiprocessing starts them, and ignore the signals once their
    Python code begins (``child.prepare_child``).
    """

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="crawler-worker-")
        self.python = os.fsdecode(spawn.get_executable())
        self.script: Path | None = Path(self._folder.name) / "python"
        self.script.write_text(f"#!/bin/sh\ntrap '' INT TERM\nexec {shlex.quote(self.python)} \"$@\"\n")
        self.script.chmod(0o700)

    def start(self, process: Any) -> None:
        # Asked first: multiprocessing does not report a failed exec, its process just exits
        # with 255. access() knows of noexec mounts as well as of modes.
        if self.script is not None and not os.access(self.script, os.X_OK):
            logger.info(
                "cannot run %s: worker processes start without ignoring Ctrl-C until their code runs", self.script
            )
            self.script = None
        if self.script is None:
            process.start()
            return
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
        self, pool: ProcessWorkers, number: int, threads: int, process: Any, connection: Connection, take: Take,
        report: Report,
    ) -> None:
        self.pool = pool
        self.number = number
        self.capacity = threads + _PREFETCH
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
        self._slots = threading.Semaphore(self.capacity)
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
                self.pool.hosts.pause(message[1], message[2])
            elif kind == "crawl_delay":
                self.pool.hosts.set_crawl_delay(message[1], message[2])
            elif kind == "call" and message[2] == "robots":
                self._ask_robots(message[1], *message[3])
            elif kind == "robots_fetched" and self.pool.robots is not None:
                self.pool.robots.tell(message[1], message[2])
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
            completion = None if wire is None else from_wire(lease, wire, self.pool.seen[lease.spider])
            self.report(lease, Outcome(completion, latency, ok))

    def _ask_robots(self, call: int, url: str) -> None:
        # Answered without waiting (now, or when the process fetching it tells), so no thread
        # is held while a robots.txt is fetched elsewhere.
        def reply(outcome: RobotsOutcome) -> None:
            if isinstance(outcome, BaseException):
                self._send(("reply", call, None, outcome))
            else:
                self._send(("reply", call, outcome, None))

        if self.pool.robots is None:
            reply(CrawlerError("a worker process asked for a robots.txt in a crawl that does not obey them"))
        else:
            self.pool.robots.ask(url, self.number, reply)

    def _serve(self, call: int, name: str, args: tuple[Any, ...]) -> None:
        try:
            if name == "login":
                value = self.pool.serve_login(*args)
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
        self._slots.release(self.capacity)  # the dispatching thread sees it is dead
        self.process.join(_EXIT_GRACE)
        self.lost = not self._stop_sent
        if self.lost:
            self.pool.counts.inc("worker_processes_lost")
            logger.warning(
                "worker process %d (pid %s) ended with exit code %s; its %d requests go back to the queue",
                self.number, self.process.pid, self.process.exitcode, len(orphans),
            )
        if self.pool.robots is not None:
            self.pool.robots.drop(self.number)
        for lease in orphans:
            self.report(lease, Outcome(None))
        self.pool.child_lost()
