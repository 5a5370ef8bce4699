"""``crawler new`` and ``crawler genspider``, run as a user runs them: a project made from
nothing crawls at once, its own test passes, and a spider added to it checks out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "crawler", *args], cwd=cwd, capture_output=True, text=True, timeout=180,
        env={**os.environ, "NO_COLOR": "1"},
    )


def test_a_new_project_crawls_the_practice_site_and_its_test_passes(tmp_path: Path) -> None:
    made = cli("new", "demo", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    project = tmp_path / "demo"
    assert "cd demo && crawler run config.toml" in made.stdout

    run = cli("run", "config.toml", "-s", "practice_site.products=60", cwd=project)
    assert run.returncode == 0, run.stderr
    lines = (project / "output" / "products.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["id"] for line in lines) == list(range(1, 61))

    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"], cwd=project, capture_output=True, text=True,
        timeout=180,
    )
    assert tests.returncode == 0 and "1 passed" in tests.stdout, tests.stdout + tests.stderr


def test_new_refuses_a_folder_that_holds_something(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    refused = cli("new", "taken", cwd=tmp_path)
    assert refused.returncode == 1 and refused.stderr.strip().endswith("into a new or empty folder"), refused.stderr
    assert (tmp_path / "taken" / "notes.txt").read_text() == "mine"


def test_genspider_adds_a_spider_the_config_names_and_check_accepts(tmp_path: Path) -> None:
    assert cli("new", "demo", cwd=tmp_path).returncode == 0
    project = tmp_path / "demo"
    added = cli("genspider", "books", "https://books.example/", cwd=project)
    assert added.returncode == 0, added.stderr
    checked = cli("check", "config.toml", cwd=project)
    assert checked.returncode == 0 and "2 spiders: products, books" in checked.stdout, checked.stderr
    again = cli("genspider", "books", "https://books.example/", cwd=project)
    assert again.returncode == 1 and "exists already" in again.stderr
    bad = cli("genspider", "Books-2", "https://books.example/", cwd=project)
    assert bad.returncode == 1 and "a spider's name is lowercase" in bad.stderr


def test_the_projects_example_spider_is_the_repositorys() -> None:
    # The template ships in the package (an installed crawler has no repository beside it).
    shipped = REPO / "crawler" / "scaffold" / "project" / "spiders" / "products.py"
    assert shipped.read_text() == (REPO / "spiders" / "products.py").read_text()
