"""The practice site ``crawler run config.toml`` serves: on any free port unless one is pinned,
its URL filled in for ``{practice_site}`` in the spider entries, and served on the same port
again when a stopped crawl resumes (the URLs its checkpoint holds name that port)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from crawler.config import load_config

REPO = Path(__file__).resolve().parent.parent
PRODUCTS = 40  # the catalogue the shipped config's site serves here, so a run takes a second
PORT_BEFORE = 8650  # the port config.toml used to pin

# The shipped config's credentials must come from the site's demo defaults, not the environment.
CLI_ENV = {
    **{key: value for key, value in os.environ.items() if not key.startswith("PRACTICE_")},
    "NO_COLOR": "1",
    "COLUMNS": "200",
}


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def crawler_cli(folder: Path, *args: str) -> Result:
    done = subprocess.run(
        [sys.executable, "-m", "crawler.cli", *args],
        cwd=folder, env=CLI_ENV, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def one_line_failure(result: Result, code: int) -> str:
    assert result.code == code, result
    assert "Traceback" not in result.err, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    return lines[0]


def shipped(folder: Path, **practice_site: object) -> Path:
    """The repo's config.toml and spiders/ in ``folder``, with these [practice_site] keys set."""
    shutil.copytree(REPO / "spiders", folder / "spiders", ignore=shutil.ignore_patterns("__pycache__"))
    text = (REPO / "config.toml").read_text(encoding="utf-8")
    section = re.search(r"(?ms)^\[practice_site\][^\n]*\n(.*?)(?=^\[|\Z)", text)
    assert section, "config.toml has no [practice_site] section"
    body = section.group(1)
    for key, value in {"products": PRODUCTS, **practice_site}.items():
        body = re.sub(rf"(?m)^{key}\s*=.*\n", "", body) + f"{key} = {value}\n"
    (folder / "config.toml").write_text(text[: section.start(1)] + body + text[section.end(1):], encoding="utf-8")
    return folder


@contextmanager
def holding(port: int) -> Iterator[int]:
    """Another program's socket listening on ``port`` (0: a free one); yields the port."""
    with socket.socket() as sock:
        # As the site does: connections of a stopped run, closing (TIME_WAIT), must not stop it.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            assert port, "no free port to hold"  # another program listens there: held all the same
        yield port or sock.getsockname()[1]


def read_items(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def ports_in(items: list[dict[str, object]]) -> set[int | None]:
    return {urlsplit(str(item["url"])).port for item in items}


# -- the shipped config, whatever else runs on the machine -------------------------------------------


def test_the_shipped_config_runs_while_another_program_holds_port_8650(tmp_path: Path) -> None:
    folder = shipped(tmp_path)
    with holding(PORT_BEFORE):
        result = crawler_cli(folder, "run", "config.toml")
    assert result.code == 0, result
    assert "Traceback" not in result.err, result.err

    products = read_items(folder / "output" / "products.jsonl")
    assert sorted(item["id"] for item in products) == list(range(1, PRODUCTS + 1))
    (port,) = ports_in(products)
    assert port != PORT_BEFORE
    # The members spider's start URL, its login URL and its token URL were all filled in: member
    # pages need the login's cookies, API items the token, sent only to the token URL's host:port.
    kinds = Counter(item["kind"] for item in read_items(folder / "output" / "members.jsonl"))
    assert kinds == {"member_page": 200, "api_item": 200}, kinds


def test_a_pinned_port_that_is_busy_is_one_line_and_exit_1(tmp_path: Path) -> None:
    with holding(0) as port:
        folder = shipped(tmp_path, port=port)
        line = one_line_failure(crawler_cli(folder, "run", "config.toml"), 1)
    assert line.startswith(f"crawler: cannot serve the practice site on 127.0.0.1:{port}: "), line
    assert "practice_site.port = 0" in line, line
    assert not (folder / "output").exists()


def test_the_placeholder_without_the_site_served_is_a_config_error_naming_the_fields(tmp_path: Path) -> None:
    folder = shipped(tmp_path, serve="false")
    line = one_line_failure(crawler_cli(folder, "check", "config.toml"), 2)
    assert line == (
        "config.toml: spiders[0].args.start_url, spiders[1].args.start_url, spiders[1].login.url, "
        "spiders[1].token.url: {practice_site} needs practice_site.serve = true"
    )


def test_check_list_and_status_take_the_placeholder_as_written(tmp_path: Path) -> None:
    folder = shipped(tmp_path)
    checked = crawler_cli(folder, "check", "config.toml")
    assert checked.code == 0 and checked.out.strip().endswith("OK (2 spiders: products, members)"), checked
    listed = crawler_cli(folder, "list", "config.toml")
    assert listed.code == 0 and "args: {'start_url': '{practice_site}/'}" in listed.out, listed
    status = crawler_cli(folder, "status", "config.toml")  # nothing crawled yet: it says so
    assert "no checkpoint yet" in one_line_failure(status, 3)


def test_the_placeholder_is_filled_in_where_urls_go_and_other_braces_stay(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        textwrap.dedent(
            """
            [[spiders]]
            spider = "members"
            args = { start_url = "{practice_site}/", template = "{id}: {practice_site}{", pages = ["{practice_site}/a", 3] }

            [spiders.login]
            url = "{practice_site}/login"
            logged_out_url = "{practice_site}/bye"
            fields = { note = "{practice_site}" }

            [spiders.token]
            url = "{practice_site}/api/token"
            hosts = ["{practice_site}", "example.com"]

            [practice_site]
            serve = true
            """
        ),
        encoding="utf-8",
    )
    config = load_config(path)
    filled = config.with_practice_site("http://127.0.0.1:4321")
    entry = filled.spiders[0]
    assert entry.args == {
        "start_url": "http://127.0.0.1:4321/",
        "template": "{id}: http://127.0.0.1:4321{",
        "pages": ["http://127.0.0.1:4321/a", 3],
    }
    assert entry.login is not None and entry.token is not None
    assert (entry.login.url, entry.login.logged_out_url) == ("http://127.0.0.1:4321/login", "http://127.0.0.1:4321/bye")
    assert entry.login.fields == {"note": "{practice_site}"}  # not a URL field: as written
    assert entry.token.url == "http://127.0.0.1:4321/api/token"
    assert entry.token.hosts == ["http://127.0.0.1:4321", "example.com"]
    assert filled.base_dir == config.base_dir
    assert config.spiders[0].args["start_url"] == "{practice_site}/"  # the loaded config stays as it was


# -- a stopped crawl resumes on the port it started on ---------------------------------------------

SLOW_CRAWL = """
[[spiders]]
spider = "products"
args = { start_url = "{practice_site}/" }

[practice_site]
serve = true
products = 40
latency = 0.04

[crawl]
workers = 2
"""


def killed_mid_crawl(folder: Path) -> int:
    """``crawler run`` on a slow site, SIGKILLed once a few pages are done; the site's port."""
    shutil.copytree(REPO / "spiders", folder / "spiders", ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "config.toml").write_text(SLOW_CRAWL, encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "crawler.cli", "run", "config.toml"],
        cwd=folder, env=CLI_ENV, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while (progress := crawl_progress(folder / ".crawler" / "checkpoint.db"))[0] < 5:
            assert proc.poll() is None, f"crawler exited early with {proc.returncode}"
            assert time.monotonic() < deadline, "no pages done within 30s"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    (port,) = {urlsplit(url).port for url in progress[1]}
    assert port is not None
    return port


def crawl_progress(checkpoint: Path) -> tuple[int, list[str]]:
    """Pages the checkpoint holds as done, and the URLs it has queued: read-only, as a crawl
    writes it (done pages keep no URL)."""
    if not Path(f"{checkpoint}-wal").exists():
        return 0, []
    try:
        with closing(sqlite3.connect(f"{checkpoint.as_uri()}?mode=ro", uri=True, timeout=1.0)) as db:
            (done,) = db.execute("SELECT count(*) FROM requests WHERE state = 2").fetchone()
            queued = db.execute("SELECT request FROM requests WHERE state IN (0, 1)").fetchall()
    except sqlite3.Error:
        return 0, []
    return int(done), [json.loads(text)["url"] for (text,) in queued]


def assert_all_products_once(folder: Path, port: int) -> None:
    items = read_items(folder / "output" / "products.jsonl")
    assert sorted(item["id"] for item in items) == list(range(1, 41))
    assert ports_in(items) == {port}


def test_a_killed_crawl_resumes_on_the_port_it_started_on(tmp_path: Path) -> None:
    port = killed_mid_crawl(tmp_path)
    result = crawler_cli(tmp_path, "run", "config.toml")
    assert result.code == 0, result
    assert_all_products_once(tmp_path, port)
    assert "resuming" in result.err, result.err  # killed mid-crawl indeed


def test_a_resumed_crawl_whose_port_was_taken_says_so_and_fresh_starts_over(tmp_path: Path) -> None:
    port = killed_mid_crawl(tmp_path)
    with holding(port):
        line = one_line_failure(crawler_cli(tmp_path, "run", "config.toml"), 1)
        assert line.startswith(f"crawler: cannot serve the practice site on 127.0.0.1:{port}: "), line
        assert "--fresh" in line, line
        result = crawler_cli(tmp_path, "run", "config.toml", "--fresh")
    assert result.code == 0, result
    (new_port,) = ports_in(read_items(tmp_path / "output" / "products.jsonl"))
    assert new_port != port
    assert_all_products_once(tmp_path, new_port)
