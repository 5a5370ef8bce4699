"""Crash safety, for real: stop `crawler run` in every way, run it again, and get one clean run's output.

The CLI runs as a subprocess (``python -m crawler.cli``) against the practice site, which runs as
a separate process (``python -m crawler.practice``) so that killing the crawler does not kill the
site. The crawler is stopped again and again at random moments -- SIGKILL, Ctrl-C once (SIGINT),
SIGTERM, Ctrl-C twice -- then run to the end with the same command, and its output file is
compared, item by item, with the output of one clean, uninterrupted run: every item exactly once,
nothing else, in JSON Lines and in CSV. Also here: a resumed crawl fetches again (and takes back
what the dead process held in flight) within 2 s of its start; a callback that raises fails its
page and nothing else; the shipped ``config.toml`` (which serves the site itself) killed and
resumed gives a clean run's files; and kills at moments random timing cannot aim at.

Items are compared as multisets (canonical JSON; CSV rows as lists of strings): commit order
differs from run to run, the items must not. Progress is read from the checkpoint read-only
(SQLite WAL lets a reader in while the crawl writes), never through ``Checkpoint``, which would
take the lock and reclaim requests in flight.

Every random choice comes from a seeded ``random.Random``; the seed is in every assertion message.
``CRASH_SAFETY_SEED=<int>`` replays (or varies) the whole file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from crawler.frontier.sqlite import Checkpoint
from crawler.practice import PracticeSite

REPO = Path(__file__).resolve().parent.parent
PRODUCTS_SPIDER = (REPO / "spiders" / "products.py").read_text(encoding="utf-8")
BASE_SEED = int(os.environ.get("CRASH_SAFETY_SEED", "20250611"))

# The practice site the kill loops crawl: long enough (a few seconds) to be stopped mid-way.
PRODUCTS = 400
PER_PAGE = 20
LATENCY = 0.06
PAGES = 1 + PRODUCTS // PER_PAGE + PRODUCTS  # home, listing pages, product pages
WORKERS = 8
KILLS = 5  # stops per loop that land mid-crawl (after the run has committed pages)
EXIT_OK = 0
EXIT_REQUESTS_FAILED = 4  # finished, but requests failed
EXIT_INTERRUPTED = 130

# Credentials for the shipped config must come from the practice site's demo defaults, never
# from whatever the environment running the tests holds.
CLI_ENV = {
    **{key: value for key, value in os.environ.items() if not key.startswith("PRACTICE_")},
    "COLUMNS": "200",
    "NO_COLOR": "1",
}


def seed_for(name: str) -> int:
    return zlib.crc32(f"{BASE_SEED}:{name}".encode())


# -- processes --------------------------------------------------------------------------------------


@dataclass
class CliRun:
    """One ``crawler`` process; its stdout and stderr go to files (no pipe to fill up)."""

    proc: subprocess.Popen[bytes]
    started: float
    out_path: Path
    err_path: Path

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(30)
            raise AssertionError(f"crawler did not exit within {timeout}s; stderr:\n{self.err()}") from None

    def out(self) -> str:
        return self.out_path.read_text(encoding="utf-8", errors="replace")

    def err(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace")


def start_cli(folder: Path, *args: str, log: str) -> CliRun:
    logs = folder / "logs"
    logs.mkdir(exist_ok=True)
    out_path, err_path = logs / f"{log}.out", logs / f"{log}.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.monotonic()
        proc = subprocess.Popen(
            [sys.executable, "-m", "crawler.cli", *args],
            cwd=folder,
            env=CLI_ENV,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            # Its own process group, as a shell gives a command: a signal to the group reaches
            # the crawl's worker processes too, as Ctrl-C on a terminal does.
            start_new_session=True,
        )
    return CliRun(proc, started, out_path, err_path)


@contextmanager
def reaped(run: CliRun) -> Iterator[CliRun]:
    """Whatever happens in the block, the process is gone (and waited for) after it."""
    try:
        yield run
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
            run.proc.wait(30)


def run_to_end(folder: Path, *args: str, log: str, timeout: float = 120.0, exit_code: int = EXIT_OK) -> CliRun:
    run = start_cli(folder, "run", "config.toml", *args, log=log)
    with reaped(run):
        code = run.wait(timeout)
    assert code == exit_code, f"{log}: exit code {code}\nstdout:\n{run.out()}\nstderr:\n{run.err()}"
    assert_no_crash(run.err(), log)
    return run


def assert_no_crash(err: str, context: str) -> None:
    """No traceback on stderr: a spider's failing callback is one line (its traceback only with -v)."""
    assert "Traceback" not in err, f"{context}\nstderr:\n{err}"


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until it holds; return when it did (monotonic). Fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        now = time.monotonic()
        if condition():
            return now
        if now >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.005)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def site_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The practice site in its own process: killing a crawler leaves it serving."""
    folder = tmp_path_factory.mktemp("site")
    out_path, err_path = folder / "site.out", folder / "site.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "crawler.practice", "--port", "0", "--products", str(PRODUCTS),
                "--per-page", str(PER_PAGE), "--latency", str(LATENCY),
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    try:
        def has_url() -> bool:
            assert proc.poll() is None, f"the practice site exited: {err_path.read_text()}"
            return out_path.read_text().endswith("\n")

        wait_for(has_url, 30, "the practice site's URL")
        url = out_path.read_text().splitlines()[0].strip()
        assert url.startswith("http://127.0.0.1:"), url
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(15)


# -- projects and their files -----------------------------------------------------------------------


def products_project(folder: Path, site_url: str, fmt: str, *, spider: str = "products",
                     extra_spiders: dict[str, str] | None = None, processes: int = 1) -> Path:
    """A project folder: the shipped products spider and a config with everything inside ``folder``."""
    spiders = folder / "spiders"
    spiders.mkdir(parents=True, exist_ok=True)
    (spiders / "__init__.py").touch()
    (spiders / "products.py").write_text(PRODUCTS_SPIDER, encoding="utf-8")
    for name, source in (extra_spiders or {}).items():
        (spiders / f"{name}.py").write_text(source, encoding="utf-8")
    (folder / "config.toml").write_text(
        f"""
[[spiders]]
spider = "{spider}"
args = {{ start_url = "{site_url}/" }}

[crawl]
workers = {WORKERS}
processes = {processes}

[output]
format = "{fmt}"
path = "out/{{spider}}.{{format}}"

[checkpoint]
path = "state/checkpoint.db"
""",
        encoding="utf-8",
    )
    return folder


def checkpoint_path(folder: Path) -> Path:
    return folder / "state" / "checkpoint.db"


def pages_done(checkpoint: Path) -> int | None:
    """Pages the checkpoint holds as finished (done or failed), read-only, as another process may
    read it while a crawl writes it; None while there is no WAL-mode checkpoint to read."""
    if not Path(f"{checkpoint}-wal").exists():
        return None
    try:
        with closing(sqlite3.connect(f"{checkpoint.as_uri()}?mode=ro", uri=True, timeout=1.0)) as db:
            (count,) = db.execute("SELECT count(*) FROM requests WHERE state IN (2, 3)").fetchone()
    except sqlite3.Error:
        return None
    return int(count)


def checkpoint_states(checkpoint: Path) -> dict[int, int]:
    with closing(sqlite3.connect(f"{checkpoint.as_uri()}?mode=ro", uri=True, timeout=5.0)) as db:
        return dict(db.execute("SELECT state, count(*) FROM requests GROUP BY state").fetchall())


def in_flight_urls(checkpoint: Path) -> list[str]:
    """URLs the checkpoint holds as in flight (read-only: reading must not reclaim them)."""
    with closing(sqlite3.connect(f"{checkpoint.as_uri()}?mode=ro", uri=True, timeout=5.0)) as db:
        rows = db.execute("SELECT request FROM requests WHERE state = 1").fetchall()
    return [json.loads(text)["url"] for (text,) in rows]


@dataclass(frozen=True)
class Output:
    """An output file's items as a multiset of canonical strings, plus the CSV header."""

    path: Path
    items: Counter[str]
    header: tuple[str, ...] | None = None


def read_output(path: Path, fmt: str) -> Output:
    assert path.is_file(), f"no output file {path}"
    if fmt == "parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
        assert not path.with_name(path.name + ".partial").exists(), "a finished run left its .partial file"
        return Output(path, Counter(json.dumps(row, sort_keys=True) for row in rows))
    data = path.read_bytes()
    if fmt == "json":
        try:
            array = json.loads(data)
        except json.JSONDecodeError as error:
            raise AssertionError(f"{path} is not one JSON array ({error}): ...{data[-200:]!r}") from None
        assert isinstance(array, list), f"{path} holds a {type(array).__name__}, not an array"
        return Output(path, Counter(json.dumps(item, sort_keys=True) for item in array))
    assert not data or data.endswith(b"\n"), f"{path} ends in a cut-off line: {data[-200:]!r}"
    if fmt == "jsonl":
        items: Counter[str] = Counter()
        for number, line in enumerate(data.decode("utf-8").splitlines(), 1):
            try:
                items[json.dumps(json.loads(line), sort_keys=True)] += 1
            except json.JSONDecodeError as error:
                raise AssertionError(f"{path}:{number} is not JSON ({error}): {line[:200]!r}") from None
        return Output(path, items)
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))
    assert rows, f"{path} is empty"
    header, body = tuple(rows[0]), rows[1:]
    assert header and "id" in header, f"{path}: first row is not the header: {header}"
    repeated = [number for number, row in enumerate(body, 2) if tuple(row) == header]
    assert not repeated, f"{path}: the header row appears again at rows {repeated[:10]}"
    widths = {len(row) for row in body}
    assert widths <= {len(header)}, f"{path}: rows of {sorted(widths)} fields under a {len(header)}-column header"
    return Output(path, Counter(json.dumps(row) for row in body), header)


def assert_same_items(got: Output, want: Output, context: str) -> None:
    """``got`` holds every item of ``want`` exactly once, and nothing else."""
    assert got.header == want.header, f"{context}: CSV header {got.header} != clean run's {want.header}"
    lost = want.items - got.items
    extra = got.items - want.items
    duplicated = {item: count for item, count in got.items.items() if count > 1}
    if lost or extra or duplicated:
        def sample(counter: Counter[str] | dict[str, int]) -> str:
            return "\n    ".join(f"{count}x {item[:160]}" for item, count in list(counter.items())[:5])

        raise AssertionError(
            f"{context}: {got.path.name} differs from the clean run's: "
            f"{got.items.total()} items vs {want.items.total()}; "
            f"{lost.total()} lost, {extra.total()} extra, {len(duplicated)} items duplicated\n"
            f"  lost:\n    {sample(lost)}\n  extra:\n    {sample(extra)}\n  duplicated:\n    {sample(duplicated)}"
        )


@pytest.fixture(scope="module")
def clean_output(site_url: str, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Output]:
    """The output of one clean, uninterrupted ``crawler run`` in the given format (run once)."""
    cache: dict[str, Output] = {}

    def get(fmt: str) -> Output:
        if fmt not in cache:
            folder = products_project(tmp_path_factory.mktemp(f"clean-{fmt}"), site_url, fmt)
            run_to_end(folder, log="clean")
            output = read_output(folder / "out" / f"products.{fmt}", fmt)
            assert output.items.total() == PRODUCTS, f"the clean run wrote {output.items.total()} items"
            assert len(output.items) == PRODUCTS, "the clean run itself wrote an item twice"
            assert checkpoint_states(checkpoint_path(folder)) == {2: PAGES}
            cache[fmt] = output
        return cache[fmt]

    return get


# -- stopping a crawl again and again ----------------------------------------------------------------


@dataclass(frozen=True)
class StopMode:
    name: str
    signals: tuple[signal.Signals, ...]  # sent in this order
    exit_code: int
    to_group: bool = False  # to every process of the crawl (its worker processes too), not the first

    @property
    def graceful(self) -> bool:
        return self.signals[0] != signal.SIGKILL


STOP_MODES = {
    "sigkill": StopMode("sigkill", (signal.SIGKILL,), -signal.SIGKILL),
    "sigint": StopMode("sigint", (signal.SIGINT,), EXIT_INTERRUPTED),
    "sigterm": StopMode("sigterm", (signal.SIGTERM,), EXIT_INTERRUPTED),
    "sigint-twice": StopMode("sigint-twice", (signal.SIGINT, signal.SIGINT), EXIT_INTERRUPTED),
    "sigkill-all": StopMode("sigkill-all", (signal.SIGKILL,), -signal.SIGKILL, to_group=True),
    "ctrl-c": StopMode("ctrl-c", (signal.SIGINT,), EXIT_INTERRUPTED, to_group=True),
}


@dataclass
class KillLog:
    seed: int
    mode: str
    lines: list[str] = field(default_factory=list)
    mid_crawl: int = 0  # stops after the run had committed pages of its own
    at_startup: int = 0  # stops before it had (SIGKILL only: a signal handler may not be set yet)
    resumed_done: list[int] = field(default_factory=list)  # "resuming: N done" of each run

    def __str__(self) -> str:
        return (f"seed {self.seed}, {self.mode}: {self.mid_crawl} mid-crawl stops, {self.at_startup} at "
                f"startup\n  " + "\n  ".join(self.lines))


RESUMING = re.compile(r"^(\w+): resuming: (\d+) done", re.MULTILINE)


def stop_repeatedly(
    folder: Path,
    mode: StopMode,
    rng: random.Random,
    log: KillLog,
    *,
    total_pages: int,
    output: Path,
    kills: int = KILLS,
    latest: float = 2.5,
    caps_between: tuple[int, int] | None = None,
    triggers: tuple[str, ...] = ("time", "time", "output"),
    checkpoint: Path | None = None,
) -> None:
    """Run ``crawler run config.toml`` in ``folder`` and stop it with ``mode`` until ``kills`` runs
    were stopped mid-crawl.

    A run is stopped at a random moment: ``rng.uniform(0.2, latest)`` seconds after its start
    ("time"), or right after it appended to the output file ("output", to land near the export's
    bookkeeping). SIGKILL may land anywhere, even before the run did anything; a graceful signal
    waits until the run has committed pages (so its handler is set). To be sure the crawl cannot
    end before all the stops, each mid-crawl stop also happens at the latest once the checkpoint
    has passed a random page count (a "cap"), by default between 15% and 85% of the crawl.
    """
    checkpoint = checkpoint or checkpoint_path(folder)
    low, high = caps_between or (total_pages * 15 // 100, total_pages * 85 // 100)
    caps = sorted(rng.sample(range(low, high), kills))
    already, first_attempt = log.mid_crawl, len(log.lines)
    while (stopped := log.mid_crawl - already) < kills:
        attempt = len(log.lines)  # runs are numbered across calls sharing ``log``
        assert attempt - first_attempt < kills + 10, f"too many stops at startup: {log}"
        cap = caps[stopped]
        at = rng.uniform(0.2, latest)
        trigger = rng.choice(triggers)
        pause = rng.uniform(0.001, 0.03)  # between two Ctrl-Cs
        size_before = output.stat().st_size if output.exists() else 0
        run = start_cli(folder, "run", "config.toml", log=f"{mode.name}-{attempt}")
        with reaped(run):
            first: int | None = None
            progressed = False
            reason = None
            while reason is None:
                now = time.monotonic()
                code = run.proc.poll()
                assert code is None, (
                    f"run {attempt} ended on its own (exit {code}) before it was stopped; "
                    f"{log}\nstderr:\n{run.err()}"
                )
                assert now - run.started < 60, f"run {attempt} made no progress in 60s; {log}\n{run.err()}"
                done = pages_done(checkpoint)
                if done is not None:
                    first = done if first is None else first
                    progressed = progressed or done > first
                if progressed and done is not None and done >= cap:
                    time.sleep(rng.uniform(0.0, 0.1))  # not always right after a commit
                    reason = f"checkpoint past {cap} pages"
                elif progressed or not mode.graceful:
                    if trigger == "time" and now - run.started >= at:
                        reason = f"{now - run.started:.2f}s after start"
                    elif trigger == "output" and output.exists() and output.stat().st_size > size_before:
                        time.sleep(rng.uniform(0.0, 0.02))
                        reason = f"just after an output append ({now - run.started:.2f}s after start)"
                if reason is None:
                    time.sleep(0.01)
            for number, sig in enumerate(mode.signals):
                if number:
                    time.sleep(pause)
                if mode.to_group:
                    os.killpg(run.proc.pid, sig)
                else:
                    run.proc.send_signal(sig)
            code = run.wait(60)
        err = run.err()
        said_on_start = [
            line.strip() for line in err.splitlines() if ": resuming:" in line or "already finished" in line
        ]
        if match := RESUMING.search(err):
            log.resumed_done.append(int(match.group(2)))
        where = "mid-crawl" if progressed else "at startup"
        said = "at once" if "Stopped at once" in err else "saved" if "Stopped. The checkpoint is saved" in err else "-"
        log.lines.append(f"run {attempt}: {mode.name} {where}, {reason}, exit {code}, stopped: {said}; {said_on_start}")
        # A second Ctrl-C that comes after the first one's stop has finished (checkpoint closed,
        # "Stopped." printed) meets the interpreter shutting down, whose default SIGINT action ends
        # the process; a shell shows that as 130 as well.
        late_second_ctrl_c = len(mode.signals) > 1 and code == -signal.SIGINT and said == "saved"
        assert code == mode.exit_code or late_second_ctrl_c, (
            f"run {attempt} exited with {code}, expected {mode.exit_code}; {log}\nstderr:\n{err}"
        )
        assert_no_crash(err, f"run {attempt}: {log}")
        if mode.graceful:
            assert "Stopped" in err, f"run {attempt}: {log}\nstderr:\n{err}"
        if progressed:
            log.mid_crawl += 1
        else:
            log.at_startup += 1


LOOPS = [
    pytest.param("sigkill", "jsonl", 1, id="sigkill-jsonl"),
    pytest.param("sigkill", "csv", 1, id="sigkill-csv"),
    pytest.param("sigint", "jsonl", 1, id="sigint-jsonl"),
    pytest.param("sigterm", "csv", 1, id="sigterm-csv"),
    pytest.param("sigint-twice", "jsonl", 1, id="sigint-twice-jsonl"),
    pytest.param("sigkill", "json", 1, id="sigkill-json"),
    pytest.param("sigkill", "parquet", 1, id="sigkill-parquet"),
    # One crawl in a coordinator and two worker processes: every one of them killed at once, and
    # Ctrl-C as a terminal sends it, to all of them (the worker processes leave it to the
    # coordinator, as they do a SIGTERM).
    pytest.param("sigkill-all", "jsonl", 2, id="sigkill-all-2processes-jsonl"),
    pytest.param("ctrl-c", "csv", 2, id="ctrl-c-2processes-csv"),
]
# Stops per loop with worker processes: each run starts them anew, which takes longer.
PROCESS_KILLS = 2


@pytest.mark.parametrize(("mode_name", "fmt", "processes"), LOOPS)
def test_stopped_again_and_again_then_resumed_writes_every_item_exactly_once(
    mode_name: str, fmt: str, processes: int, site_url: str, clean_output: Callable[[str], Output], tmp_path: Path
) -> None:
    want = clean_output(fmt)
    seed = seed_for(f"loop:{mode_name}:{fmt}" + (f":{processes}" if processes > 1 else ""))
    mode = STOP_MODES[mode_name]
    folder = products_project(tmp_path, site_url, fmt, processes=processes)
    output = folder / "out" / f"products.{fmt}"
    log = KillLog(seed, mode_name)
    kills = KILLS if processes == 1 else PROCESS_KILLS

    stop_repeatedly(folder, mode, random.Random(seed), log, total_pages=PAGES, output=output, kills=kills)
    final = run_to_end(folder, log="final")

    print(f"\n{log}")
    assert log.mid_crawl >= kills, str(log)
    # It continued each time rather than starting over.
    done_counts = log.resumed_done + [int(m.group(2)) for m in RESUMING.finditer(final.err())]
    assert done_counts, f"no run said it was resuming; {log}"
    assert done_counts == sorted(done_counts), f"the checkpoint went backwards: {done_counts}; {log}"
    assert checkpoint_states(checkpoint_path(folder)) == {2: PAGES}, str(log)
    assert_same_items(read_output(output, fmt), want, str(log))


def test_a_postgres_sink_killed_again_and_again_ends_with_each_item_exactly_once(
    site_url: str, clean_output: Callable[[str], Output], tmp_path: Path, postgres_server, monkeypatch
) -> None:
    """The sink records its position in the checkpoint after each committed transaction; a kill
    between the two writes that batch again, and the key makes it replace itself."""
    import psycopg

    want = clean_output("jsonl")
    url = postgres_server.new_database()
    monkeypatch.setitem(CLI_ENV, "CRASH_SINK_URL", url)
    folder = products_project(tmp_path, site_url, "jsonl")
    with open(folder / "config.toml", "a", encoding="utf-8") as config:
        config.write('\n[[spiders.sinks]]\ntype = "postgres"\nurl_env = "CRASH_SINK_URL"\ntable = "products"\nkey = "id"\n')
    seed = seed_for("loop:sigkill:postgres")
    log = KillLog(seed, "sigkill-postgres")
    stop_repeatedly(folder, STOP_MODES["sigkill"], random.Random(seed), log, total_pages=PAGES,
                    output=folder / "out" / "products.jsonl", kills=3)
    run_to_end(folder, log="final")
    print(f"\n{log}")
    with psycopg.connect(url) as db, db.cursor() as cursor:
        cursor.execute("SELECT * FROM products")
        names = [column.name for column in cursor.description or ()]
        rows = [dict(zip(names, row)) for row in cursor.fetchall()]
    table = Output(folder / "products (table)", Counter(
        json.dumps({**row, "price": str(row["price"])}, sort_keys=True) for row in rows
    ))
    assert_same_items(table, want, str(log))


# -- resuming is immediate -----------------------------------------------------------------------------


def test_a_resumed_crawl_fetches_again_within_2s_and_takes_back_in_flight_requests_at_once(
    tmp_path: Path,
) -> None:
    """After a SIGKILL mid-crawl, the next run's first request (and a fresh request for every URL
    the dead process held in flight) reaches the site within 2 s of the process start."""
    with PracticeSite(products=200, per_page=PER_PAGE, latency=0.1) as site:
        folder = products_project(tmp_path, site.url, "jsonl")
        checkpoint = checkpoint_path(folder)
        first = start_cli(folder, "run", "config.toml", log="killed")
        with reaped(first):
            wait_for(lambda: site.counters.requests >= 40 or first.proc.poll() is not None, 60, "40 requests")
            assert first.proc.poll() is None, first.err()
            first.proc.kill()
            assert first.wait(30) == -signal.SIGKILL
        # Let the dead process's last requests drain from the site so they are not counted as new.
        wait_for(lambda: site.open_connections == 0, 10, "the killed crawler's connections to close")
        counted = site.counters.requests
        settle = time.monotonic()
        while time.monotonic() - settle < 0.3:
            if site.counters.requests != counted:
                counted, settle = site.counters.requests, time.monotonic()
            assert time.monotonic() - first.started < 60, "the site kept receiving requests"
            time.sleep(0.01)
        left_in_flight = in_flight_urls(checkpoint)
        assert left_in_flight, "the kill left nothing in flight; nothing to reclaim"
        hits_before = {url: site.counters.hits(urlsplit(url).path) for url in left_in_flight}

        second = start_cli(folder, "run", "config.toml", log="resumed")
        with reaped(second):
            first_request = wait_for(lambda: site.counters.requests > counted, 30, "a first new request")
            all_reclaimed = wait_for(
                lambda: all(site.counters.hits(urlsplit(url).path) > hits for url, hits in hits_before.items()),
                30,
                "every request left in flight to be fetched again",
            )
            code = second.wait(120)
        assert code == EXIT_OK, second.err()
        timings = (f"first request {first_request - second.started:.2f}s after start, all "
                   f"{len(left_in_flight)} reclaimed requests by {all_reclaimed - second.started:.2f}s")
        print(f"\nresume: {timings}")
        assert first_request - second.started < 2.0, timings
        assert all_reclaimed - second.started < 2.0, timings
        assert f"{len(left_in_flight)} taken back from the stopped run" in second.err(), second.err()
        ids = Counter(json.loads(line)["id"] for line in (folder / "out" / "products.jsonl").read_text().splitlines())
        assert sorted(ids) == list(range(1, 201)) and set(ids.values()) == {1}


# -- a callback that crashes -------------------------------------------------------------------------

FAILING_IDS = (7, 77, 177)
FRAGILE_SPIDER = f"""
from spiders.products import ProductsSpider


class FragileProductsSpider(ProductsSpider):
    '''The shipped products spider, whose product callback crashes on a few products.'''

    name = "fragile"

    def parse_product(self, response):
        product_id = int(response.css("article.product::attr(data-id)").get())
        if product_id in {FAILING_IDS!r}:
            raise RuntimeError(f"boom on product {{product_id}}")
        yield from super().parse_product(response)
"""


def test_a_crashing_callback_records_its_pages_as_failed_and_every_other_item_is_written_once(
    site_url: str, clean_output: Callable[[str], Output], tmp_path: Path
) -> None:
    want = clean_output("jsonl")
    seed = seed_for("callback")
    folder = products_project(tmp_path, site_url, "jsonl", spider="fragile", extra_spiders={"fragile": FRAGILE_SPIDER})
    output = folder / "out" / "fragile.jsonl"
    log = KillLog(seed, "sigkill")

    # Killed once mid-crawl as well: the failures recorded before the kill stay recorded, once.
    stop_repeatedly(folder, STOP_MODES["sigkill"], random.Random(seed), log, total_pages=PAGES, output=output, kills=1)
    run_to_end(folder, log="final", exit_code=EXIT_REQUESTS_FAILED)
    again = run_to_end(folder, log="again", exit_code=EXIT_REQUESTS_FAILED)

    failing_urls = {f"{site_url}/product/{product_id}" for product_id in FAILING_IDS}
    expected = Output(
        want.path,
        Counter({item: n for item, n in want.items.items() if json.loads(item)["url"] not in failing_urls}),
    )
    assert_same_items(read_output(output, "jsonl"), expected, str(log))
    with Checkpoint(checkpoint_path(folder), owner="test") as checkpoint:
        failed = checkpoint.frontier("fragile").failed(100)
        counts = checkpoint.frontier("fragile").counts()
    assert sorted(failure.url for failure in failed) == sorted(failing_urls), failed
    assert all(
        failure.error is not None and "RuntimeError: boom on product" in failure.error for failure in failed
    ), failed
    assert (counts.done, counts.failed, counts.queued, counts.in_flight) == (PAGES - 3, 3, 0, 0), counts
    logged = "".join(path.read_text(encoding="utf-8") for path in sorted((folder / "logs").glob("*.err")))
    logged_ids = set(re.findall(r"failed \S*/product/(\d+) after 1 attempt\(s\): callback \w+\.parse_product raised", logged))
    assert logged_ids == {str(product_id) for product_id in FAILING_IDS}, logged
    assert f"this crawl is already finished ({PAGES - 3} pages, {PRODUCTS - 3} items, 3 failed)" in again.err()


# -- the shipped config, as shipped ------------------------------------------------------------------


def shipped_project(folder: Path, port: int, latency: float) -> Path:
    """The repo's config.toml and spiders/, its site pinned to ``port`` and slower.

    Pinned: the items name the site's URL, so two folders compared must be served on one port."""
    shutil.copytree(REPO / "spiders", folder / "spiders", ignore=shutil.ignore_patterns("__pycache__"))
    text = (REPO / "config.toml").read_text(encoding="utf-8")
    section = re.search(r"(?ms)^\[practice_site\][^\n]*\n(.*?)(?=^\[|\Z)", text)
    assert section, "config.toml has no [practice_site] section"
    body = section.group(1)
    for key, value in (("port", port), ("latency", latency)):
        if re.search(rf"(?m)^{key}\s*=", body):
            body = re.sub(rf"(?m)^{key}\s*=.*$", f"{key} = {value}", body)
        else:
            body = f"{key} = {value}\n" + body
    text = text[: section.start(1)] + body + text[section.end(1):]
    (folder / "config.toml").write_text(text, encoding="utf-8")
    return folder


def checkpoint_path_shipped(folder: Path) -> Path:
    return folder / ".crawler" / "checkpoint.db"


def pages_per_spider(checkpoint: Path) -> dict[str, int]:
    with closing(sqlite3.connect(f"{checkpoint.as_uri()}?mode=ro", uri=True, timeout=5.0)) as db:
        return dict(
            db.execute(
                "SELECT spiders.name, count(*) FROM requests JOIN spiders ON requests.spider = spiders.id"
                " GROUP BY spiders.name"
            ).fetchall()
        )


def shipped_outputs(folder: Path) -> dict[str, Output]:
    return {name: read_output(folder / "output" / f"{name}.jsonl", "jsonl") for name in ("products", "members")}


def test_the_shipped_config_killed_at_random_moments_then_resumed_gives_a_clean_runs_output(
    tmp_path: Path,
) -> None:
    """``crawler run config.toml`` as shipped (it serves the practice site itself, so the site dies
    with each killed run): killed with SIGKILL at random moments, run again until it finishes, its
    products.jsonl and members.jsonl hold the items of one clean run exactly once.

    The killed crawl runs in a folder of its own (same config, same port), so that every spider
    starts from nothing there, as after ``--fresh``: ``--fresh`` over the clean run's folder would
    reset each spider only when its turn comes, so a kill during products would leave members
    finished from the clean run and untested."""
    seed = seed_for("shipped")
    rng = random.Random(seed)
    port = free_port()
    clean = shipped_project(tmp_path / "clean", port, latency=0.01)
    run_to_end(clean, log="clean")
    want = shipped_outputs(clean)
    assert want["products"].items.total() == 1000 and want["members"].items.total() > 0
    pages = pages_per_spider(checkpoint_path_shipped(clean))
    total_pages = sum(pages.values())

    killed = shipped_project(tmp_path / "killed", port, latency=0.01)
    checkpoint = checkpoint_path_shipped(killed)
    log = KillLog(seed, "sigkill")
    stop_repeatedly(
        killed, STOP_MODES["sigkill"], rng, log, total_pages=total_pages, checkpoint=checkpoint,
        output=killed / "output" / "products.jsonl", latest=4.0,
    )
    # And once more while the second spider (members: login, token, API) is crawling.
    stop_repeatedly(
        killed, STOP_MODES["sigkill"], rng, log, total_pages=total_pages, checkpoint=checkpoint,
        output=killed / "output" / "members.jsonl", kills=1, triggers=("cap",),
        caps_between=(pages["products"] + 20, total_pages - 50),
    )
    run_to_end(killed, log="final")

    print(f"\n{log}")
    got = shipped_outputs(killed)
    for name in ("products", "members"):
        assert_same_items(got[name], want[name], f"{name}: {log}")



# -- stops the loops above cannot aim at ------------------------------------------------------------

# Runs `crawler` with SQLite's default VFS patched so that the process SIGKILLs itself at the
# instant SQLite deletes a rollback journal: a kill -9 at one precise moment, deterministic.
# The first journal a crawl deletes is the one of the transaction that creates the checkpoint.
KILLED_AT_FIRST_JOURNAL_DELETE = r"""
import ctypes, os, signal, sys, _sqlite3

class VFS(ctypes.Structure):  # the head of struct sqlite3_vfs, up to xDelete
    _fields_ = [("iVersion", ctypes.c_int), ("szOsFile", ctypes.c_int), ("mxPathname", ctypes.c_int),
                ("pNext", ctypes.c_void_p), ("zName", ctypes.c_char_p), ("pAppData", ctypes.c_void_p),
                ("xOpen", ctypes.c_void_p), ("xDelete", ctypes.c_void_p)]

DELETE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int)
library = ctypes.CDLL(_sqlite3.__file__)  # its symbols include the libsqlite3 it uses
library.sqlite3_vfs_find.restype = ctypes.POINTER(VFS)
library.sqlite3_vfs_find.argtypes = [ctypes.c_char_p]
vfs = library.sqlite3_vfs_find(None).contents
original = DELETE(vfs.xDelete)

@DELETE
def delete(pointer, name, sync_dir):
    if name.endswith(b"-journal"):
        os.kill(os.getpid(), signal.SIGKILL)
    return original(pointer, name, sync_dir)

vfs.xDelete = ctypes.cast(delete, ctypes.c_void_p).value
from crawler.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_killed_while_creating_the_checkpoint_the_same_command_continues(
    site_url: str, clean_output: Callable[[str], Output], tmp_path: Path
) -> None:
    """A SIGKILL after SQLite wrote the new checkpoint but before it deleted the rollback journal
    leaves a hot journal; the next run must recover it and crawl, not call the file foreign."""
    want = clean_output("jsonl")
    folder = products_project(tmp_path, site_url, "jsonl")
    checkpoint = checkpoint_path(folder)
    err_path = tmp_path / "killed.err"
    with open(err_path, "wb") as err:
        killed = subprocess.run(
            [sys.executable, "-c", KILLED_AT_FIRST_JOURNAL_DELETE, "run", "config.toml"],
            cwd=folder, env=CLI_ENV, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            timeout=60, check=False,
        )
    if killed.returncode != -signal.SIGKILL or not Path(f"{checkpoint}-journal").exists():
        pytest.fail(f"could not kill the crawl at the journal's deletion: exit {killed.returncode}, "
                    f"files {sorted(p.name for p in checkpoint.parent.iterdir())}\n{err_path.read_text()}")

    # Before 2ffde71 this run exited 3: "not a crawler checkpoint; use --fresh to replace it".
    run_to_end(folder, log="resumed")

    assert_same_items(read_output(folder / "out" / "products.jsonl", "jsonl"), want, "killed while creating")


# Runs `crawler` with os.fsync patched so that the process SIGKILLs itself right after its N-th
# fsync of the output file (N from argv[1]): the appended rows are on disk, and their progress is
# not recorded yet.
KILLED_AFTER_AN_OUTPUT_FSYNC = r"""
import os, signal, sys

real_fsync = os.fsync
left = int(sys.argv.pop(1))

def fsync(fd):
    global left
    real_fsync(fd)
    left -= 1
    if left == 0:
        os.kill(os.getpid(), signal.SIGKILL)

os.fsync = fsync
from crawler.cli import main
sys.exit(main(sys.argv[1:]))
"""


def recorded_output_offset(checkpoint: Path, output: Path) -> int:
    """How far the checkpoint says the output file is written (0 if it says nothing yet)."""
    with closing(sqlite3.connect(f"{checkpoint.as_uri()}?mode=ro", uri=True, timeout=5.0)) as db:
        row = db.execute("SELECT value FROM meta WHERE key LIKE ?", (f"%export:{output}",)).fetchone()
    return 0 if row is None else int(json.loads(row[0])["offset"])


def test_killed_between_an_output_append_and_its_progress_record_then_resumed(
    site_url: str, clean_output: Callable[[str], Output], tmp_path: Path
) -> None:
    """Three runs in a row die right after an fsync of the CSV file, the first with the header row
    in it, the second after its first append was recorded; each next run cuts the unrecorded rows
    off and writes them again: every row once, the header once."""
    want = clean_output("csv")
    folder = products_project(tmp_path, site_url, "csv")
    output = folder / "out" / "products.csv"
    checkpoint = checkpoint_path(folder)
    windows = []
    for attempt, nth_fsync in enumerate((1, 2, 1)):
        err_path = tmp_path / f"killed-{attempt}.err"
        with open(err_path, "wb") as err:
            killed = subprocess.run(
                [sys.executable, "-c", KILLED_AFTER_AN_OUTPUT_FSYNC, str(nth_fsync), "run", "config.toml"],
                cwd=folder, env=CLI_ENV, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                timeout=120, check=False,
            )
        size, recorded = output.stat().st_size, recorded_output_offset(checkpoint, output)
        windows.append((recorded, size))
        if killed.returncode != -signal.SIGKILL or not size > recorded or (nth_fsync > 1 and not recorded):
            pytest.fail(f"run {attempt} was not killed with unrecorded output on disk: exit "
                        f"{killed.returncode}, (recorded, size) so far {windows}\n{err_path.read_text()}")

    run_to_end(folder, log="final")

    print(f"\n(recorded offset, file size) after each kill: {windows}")
    assert_same_items(read_output(output, "csv"), want, f"(recorded offset, file size) after each kill: {windows}")


EXITING_SPIDER = '''
import sys

from spiders.products import ProductsSpider


class ExitingProductsSpider(ProductsSpider):
    """The shipped products spider, whose product callback calls sys.exit() on product 7."""

    name = "exiting"

    def parse_product(self, response):
        if response.css("article.product::attr(data-id)").get() == "7":
            sys.exit("cannot go on with product 7")
        yield from super().parse_product(response)
'''


def test_a_callback_calling_sys_exit_fails_its_page_and_the_crawl_finishes(tmp_path: Path) -> None:
    """A callback raising a BaseException (SystemExit) is a callback error like any other: before
    2ffde71 it ended its worker thread, whose lease never came back, and the crawl hung."""
    products = 40
    with PracticeSite(products=products, per_page=PER_PAGE) as site:
        folder = products_project(
            tmp_path, site.url, "jsonl", spider="exiting", extra_spiders={"exiting": EXITING_SPIDER}
        )
        checkpoint = checkpoint_path(folder)
        pages = 1 + products // PER_PAGE + products
        run = start_cli(folder, "run", "config.toml", log="exiting")
        with reaped(run):
            # Every other page done: from here a working crawl ends within moments.
            wait_for(
                lambda: run.proc.poll() is not None or (pages_done(checkpoint) or 0) >= pages - 1,
                60,
                "every other page to be done",
            )
            try:
                code = run.proc.wait(3)
            except subprocess.TimeoutExpired:
                states = checkpoint_states(checkpoint)
                raise AssertionError(
                    f"the crawl hangs: still running 3s after every other page was done; "
                    f"checkpoint states {states} (1 = in flight)\nstderr:\n{run.err()}"
                ) from None
        assert code == EXIT_REQUESTS_FAILED, run.err()  # its page failed
        lines = (folder / "out" / "exiting.jsonl").read_text(encoding="utf-8").splitlines()
        ids = Counter(json.loads(line)["id"] for line in lines)
        assert sorted(ids) == [n for n in range(1, products + 1) if n != 7] and set(ids.values()) == {1}, ids
        with Checkpoint(checkpoint, owner="test") as opened:
            assert [failure.url for failure in opened.frontier("exiting").failed(10)] == [f"{site.url}/product/7"]
