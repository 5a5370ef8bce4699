"""A checkpoint the user may not write: one line naming the file and what to do, exit 3, and
nothing changed, so the same command continues once the permissions are fixed.

File modes bind everyone but root, so when the suite runs as root the crawl runs without the
capabilities that let root pass them (with util-linux's ``setpriv``).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from crawler.practice import PracticeSite

EXIT_OK, EXIT_STORAGE = 0, 3

SPIDER = """
from crawler import Request, Spider


class Pages(Spider):
    name = "pages"
    start_url = ""

    def start_requests(self):
        yield Request(self.start_url, callback=self.parse)

    def parse(self, response):
        yield {"url": response.url}
        for link in response.css("a.catalogue, li.next a, a.product-link"):
            yield response.follow(link, self.parse)
"""


# Root without these obeys file modes like anyone else.
BOUND_BY_FILE_MODES = ["setpriv", "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


def crawl(folder: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "crawler.cli", "run", "config.toml"]
    if os.geteuid() == 0:
        command = BOUND_BY_FILE_MODES + command
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, encoding="utf-8", timeout=120)


def digest(folder: Path) -> dict[str, str]:
    """The crawl's state files (not the lock file, which only names the last process to open it)."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.iterdir())
        if path.is_file() and path.suffix != ".lock"
    }


@pytest.mark.parametrize("read_only", ["checkpoint", "folder", "lock"])
def test_a_checkpoint_that_cannot_be_written_is_one_line_exit_3_and_loses_nothing(tmp_path: Path, read_only: str) -> None:
    project = tmp_path
    with PracticeSite(products=30) as site:
        (project / "spiders").mkdir()
        (project / "spiders" / "pages.py").write_text(SPIDER)
        (project / "config.toml").write_text(
            f'[[spiders]]\nspider = "pages"\nargs = {{ start_url = "{site.url}/" }}\nmax_pages = 10\n'
            '[checkpoint]\npath = "state/checkpoint.db"\n'
        )
        first = crawl(project)
        assert first.returncode == EXIT_OK, first.stderr
        state = project / "state"
        target = {"checkpoint": state / "checkpoint.db", "folder": state, "lock": state / "checkpoint.db.lock"}[read_only]
        mode = target.stat().st_mode
        target.chmod(0o555 if target.is_dir() else 0o400)
        before, served = digest(state), site.counters.requests
        # A cap raised: there is more to crawl, so the run must write the checkpoint.
        config = project / "config.toml"
        config.write_text(config.read_text().replace("max_pages = 10", "max_pages = 20"))
        refused = crawl(project)
        target.chmod(mode)

        assert refused.returncode == EXIT_STORAGE, refused.stderr
        [line] = refused.stderr.splitlines()
        assert line.startswith(f"crawler: {state / 'checkpoint.db'}: cannot open the checkpoint: ")
        assert "must be writable by you" in line
        assert digest(state) == before
        assert site.counters.requests == served  # refused before anything was fetched

        resumed = crawl(project)
        assert resumed.returncode == EXIT_OK, resumed.stderr
        assert "pages: resuming: 10 done" in resumed.stderr
