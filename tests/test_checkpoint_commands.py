"""`crawler status`, `crawler retry-failed`, and the checkpoint's refusals and failures, run as the
user runs them: the real CLI in a subprocess, against the practice site, on real files."""

from __future__ import annotations

import json
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from crawler.frontier.base import FrontierCounts
from crawler.frontier.schema import SCHEMA_VERSION
from crawler.frontier.sqlite import Checkpoint
from crawler.practice import PracticeSite
from helpers import wait_until, lease_from

REPO = Path(__file__).resolve().parent.parent


def write_project(folder: Path, site: PracticeSite, *, spiders: tuple[str, ...] = ("products",), extra: str = "") -> None:
    (folder / "spiders").mkdir(exist_ok=True)
    (folder / "spiders" / "__init__.py").touch()
    (folder / "spiders" / "products.py").write_text((REPO / "spiders" / "products.py").read_text())
    (folder / "spiders" / "probe.py").write_text(
        textwrap.dedent(
            """
            from crawler import Request, Spider

            class Probe(Spider):
                name = "probe"
                urls = []

                def start_requests(self):
                    for url in self.urls:
                        yield Request(url)

                def parse(self, response):
                    yield {"url": response.url}
            """
        )
    )
    entries = "\n".join(
        f'[[spiders]]\nspider = "{name}"\nargs = {{ start_url = "{site.url}/" }}\n'
        if name == "products"
        else f'[[spiders]]\nspider = "{name}"\n'
        for name in spiders
    )
    (folder / "config.toml").write_text(entries + "[crawl]\nworkers = 4\n" + textwrap.dedent(extra))


def cli(folder: Path, *args: str, **popen: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crawler.cli", *args],
        cwd=folder,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        **popen,  # type: ignore[arg-type]
    )


@contextmanager
def crawl_running(folder: Path, until: Callable[[], bool]) -> Iterator[subprocess.Popen[bytes]]:
    """``crawler run config.toml`` in ``folder`` as a process of its own, once ``until()`` holds;
    killed (kill -9) when the block ends."""
    with open(folder / "run.log", "w") as log, subprocess.Popen(
        [sys.executable, "-m", "crawler.cli", "run", "config.toml"], cwd=folder, stdout=log, stderr=log
    ) as crawl:
        wait_until(until)
        try:
            yield crawl
        finally:
            crawl.send_signal(signal.SIGKILL)
            crawl.wait(timeout=30)


def test_status_shows_a_running_crawl_and_what_a_killed_one_left_in_flight(tmp_path: Path) -> None:
    with PracticeSite(products=300, latency=0.05) as site:
        write_project(tmp_path, site)
        with crawl_running(tmp_path, lambda: site.counters.hits("/catalogue/page/3") > 0) as crawl:
            running = cli(tmp_path, "status", "config.toml")
        assert running.returncode == 0, running.stderr
        assert f":{crawl.pid}" in running.stdout and "A crawl is running now" in running.stdout
        assert "products: unfinished;" in running.stdout

        after = cli(tmp_path, "status", "config.toml")
        assert after.returncode == 0
        assert "No crawl is running." in after.stdout
        assert "held by " in after.stdout and "gone; taken back on the next run" in after.stdout

        cli(tmp_path, "run", "config.toml")
        final = cli(tmp_path, "status", "config.toml").stdout
        assert "products: finished; 316 done, 0 queued, 0 in flight, 0 failed, 0 refused by robots.txt; 300 items" in final


def test_status_without_a_checkpoint_says_so(tmp_path: Path) -> None:
    with PracticeSite(products=10) as site:
        write_project(tmp_path, site)
    result = cli(tmp_path, "status", "config.toml")
    assert result.returncode == 3
    assert "no checkpoint yet" in result.stderr and "Traceback" not in result.stderr


def test_a_damaged_checkpoint_is_one_line_naming_the_file_for_run_and_status(tmp_path: Path) -> None:
    with PracticeSite(products=200) as site:
        write_project(tmp_path, site)
        assert cli(tmp_path, "run", "config.toml").returncode == 0
        checkpoint = tmp_path / ".crawler" / "checkpoint.db"
        size = checkpoint.stat().st_size
        with open(checkpoint, "r+b") as file:  # 8 KiB of noise in the middle, as a bad disk would
            file.seek(size // 2)
            file.write(os.urandom(8192))
        for command in ("status", "run"):
            result = cli(tmp_path, command, "config.toml")
            assert result.returncode == 3, (command, result.stderr)
            [line] = result.stderr.splitlines()
            assert str(checkpoint) in line and "is damaged" in line and "--fresh" in line, line
        # The way out the message names works.
        assert cli(tmp_path, "run", "config.toml", "--fresh").returncode == 0
        assert "products: finished" in cli(tmp_path, "status", "config.toml").stdout


def test_an_empty_checkpoint_file_is_no_checkpoint_yet_for_status_and_run(tmp_path: Path) -> None:
    with PracticeSite(products=10) as site:
        write_project(tmp_path, site)
        (tmp_path / ".crawler").mkdir()
        (tmp_path / ".crawler" / "checkpoint.db").touch()
        status = cli(tmp_path, "status", "config.toml")
        assert status.returncode == 3 and "no checkpoint yet" in status.stderr, status.stderr
        assert cli(tmp_path, "run", "config.toml").returncode == 0  # and a crawl starts in it
        assert "products: finished" in cli(tmp_path, "status", "config.toml").stdout


def test_a_checkpoint_in_use_names_the_crawl_that_holds_it(tmp_path: Path) -> None:
    with PracticeSite(products=300, latency=0.05) as site:
        write_project(tmp_path, site)
        with crawl_running(tmp_path, lambda: site.counters.hits("/catalogue/page/2") > 0) as crawl:
            second = cli(tmp_path, "run", "config.toml")
    assert second.returncode == 3
    [line] = second.stderr.splitlines()
    assert "in use by another crawl" in line and f":{crawl.pid})" in line, line


def test_retry_failed_queues_failures_again_by_status(tmp_path: Path) -> None:
    with PracticeSite(products=10) as site:
        urls = [f"{site.url}/flaky/outage?fail=3", f"{site.url}/status/404", f"{site.url}/links/target/1"]
        write_project(
            tmp_path,
            site,
            spiders=("probe",),
            extra="[retry]\nattempts = 2\nbackoff = { initial = 0.01, max = 0.01, jitter = 0 }\n",
        )
        config = tmp_path / "config.toml"
        config.write_text(config.read_text().replace('spider = "probe"\n', f'spider = "probe"\nargs = {{ urls = {json.dumps(urls)} }}\n'))
        assert cli(tmp_path, "run", "config.toml").returncode == 4  # finished, but requests failed
        assert "0 queued, 0 in flight, 2 failed" in cli(tmp_path, "status", "config.toml").stdout

        retried = cli(tmp_path, "retry-failed", "config.toml", "--status", "503")
        assert retried.returncode == 0, retried.stderr
        assert "probe: 1 failed request queued again" in retried.stdout
        assert cli(tmp_path, "run", "config.toml").returncode == 4  # the 404 is still failed
        # Two attempts in the first run, then the outage (3 failures) ends on the second retry.
        assert site.counters.attempts("outage") == 4
        status = cli(tmp_path, "status", "config.toml").stdout
        assert "probe: finished; 2 done, 0 queued, 0 in flight, 1 failed, 0 refused by robots.txt; 2 items" in status
        # The 503 is done now: what failed is what the checkpoint holds, not what ever failed.
        assert "  Failed by HTTP status: 404 1" in status.splitlines()
        assert "  Failed: HTTPStatusError 1" in status.splitlines()

        by_kind = cli(tmp_path, "retry-failed", "config.toml", "--kind", "HTTPStatusError")
        assert "probe: 1 failed request queued again" in by_kind.stdout


def test_a_checkpoint_for_other_spiders_is_refused_until_fresh(tmp_path: Path) -> None:
    with PracticeSite(products=10) as site:
        write_project(tmp_path, site)
        assert cli(tmp_path, "run", "config.toml").returncode == 0
        write_project(tmp_path, site, spiders=("products", "probe"), extra='[output]\npath = "output/{spider}.jsonl"\n')
        refused = cli(tmp_path, "run", "config.toml")
        assert refused.returncode == 3
        [line] = refused.stderr.splitlines()
        assert "written for spiders products, but the config runs probe, products" in line
        assert cli(tmp_path, "run", "config.toml", "--fresh").returncode == 0


def test_a_full_disk_stops_the_crawl_cleanly_and_loses_nothing(tmp_path: Path) -> None:
    def limit_file_size() -> None:
        # A file may not grow past 160 kB: writes beyond fail with EFBIG, as on a full disk.
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (160_000, 160_000))

    with PracticeSite(products=1000) as site:
        write_project(tmp_path, site)
        full = cli(tmp_path, "run", "config.toml", preexec_fn=limit_file_size)
        # The checkpoint or the output file may fill up first: either way, the crawl's files (3).
        assert full.returncode == 3, full.stderr
        assert "Traceback" not in full.stderr
        assert "cannot write" in full.stderr and "What was committed is safe" in full.stderr
        items_then = len((tmp_path / "output" / "products.jsonl").read_text().splitlines())
        assert items_then < 1000

        assert cli(tmp_path, "run", "config.toml").returncode == 0
        ids = [json.loads(line)["id"] for line in (tmp_path / "output" / "products.jsonl").read_text().splitlines()]
        assert sorted(ids) == list(range(1, 1001))


SCHEMA_1 = """
PRAGMA application_id = 1129464151;
PRAGMA user_version = 1;
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE spiders (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE requests (
    fingerprint BLOB PRIMARY KEY, spider INTEGER NOT NULL, seq INTEGER NOT NULL, state INTEGER NOT NULL,
    priority INTEGER NOT NULL, depth INTEGER NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    owner TEXT, request TEXT, error TEXT
) WITHOUT ROWID;
CREATE INDEX requests_queued ON requests (spider, priority DESC, seq) WHERE state = 0;
CREATE INDEX requests_unfinished ON requests (spider, state) WHERE state IN (1, 3);
CREATE TABLE items (id INTEGER PRIMARY KEY, spider INTEGER NOT NULL, fingerprint BLOB NOT NULL, data TEXT NOT NULL);
CREATE INDEX items_by_spider ON items (spider, id);
CREATE TABLE rejected (id INTEGER PRIMARY KEY, spider INTEGER NOT NULL, url TEXT NOT NULL, error TEXT NOT NULL,
                       data TEXT NOT NULL);
INSERT INTO spiders VALUES (1, 'old');
INSERT INTO requests VALUES
    (x'01', 1, 1, 2, 0, 0, 1, NULL, NULL, NULL),
    (x'02', 1, 2, 0, 0, 1, 0, NULL, '{"url":"http://h/queued"}', NULL),
    (x'03', 1, 3, 1, 5, 1, 0, 'dead:1', '{"url":"http://h/in-flight","priority":5}', NULL),
    (x'04', 1, 4, 3, 0, 2, 4, NULL, '{"url":"http://h/failed"}', 'HTTP 503');
INSERT INTO items VALUES (1, 1, x'01', '{"a":1}');
"""


def test_a_checkpoint_from_schema_1_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.db"
    with closing(sqlite3.connect(path)) as db:
        db.executescript(SCHEMA_1)
    with Checkpoint(path, "test") as checkpoint:
        (version,) = checkpoint.db.execute("PRAGMA user_version").fetchone()
        (auto_vacuum,) = checkpoint.db.execute("PRAGMA auto_vacuum").fetchone()
        frontier = checkpoint.frontier("old")
        assert frontier.resume.reclaimed == 1  # the dead process's lease came back
        assert frontier.counts() == FrontierCounts(queued=2, done=1, failed=1, items=1)
        leases = lease_from(frontier, 10)
        assert [lease.request.url for lease in leases] == ["http://h/in-flight", "http://h/queued"]
        [failure] = frontier.failed(10)
        assert (failure.url, failure.attempts, failure.error) == ("http://h/failed", 4, "HTTP 503")
        assert frontier.retry_failed(statuses=[503]) == 1
    assert version == SCHEMA_VERSION == 6
    assert auto_vacuum == 2  # incremental


SCHEMA_3 = """
PRAGMA application_id = 1129464151;
PRAGMA user_version = 3;
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE spiders (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE items (id INTEGER PRIMARY KEY, spider INTEGER NOT NULL, fingerprint BLOB NOT NULL, data TEXT NOT NULL);
CREATE INDEX items_by_spider ON items (spider, id);
CREATE TABLE rejected (id INTEGER PRIMARY KEY, spider INTEGER NOT NULL, url TEXT NOT NULL, error TEXT NOT NULL,
                       data TEXT NOT NULL);
CREATE TABLE seen (fingerprint BLOB PRIMARY KEY, spider INTEGER NOT NULL, state INTEGER NOT NULL,
                   attempts INTEGER NOT NULL DEFAULT 0, error TEXT, error_kind TEXT, request TEXT, depth INTEGER
) WITHOUT ROWID;
CREATE INDEX seen_failed ON seen (spider) WHERE state = 3;
CREATE TABLE queue (seq INTEGER PRIMARY KEY, spider INTEGER NOT NULL, fingerprint BLOB NOT NULL,
                    priority INTEGER NOT NULL, depth INTEGER NOT NULL, owner TEXT, request TEXT NOT NULL);
CREATE INDEX queue_ready ON queue (spider, priority DESC, seq) WHERE owner IS NULL;
CREATE INDEX queue_leased ON queue (spider, owner) WHERE owner IS NOT NULL;
INSERT INTO spiders VALUES (1, 'old');
INSERT INTO seen (fingerprint, spider, state) VALUES (x'01', 1, 0), (x'02', 1, 0), (x'03', 1, 0);
INSERT INTO queue (spider, fingerprint, priority, depth, owner, request) VALUES
    (1, x'01', 0, 1, NULL, '{"url":"http://a.example/1"}'),
    (1, x'02', 0, 1, 'dead:1', '{"url":"https://B.example:8443/2"}'),
    (1, x'03', 3, 1, NULL, '{"url":"http://a.example:80/3","priority":3}');
"""


def test_a_checkpoint_from_schema_3_gets_hosts_for_its_queue(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.db"
    with closing(sqlite3.connect(path)) as db:
        db.executescript(SCHEMA_3)
    with Checkpoint(path, "test") as checkpoint:
        frontier = checkpoint.frontier("old")
        assert frontier.ready_hosts() == {"a.example": 2, "b.example:8443": 1}
        leases = frontier.lease({"a.example": 5, "b.example:8443": 5})
        assert [(lease.host, lease.request.url) for lease in leases] == [
            ("a.example", "http://a.example:80/3"),  # priority first, within the host
            ("a.example", "http://a.example/1"),
            ("b.example:8443", "https://B.example:8443/2"),
        ]
        (version,) = checkpoint.db.execute("PRAGMA user_version").fetchone()
    assert version == SCHEMA_VERSION == 6


SCHEMA_4 = SCHEMA_3.replace("PRAGMA user_version = 3;", "PRAGMA user_version = 4;").replace(
    "priority INTEGER NOT NULL, depth INTEGER NOT NULL, owner TEXT, request TEXT NOT NULL);",
    "priority INTEGER NOT NULL, depth INTEGER NOT NULL, owner TEXT, request TEXT NOT NULL,"
    " host TEXT NOT NULL DEFAULT '', not_before REAL NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0);",
) + """
CREATE VIEW requests AS SELECT seen.fingerprint, seen.spider, queue.seq, seen.state, seen.error FROM seen
LEFT JOIN queue ON queue.fingerprint = seen.fingerprint;
INSERT INTO seen (fingerprint, spider, state, attempts, error, error_kind, request, depth) VALUES
    (x'04', 1, 3, 2, 'HTTP 404', 'HTTPStatusError', '{"url":"http://a.example/gone"}', 1),
    (x'05', 1, 3, 4, 'HTTP 503', 'HTTPStatusError', '{"url":"http://a.example/down"}', 1),
    (x'06', 1, 3, 4, 'read timeout: HTTP 503 then nothing', 'ReadTimeout', '{"url":"http://a.example/slow"}', 1);
"""


def test_a_checkpoint_from_schema_4_keeps_failure_statuses_as_numbers(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.db"
    with closing(sqlite3.connect(path)) as db:
        db.executescript(SCHEMA_4)
    with Checkpoint(path, "test") as checkpoint:
        frontier = checkpoint.frontier("old")
        assert frontier.failed_statuses() == {404: 1, 503: 1}  # not the timeout whose text says 503
        assert frontier.failed_kinds() == {"HTTPStatusError": 2, "ReadTimeout": 1}
        assert frontier.retry_failed(statuses=[503]) == 1
        assert frontier.failed_statuses() == {404: 1}
        (version,) = checkpoint.db.execute("PRAGMA user_version").fetchone()
    assert version == SCHEMA_VERSION == 6


def test_export_writes_a_deleted_output_file_again_from_the_checkpoint(tmp_path) -> None:
    with PracticeSite(products=30, per_page=10) as site:
        write_project(tmp_path, site)
        assert cli(tmp_path, "run", "config.toml").returncode == 0
    output = tmp_path / "output" / "products.jsonl"
    written = output.read_text()
    output.unlink()

    exported = cli(tmp_path, "export", "config.toml")
    assert exported.returncode == 0, exported.stderr
    assert "up to date (30 items added)" in exported.stdout
    assert output.read_text() == written
