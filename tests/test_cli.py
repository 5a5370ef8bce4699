"""The ``crawler`` command, run as a real subprocess: exit codes, messages, and real crawls."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from crawler import __version__
from crawler.practice import PracticeSite, product

PRODUCTS = 120  # the `site` fixture's catalogue
PAGES = 1 + 6 + PRODUCTS  # home, listing pages (20 per page), product pages

REPO = Path(__file__).resolve().parent.parent
# The shipped example spider, so these tests also cover what `crawler run config.toml` runs.
PRODUCTS_SPIDER = (REPO / "spiders" / "products.py").read_text(encoding="utf-8")
OTHER_SPIDER = """
from crawler import Spider


class OtherSpider(Spider):
    name = "other"
    start_urls = ("http://127.0.0.1:9/",)
"""


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def crawler_cli(*args: str, cwd: Path, environ: dict[str, str] | None = None) -> Result:
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "200", **(environ or {})}
    done = subprocess.run(
        [sys.executable, "-m", "crawler.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
    )
    return Result(done.returncode, done.stdout, done.stderr)


def project(folder: Path, toml: str) -> Path:
    """A project folder: config.toml plus a spiders/ package holding ProductsSpider and OtherSpider."""
    spiders = folder / "spiders"
    spiders.mkdir(exist_ok=True)
    (spiders / "__init__.py").touch()
    (spiders / "products.py").write_text(PRODUCTS_SPIDER, encoding="utf-8")
    (spiders / "other.py").write_text(OTHER_SPIDER, encoding="utf-8")
    path = folder / "config.toml"
    path.write_text(textwrap.dedent(toml), encoding="utf-8")
    return path


def crawl_project(folder: Path, site: PracticeSite) -> Path:
    return project(
        folder,
        f"""
        [[spiders]]
        spider = "products"
        args = {{ start_url = "{site.url}/" }}

        [crawl]
        workers = 8

        [output]
        path = "out/{{spider}}.{{format}}"

        [checkpoint]
        path = "state/checkpoint.db"
        """,
    )


def output_lines(folder: Path) -> list[dict[str, object]]:
    text = (folder / "out" / "products.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def assert_clean_failure(result: Result, code: int) -> list[str]:
    """The process failed with ``code`` and said why in plain lines, without a traceback."""
    assert result.code == code, result
    assert "Traceback" not in result.err
    lines = result.err.splitlines()
    assert lines, "a failure must say something"
    return lines


# -- no crawling ----------------------------------------------------------------------------------


def test_version(tmp_path: Path) -> None:
    result = crawler_cli("--version", cwd=tmp_path)
    assert result.code == 0
    assert result.out.strip() == f"crawler {__version__}"


def test_no_command_is_a_usage_error(tmp_path: Path) -> None:
    result = crawler_cli(cwd=tmp_path)
    assert result.code == 2
    assert "usage: crawler" in result.err


def test_check_a_good_config(tmp_path: Path) -> None:
    project(tmp_path, '[[spiders]]\nspider = "products"\n[[spiders]]\nspider = "other"\n')
    result = crawler_cli("check", "config.toml", cwd=tmp_path)
    assert result.code == 0, result
    assert result.out.strip() == "config.toml: OK (2 spiders: products, other)"
    assert result.err == ""


def test_check_reports_every_problem_one_line_each(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
        typo = 1
        [[spiders]]
        spider = "products"
        colour = "red"
        [http.timeout]
        read = 0
        [crawl]
        workers = "many"
        """,
    )
    result = crawler_cli("check", "config.toml", cwd=tmp_path)

    lines = assert_clean_failure(result, 2)
    assert sorted(lines) == sorted(
        [
            "config.toml: typo: unknown key",
            "config.toml: spiders[0].colour: unknown key",
            "config.toml: http.timeout.read: must be greater than 0",
            "config.toml: crawl.workers: must be a valid integer, unable to parse string as an integer",
        ]
    )
    assert result.out == ""


def test_check_invalid_toml_is_one_line(tmp_path: Path) -> None:
    project(tmp_path, '[[spiders]\nspider = "products"\n')
    lines = assert_clean_failure(crawler_cli("check", "config.toml", cwd=tmp_path), 2)
    assert len(lines) == 1
    assert lines[0].startswith("config.toml: not valid TOML: ")


def test_check_missing_file(tmp_path: Path) -> None:
    lines = assert_clean_failure(crawler_cli("check", "nowhere.toml", cwd=tmp_path), 2)
    assert lines == ["nowhere.toml: no such file"]


def test_check_unknown_spider_and_unknown_spider_argument(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
        [[spiders]]
        spider = "nope"
        [[spiders]]
        spider = "products"
        args = { colour = "red" }
        """,
    )
    lines = assert_clean_failure(crawler_cli("check", "config.toml", cwd=tmp_path), 2)

    assert len(lines) == 2
    assert lines[0].startswith("spiders[0].spider: no spider named 'nope' in ")
    assert lines[0].endswith("(found: other, products)")
    assert lines[1] == "spiders[1].args: unknown argument 'colour' for spider 'products'"


def test_check_refuses_a_spider_argument_of_the_wrong_type(tmp_path: Path) -> None:
    # products declares start_url = "http://..." (a str); a number would only fail mid-crawl.
    project(tmp_path, '[[spiders]]\nspider = "products"\nargs = { start_url = 5 }\n')
    lines = assert_clean_failure(crawler_cli("check", "config.toml", cwd=tmp_path), 2)
    assert lines == ["spiders[0].args: argument 'start_url' of spider ProductsSpider must be str, not int (5)"]


def test_check_spider_by_import_path(tmp_path: Path) -> None:
    project(tmp_path, '[[spiders]]\nspider = "spiders.other:OtherSpider"\n[[spiders]]\nspider = "spiders.other:Nope"\n')
    lines = assert_clean_failure(crawler_cli("check", "config.toml", cwd=tmp_path), 2)
    assert lines == ["spiders[1].spider: spiders.other:Nope is not a Spider class"]


def test_list_shows_spider_names_classes_and_args(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
        [[spiders]]
        spider = "products"
        args = { start_url = "http://127.0.0.1:1/" }
        [[spiders]]
        spider = "other"
        """,
    )
    result = crawler_cli("list", "config.toml", cwd=tmp_path)
    assert result.code == 0, result
    assert result.out.splitlines() == [
        "products  (spiders.products:ProductsSpider)  args: {'start_url': 'http://127.0.0.1:1/'}",
        "other  (spiders.other:OtherSpider)",
    ]


def test_config_from_another_folder_finds_its_own_spiders(tmp_path: Path) -> None:
    folder = tmp_path / "project"
    folder.mkdir()
    project(folder, '[[spiders]]\nspider = "products"\n')
    result = crawler_cli("list", str(Path("project") / "config.toml"), cwd=tmp_path)
    assert result.code == 0, result
    assert result.out.startswith("products  (spiders.products:ProductsSpider)")


# -- crawling -------------------------------------------------------------------------------------


def test_run_crawls_every_product_then_reports_already_finished(tmp_path: Path, site: PracticeSite) -> None:
    crawl_project(tmp_path, site)

    first = crawler_cli("run", "config.toml", cwd=tmp_path)

    assert first.code == 0, first
    assert "Traceback" not in first.err
    items = output_lines(tmp_path)
    assert sorted(item["id"] for item in items) == list(range(1, PRODUCTS + 1))  # each exactly once
    assert all(item["name"] == product(int(str(item["id"])))["name"] for item in items)
    assert (tmp_path / "state" / "checkpoint.db").is_file()
    assert "Crawl summary" in first.out
    assert site.counters.hits("/product/1") == 1  # dedupe: linked from a listing and related pages

    output_before = (tmp_path / "out" / "products.jsonl").read_bytes()
    requests_before = site.counters.requests
    second = crawler_cli("run", "config.toml", cwd=tmp_path)

    assert second.code == 0, second
    assert (
        f"products: this crawl is already finished ({PAGES} pages, {PRODUCTS} items, 0 failed); "
        "run with --fresh to start over"
    ) in second.err
    assert site.counters.requests == requests_before  # nothing fetched again
    assert (tmp_path / "out" / "products.jsonl").read_bytes() == output_before


def test_run_fresh_starts_over(tmp_path: Path, site: PracticeSite) -> None:
    crawl_project(tmp_path, site)
    assert crawler_cli("run", "config.toml", cwd=tmp_path).code == 0

    fresh = crawler_cli("run", "config.toml", "--fresh", cwd=tmp_path)

    assert fresh.code == 0, fresh
    assert "already finished" not in fresh.err
    assert site.counters.hits("/product/1") == 2  # fetched again
    assert sorted(item["id"] for item in output_lines(tmp_path)) == list(range(1, PRODUCTS + 1))


def test_run_only_one_spider_by_name(tmp_path: Path, site: PracticeSite) -> None:
    crawl_project(tmp_path, site)
    with (tmp_path / "config.toml").open("a", encoding="utf-8") as config:
        config.write('\n[[spiders]]\nspider = "other"\n')  # would fail: nothing listens on port 9

    result = crawler_cli("run", "config.toml", "--spider", "products", cwd=tmp_path)

    assert result.code == 0, result
    assert len(output_lines(tmp_path)) == PRODUCTS
    assert not (tmp_path / "out" / "other.jsonl").exists()


def test_run_unknown_spider_name(tmp_path: Path, site: PracticeSite) -> None:
    crawl_project(tmp_path, site)
    lines = assert_clean_failure(crawler_cli("run", "config.toml", "--spider", "nope", cwd=tmp_path), 2)
    assert lines == ["no spider named 'nope' in the config"]
    assert site.counters.requests == 0
    assert not (tmp_path / "state").exists()


def test_run_refuses_a_garbage_checkpoint(tmp_path: Path, site: PracticeSite) -> None:
    crawl_project(tmp_path, site)
    checkpoint = tmp_path / "state" / "checkpoint.db"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"\x00\x01garbage, not SQLite\n" * 100)

    lines = assert_clean_failure(crawler_cli("run", "config.toml", cwd=tmp_path),3)  # 3: the checkpoint cannot be used

    assert len(lines) == 1
    assert lines[0].startswith("crawler: ")
    assert "not a usable crawler checkpoint" in lines[0]
    assert checkpoint.read_bytes().startswith(b"\x00\x01garbage")  # left as it was
    assert site.counters.requests == 0


def test_run_refuses_another_sqlite_database(tmp_path: Path, site: PracticeSite) -> None:
    crawl_project(tmp_path, site)
    checkpoint = tmp_path / "state" / "checkpoint.db"
    checkpoint.parent.mkdir()
    with closing(sqlite3.connect(checkpoint)) as db:
        db.execute("CREATE TABLE accounts (name TEXT)")
        db.commit()

    lines = assert_clean_failure(crawler_cli("run", "config.toml", cwd=tmp_path),3)  # 3: the checkpoint cannot be used

    assert lines == [f"crawler: {checkpoint}: not a crawler checkpoint; use --fresh to replace it"]
    with closing(sqlite3.connect(checkpoint)) as db:
        assert db.execute("SELECT name FROM sqlite_master").fetchall() == [("accounts",)]


def test_run_fresh_replaces_a_checkpoint_that_is_not_ours(tmp_path: Path, site: PracticeSite) -> None:
    crawl_project(tmp_path, site)
    checkpoint = tmp_path / "state" / "checkpoint.db"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"garbage" * 100)

    result = crawler_cli("run", "config.toml", "--fresh", cwd=tmp_path)

    assert result.code == 0, result
    assert len(output_lines(tmp_path)) == PRODUCTS


def test_run_with_a_bad_output_path_placeholder_fails_cleanly(tmp_path: Path, site: PracticeSite) -> None:
    crawl_project(tmp_path, site)
    config = tmp_path / "config.toml"
    config.write_text(config.read_text().replace("out/{spider}.{format}", "out/{name}.jsonl"))
    assert_clean_failure(crawler_cli("run", "config.toml", cwd=tmp_path), 2)


def test_list_shows_args_with_brackets_verbatim(tmp_path: Path) -> None:
    project(tmp_path, '[[spiders]]\nspider = "products"\nargs = { start_url = "http://h/?q=a.next[href]" }\n')
    result = crawler_cli("list", "config.toml", cwd=tmp_path)
    assert result.code == 0, result
    assert "a.next[href]" in result.out


def test_list_does_not_crash_on_a_closing_tag_lookalike(tmp_path: Path) -> None:
    project(tmp_path, '[[spiders]]\nspider = "products"\nargs = { start_url = "http://h/[/x]" }\n')
    result = crawler_cli("list", "config.toml", cwd=tmp_path)
    assert result.code == 0, result
    assert "Traceback" not in result.err


def test_check_shows_a_path_with_brackets_verbatim(tmp_path: Path) -> None:
    folder = tmp_path / "x[bold]"
    folder.mkdir()
    project(folder, '[[spiders]]\nspider = "products"\n')
    result = crawler_cli("check", "x[bold]/config.toml", cwd=tmp_path)
    assert result.code == 0, result
    assert result.out.strip() == "x[bold]/config.toml: OK (1 spider: products)"


def test_check_names_a_credential_variable_that_is_not_set(tmp_path: Path) -> None:
    project(
        tmp_path,
        """
        [[spiders]]
        spider = "products"
        [spiders.login]
        url = "http://127.0.0.1:9/login"
        env_fields = { username = "CRAWLER_TEST_UNSET_USER", password = "CRAWLER_TEST_UNSET_PASSWORD" }
        """,
    )
    lines = assert_clean_failure(crawler_cli("check", "config.toml", cwd=tmp_path), 2)
    assert lines == [
        "spiders[0].login.env_fields.username: environment variable CRAWLER_TEST_UNSET_USER is not set",
        "spiders[0].login.env_fields.password: environment variable CRAWLER_TEST_UNSET_PASSWORD is not set",
    ]


def test_the_shipped_config_checks_out_with_the_practice_sites_demo_account(tmp_path: Path) -> None:
    result = crawler_cli("check", str(REPO / "config.toml"), cwd=tmp_path)
    assert result.code == 0, result.err
    assert result.out.strip().endswith("OK (2 spiders: products, members)")


def test_a_failed_login_exits_1_and_says_nothing_was_lost(tmp_path: Path) -> None:
    with PracticeSite(products=10) as site:
        project(
            tmp_path,
            f"""
            [[spiders]]
            spider = "products"
            args = {{ start_url = "{site.url}/" }}
            [spiders.login]
            url = "{site.url}/login"
            csrf_field = "csrf_token"
            env_fields = {{ username = "CRAWLER_TEST_USER", password = "CRAWLER_TEST_PASSWORD" }}
            """,
        )
        env_result = subprocess.run(
            [sys.executable, "-m", "crawler.cli", "run", "config.toml"],
            cwd=tmp_path,
            env={**os.environ, "CRAWLER_TEST_USER": "demo", "CRAWLER_TEST_PASSWORD": "not-it", "COLUMNS": "200"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert env_result.returncode == 1
        assert "Traceback" not in env_result.stderr
        assert "$CRAWLER_TEST_PASSWORD" in env_result.stderr and "not-it" not in env_result.stderr
        assert "Nothing was lost" in env_result.stderr
        assert site.counters.failed_logins == 1


FAULTY_SPIDER = """
from crawler import Request, Spider


class FaultySpider(Spider):
    name = "faulty"
    start_url = ""
    fail_at_start = False

    def start_requests(self):
        yield Request(self.start_url + "/links/target/1", callback=self.parse)
        if self.fail_at_start:
            raise ValueError("no more start URLs today")
        yield Request(self.start_url + "/links/target/2", callback="no_such_method")
        yield Request(self.start_url + "/links/target/3", callback=self.parse)

    def parse(self, response):
        if response.url.endswith("/3"):
            raise KeyError("price")
        yield {"url": response.url}
"""


def faulty_project(folder: Path, site: PracticeSite, *, fail_at_start: bool) -> None:
    project(
        folder,
        f"""
        [[spiders]]
        spider = "faulty"
        args = {{ start_url = "{site.url}", fail_at_start = {str(fail_at_start).lower()} }}

        [robots]
        obey = false
        """,
    )
    (folder / "spiders" / "faulty.py").write_text(FAULTY_SPIDER, encoding="utf-8")


def test_a_start_requests_that_raises_is_one_line_naming_the_spider_and_exit_1(tmp_path: Path) -> None:
    with PracticeSite(products=10) as site:
        faulty_project(tmp_path, site, fail_at_start=True)
        result = crawler_cli("run", "config.toml", cwd=tmp_path)
    lines = assert_clean_failure(result, 1)
    # Before it: the warning that the spider's source names a callback it does not have.
    assert [line for line in lines if not line.startswith("WARNING")] == [
        "crawler: spider faulty: start_requests raised ValueError: no more start URLs today"
    ]


def test_a_missing_callback_and_a_raising_one_are_one_line_each_naming_spider_callback_and_url(tmp_path: Path) -> None:
    with PracticeSite(products=10) as site:
        faulty_project(tmp_path, site, fail_at_start=False)
        result = crawler_cli("run", "config.toml", cwd=tmp_path)
        verbose = crawler_cli("run", "config.toml", "--fresh", "-v", cwd=tmp_path)
    assert result.code == 4, result.err  # finished, but requests failed
    assert "Traceback" not in result.err
    warnings = [line for line in result.err.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 3, result.err
    # Said once before crawling, from the source; then once for the request that names it.
    assert "spiders/faulty.py:14: spider 'faulty' has no callback 'no_such_method'" in warnings[0]
    assert any(f"{site.url}/links/target/2" in line and "spider faulty has no callback 'no_such_method'" in line for line in warnings)
    assert any(f"{site.url}/links/target/3" in line and "callback faulty.parse raised KeyError: 'price'" in line for line in warnings)
    assert "Traceback" in verbose.err  # -v shows where the callback failed


def test_check_finds_callbacks_the_spider_names_but_does_not_have(tmp_path: Path) -> None:
    with PracticeSite(products=10) as site:
        faulty_project(tmp_path, site, fail_at_start=False)
        source = (tmp_path / "spiders" / "faulty.py").read_text()
        (tmp_path / "spiders" / "faulty.py").write_text(source.replace(
            "        yield {\"url\": response.url}",
            "        yield {\"url\": response.url}\n"
            "        yield response.follow(\"/next\", self.parse_itme)\n"
            "        yield from response.follow_all([\"/a\"], callback=self.parse)",
        ))
        result = crawler_cli("check", "config.toml", cwd=tmp_path)
    assert result.code == 2, result
    assert result.err.splitlines() == [
        "spiders/faulty.py:14: spider 'faulty' has no callback 'no_such_method'",
        "spiders/faulty.py:21: spider 'faulty' has no callback 'parse_itme'",
    ]


BROKEN_SETTINGS_SPIDER = """
from crawler import Request, Spider


class BrokenSettings(Spider):
    '''handle_statuses should be a collection: None makes the framework's own code fail on an error status.'''

    name = "broken"
    start_url = ""
    handle_statuses = None

    def start_requests(self):
        for path in ("/status/404", "/status/410", "/links/target/1"):
            yield Request(self.start_url + path, callback=self.parse)

    def parse(self, response):
        yield {"url": response.url}
"""


def test_requests_that_fail_on_an_internal_error_are_counted_shown_and_exit_1(tmp_path: Path) -> None:
    with PracticeSite(products=10) as site:
        project(tmp_path, f'[[spiders]]\nspider = "broken"\nargs = {{ start_url = "{site.url}" }}\n'
                          "[robots]\nobey = false\n")
        (tmp_path / "spiders" / "broken.py").write_text(BROKEN_SETTINGS_SPIDER, encoding="utf-8")
        result = crawler_cli("run", "config.toml", cwd=tmp_path)
        again = crawler_cli("run", "config.toml", cwd=tmp_path)
        status = crawler_cli("status", "config.toml", cwd=tmp_path)
    assert result.code == 1, result
    assert result.err.count("Traceback") == 1  # the first one's, for the bug report; the other one line
    assert "Failed: InternalError 2" in result.out
    assert "2 requests failed on an internal error, a bug in crawler" in result.err
    # Run again, the crawl is finished: the same story, from the checkpoint.
    assert again.code == 1 and "2 requests failed on an internal error" in again.err
    assert "1 done, 0 queued, 0 in flight, 2 failed" in status.out and "Failed: InternalError 2" in status.out


def test_the_practice_site_is_loaded_only_by_a_config_that_serves_it(tmp_path: Path) -> None:
    project(tmp_path, '[[spiders]]\nspider = "products"\nargs = { start_url = "http://127.0.0.2:1/" }\n')
    probe = (
        "import sys\nfrom crawler.commands import run_command\n"
        "code = run_command(['check', 'config.toml'])\n"
        "print(code, sorted(m for m in sys.modules if m.startswith('crawler.practice')))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.stdout.splitlines()[-1] == "0 []", done.stdout + done.stderr


def test_run_with_two_processes_says_so_and_a_bad_count_is_one_line(tmp_path: Path, site: PracticeSite) -> None:
    crawl_project(tmp_path, site)

    refused = crawler_cli("run", "config.toml", "--processes", "0", cwd=tmp_path)
    assert refused.code == 2, refused
    assert refused.err.strip() == "--processes: crawl.processes: must be greater than or equal to 1"

    done = crawler_cli("run", "config.toml", "--processes", "2", cwd=tmp_path)
    assert done.code == 0, done
    assert "Traceback" not in done.err
    assert sorted(item["id"] for item in output_lines(tmp_path)) == list(range(1, PRODUCTS + 1))
    assert "Processes: 2 worker processes fetched and parsed, 0 lost" in done.out
    assert site.counters.hits("/product/1") == 1


# -- the command line over the config (-s, -a, -o), and python -m crawler --------------------------


def test_python_dash_m_crawler_is_the_command(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "crawler", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == f"crawler {__version__}"


def test_settings_and_spider_arguments_from_the_command_line(tmp_path: Path, site: PracticeSite) -> None:
    crawl_project(tmp_path, site)
    # -a replaces the file's start_url (another, smaller site); -s takes TOML values (2 is a
    # number) and is checked like the file; -o names another file, whose suffix picks the format.
    with PracticeSite(products=30, per_page=10) as other:
        result = crawler_cli(
            "run", "config.toml", "-s", "crawl.workers=2", "-s", "politeness.concurrency=2",
            "-a", f"start_url={other.url}/", "-o", "elsewhere/{spider}.csv", cwd=tmp_path,
        )
    assert result.code == 0, result
    rows = (tmp_path / "elsewhere" / "products.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0].startswith("id,name,price")
    assert sorted(int(row.split(",", 1)[0]) for row in rows[1:]) == list(range(1, 31))
    assert "over 2 connections" in result.out, result.out


def test_dash_o_dash_writes_json_lines_to_standard_output_and_the_summary_to_standard_error(
    tmp_path: Path, site: PracticeSite
) -> None:
    crawl_project(tmp_path, site)
    result = crawler_cli("run", "config.toml", "-o", "-", cwd=tmp_path)
    assert result.code == 0, result
    items = [json.loads(line) for line in result.out.splitlines()]
    assert sorted(item["id"] for item in items) == list(range(1, PRODUCTS + 1))
    assert "Crawl summary" in result.err and not (tmp_path / "out").exists()


def test_a_bad_setting_or_argument_is_one_line_naming_it(tmp_path: Path, site: PracticeSite) -> None:
    crawl_project(tmp_path, site)
    for args, expected in (
        (("-s", "crawl.workers=0"), "the command line: crawl.workers: must be greater than or equal to 1"),
        (("-s", "crawl.wrokers=4"), "the command line: crawl.wrokers: unknown key"),
        (("-s", "workers=4"), "-s workers=4: name a key of a section, such as crawl.workers=8"),
        (("-s", "crawl.workers"), "-s crawl.workers: expected section.key=value"),
        (("-a", "no_such=1"), "spiders[0].args: unknown argument 'no_such' for spider 'products'"),
    ):
        lines = assert_clean_failure(crawler_cli("check", "config.toml", *args, cwd=tmp_path), 2)
        assert lines == [expected], lines


def test_status_as_json_and_a_stats_file_tell_the_same_story(tmp_path: Path, site: PracticeSite) -> None:
    crawl_project(tmp_path, site)
    run = crawler_cli("run", "config.toml", "--stats-file", "stats/run.json", cwd=tmp_path)
    assert run.code == 0, run
    stats = json.loads((tmp_path / "stats" / "run.json").read_text())
    status = crawler_cli("status", "config.toml", "--json", cwd=tmp_path)
    assert status.code == 0, status
    document = json.loads(status.out)

    assert stats["schema"] == document["schema"] == 1
    assert stats["exit_code"] == 0 and stats["interrupted"] is False
    assert stats["this_run"] == stats["whole_crawl"] == stats["spiders"][0]["counts"]
    assert stats["whole_crawl"]["done"] == PAGES and stats["whole_crawl"]["items"] == PRODUCTS
    assert stats["stats"]["pages"] == PAGES
    (spider,) = document["spiders"]
    assert spider["spider"] == "products" and spider["finished"] is True
    assert spider["counts"] == stats["whole_crawl"]
    assert document["running"] is None and document["checkpoint"].endswith("checkpoint.db")


PICKY_SPIDER = """
from crawler import Request, Spider
from pydantic import BaseModel, Field


class Even(BaseModel):
    id: int = Field(multiple_of=2)


class PickySpider(Spider):
    name = "picky"
    item_model = Even
    start_url = ""

    def start_requests(self):
        for number in range(1, 7):
            yield Request(f"{self.start_url}/product/{number}")

    def parse(self, response):
        yield {"id": response.url.rsplit("/", 1)[1]}
"""


def test_rejected_items_are_listed_with_their_page_error_and_data(tmp_path: Path, site: PracticeSite) -> None:
    project(tmp_path, f"""
        [[spiders]]
        spider = "picky"
        args = {{ start_url = "{site.url}" }}

        [checkpoint]
        path = "state/checkpoint.db"
        """)
    (tmp_path / "spiders" / "picky.py").write_text(PICKY_SPIDER, encoding="utf-8")
    assert crawler_cli("run", "config.toml", cwd=tmp_path).code == 0

    listed = crawler_cli("rejected", "config.toml", cwd=tmp_path)
    assert listed.code == 0, listed
    assert listed.out.splitlines()[0] == "picky: 3 rejected items"
    assert f"{site.url}/product/3" in listed.out and "multiple of 2" in listed.out and '{"id":"3"}' in listed.out
    as_json = [json.loads(line) for line in crawler_cli("rejected", "config.toml", "--json", cwd=tmp_path).out.splitlines()]
    assert sorted(item["data"]["id"] for item in as_json) == ["1", "3", "5"]
    assert all(item["spider"] == "picky" and "id:" in item["error"] for item in as_json)


def test_off_a_terminal_progress_is_a_line_every_few_seconds_with_an_estimate(tmp_path: Path) -> None:
    with PracticeSite(products=60, per_page=10, latency=0.05) as slow:
        crawl_project(tmp_path, slow)
        result = crawler_cli(
            "run", "config.toml", "-s", "crawl.workers=2", "-s", "politeness.concurrency=2", "--progress-every", "0.3",
            cwd=tmp_path,
        )
    assert result.code == 0, result
    progress = [line for line in result.err.splitlines() if line.startswith("products  done ")]
    assert len(progress) >= 3, result.err
    assert "pages/s" in progress[-1] and any("left (estimate)" in line for line in progress), progress


def test_the_summary_shows_an_output_path_whole_where_the_output_is_80_columns(tmp_path: Path, site: PracticeSite) -> None:
    deep = tmp_path / "a-folder-with-a-long-name" / "and-another-one-below-it"
    deep.mkdir(parents=True)
    crawl_project(deep, site)
    done = subprocess.run(
        [sys.executable, "-m", "crawler.cli", "run", "config.toml"], cwd=deep, capture_output=True, text=True,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "80"}, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    path = str(deep / "out" / "products.jsonl")
    assert len(path) > 60 and any(path in line for line in done.stdout.splitlines()), done.stdout


def test_a_failed_login_still_shows_what_every_spider_did(tmp_path: Path) -> None:
    shipped_project(tmp_path)
    small = ("-s", "practice_site.products=30")
    done = crawler_cli("run", "config.toml", *small, "--spider", "products", cwd=tmp_path)
    assert done.code == 0, done

    stats = tmp_path / "stats.json"
    failed = crawler_cli(
        "run", "config.toml", *small, "--stats-file", str(stats), cwd=tmp_path,
        environ={"PRACTICE_PASSWORD": "not-the-password"},
    )
    lines = assert_clean_failure(failed, 1)
    assert lines[-2].startswith("crawler: login at ") and "$PRACTICE_PASSWORD" in lines[-2]
    table = [[cell.strip() for cell in line.split("│")[1:-1]] for line in failed.out.splitlines() if line.startswith("│ ")]
    rows = {row[0]: row for row in table}
    # spider, done, failed, refused, items: the spider that finished before is still shown.
    assert rows["products"][4] == "30" and rows["products"][2] == "0", failed.out
    assert "members" in rows
    document = json.loads(stats.read_text())
    assert document["exit_code"] == 1
    assert {spider["spider"] for spider in document["spiders"]} == {"products", "members"}


# -- one page at a time: fetch and parse ------------------------------------------------------------


def shipped_project(folder: Path) -> None:
    """The repository's own config.toml and example spiders (it serves the practice site)."""
    (folder / "spiders").mkdir()
    for source in (REPO / "spiders").glob("*.py"):
        (folder / "spiders" / source.name).write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
    (folder / "config.toml").write_text((REPO / "config.toml").read_text(encoding="utf-8"), encoding="utf-8")


def test_fetch_prints_a_pages_body_or_its_headers_without_a_config(tmp_path: Path, site: PracticeSite) -> None:
    body = crawler_cli("fetch", f"{site.url}/product/5", cwd=tmp_path)
    assert body.code == 0, body
    assert 'data-id="5"' in body.out and body.out.lstrip().startswith("<!DOCTYPE html>")
    headers = crawler_cli("fetch", f"{site.url}/product/5", "--headers", cwd=tmp_path)
    assert headers.out.splitlines()[0] == f"200 {site.url}/product/5"
    assert "Content-Type: text/html; charset=utf-8" in headers.out.splitlines()
    assert site.counters.hits("/robots.txt") >= 1  # asked first, as a crawl asks


def test_parse_runs_a_callback_on_a_page_behind_the_configs_login(tmp_path: Path) -> None:
    shipped_project(tmp_path)
    result = crawler_cli(
        "parse", "{practice_site}/members/page/1", "config.toml", "--spider", "members", "--callback", "parse_member_page",
        cwd=tmp_path,
    )
    assert result.code == 0, result
    lines = result.out.splitlines()
    assert lines[0].startswith("members.parse_member_page on http://127.0.0.1:") and lines[0].endswith("(HTTP 200):")
    assert lines[1] == "items: 1" and '"secret": "member-secret-1"' in lines[2]  # logged in: the secret shows
    assert "rejected items: 0" in lines and any(line.startswith("requests: ") for line in lines)


def test_parse_of_a_page_robots_txt_disallows_is_one_line_and_exit_1(tmp_path: Path, site: PracticeSite) -> None:
    crawl_project(tmp_path, site)
    site.robots.body = "User-agent: *\nDisallow: /product/\n"
    result = crawler_cli("parse", f"{site.url}/product/2", "config.toml", "--callback", "parse_product", cwd=tmp_path)
    lines = assert_clean_failure(result, 1)
    assert lines == [f"crawler: robots.txt disallows {site.url}/product/2 (-s robots.obey=false fetches it anyway)"]


def test_shell_gives_the_response_and_fetch_to_a_console(tmp_path: Path, site: PracticeSite) -> None:
    lines = "\n".join([
        "print('status', response.status)",
        "print('name', response.css('h1.name::text').get())",
        f"fetch('{site.url}/product/9')",
        "print('then', response.url)",
    ])
    done = subprocess.run(
        [sys.executable, "-m", "crawler.cli", "shell", f"{site.url}/product/4"], cwd=tmp_path, input=lines + "\n",
        capture_output=True, text=True, timeout=120, env={**os.environ, "NO_COLOR": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert "status 200" in done.stdout and f"name {product(4)['name']}" in done.stdout
    assert f"then {site.url}/product/9" in done.stdout
