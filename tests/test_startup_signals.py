"""Ctrl-C or SIGTERM at any moment of ``crawler run``, start-up included: one line, exit 130,
and the same command then finishes the crawl with every item once.

"Any moment" starts when the command's own code runs: before that, the interpreter is still
starting and a signal does what the system says. The tests find that moment from outside, in
the kernel's record of which signals the process catches (``SigCgt`` in /proc), and then send
the signal at a spread of delays that falls into loading the libraries, reading the config,
opening the checkpoint, serving the practice site and starting the crawl.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import wait_until

EXIT_OK, EXIT_INTERRUPTED = 0, 130
PRODUCTS = 40
DELAYS = (0.0, 0.01, 0.03, 0.06, 0.1, 0.15, 0.25, 0.4)  # seconds after the handler is in place

CONFIG = f"""
[[spiders]]
spider = "products"
args = {{ start_url = "{{practice_site}}/" }}

[practice_site]
serve = true
products = {PRODUCTS}

[checkpoint]
path = ".crawler/checkpoint.db"
"""


def catches_sigterm(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return True  # gone: nothing more to wait for
    caught = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    repo = Path(__file__).resolve().parent.parent
    (tmp_path / "config.toml").write_text(CONFIG)
    (tmp_path / "spiders").symlink_to(repo / "spiders")
    return tmp_path


# The installed command, as users run it (beside this interpreter, where pip put it).
CRAWLER = str(Path(sys.executable).with_name("crawler"))


def start(project: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [CRAWLER, "run", "config.toml"],
        cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
    )


def products(project: Path) -> list[int]:
    path = project / "output" / "products.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [json.loads(line)["id"] for line in lines]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_at_any_moment_of_start_up_is_one_line_and_exit_130(project: Path, signum: int) -> None:
    stopped_at: list[str] = []
    for delay in DELAYS:
        run = start(project)
        try:
            wait_until(lambda: catches_sigterm(run.pid), timeout=30)
            time.sleep(delay)
            run.send_signal(signum)
            out, err = run.communicate(timeout=60)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
        if run.returncode == EXIT_OK:
            continue  # it finished before the signal came: nothing to stop
        lines = [line for line in err.splitlines() if line.strip()]
        assert run.returncode == EXIT_INTERRUPTED, f"after {delay}s: exit {run.returncode}\n{err}"
        assert "Traceback" not in err, f"after {delay}s:\n{err}"
        # The stop itself is one line; a crawl stopped after it began may first say it resumes.
        stopping = [line for line in lines if not line.startswith("products: resuming")]
        assert len(stopping) <= 2 and stopping[-1].startswith("Stopped"), f"after {delay}s:\n{err}"
        stopped_at.append(f"{delay}s")
    assert stopped_at, "every run finished before its signal: the delays no longer reach into start-up"

    final = start(project)
    out, err = final.communicate(timeout=120)
    assert final.returncode == EXIT_OK, err
    ids = products(project)
    assert sorted(ids) == list(range(1, PRODUCTS + 1)), "an item was lost or written twice"


def test_the_entry_point_loads_nothing_heavy_before_its_handler() -> None:
    # What the console script imports first must be quick, or a SIGTERM in the meantime kills
    # the process with no message.
    probe = "import sys, crawler.cli; print(sorted(m for m in ('requests', 'pydantic', 'rich', 'lxml') if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, env={**os.environ})
    assert done.stdout.strip() == "[]", done.stdout + done.stderr
