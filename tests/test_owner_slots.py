"""Owner names on a shared checkpoint (``crawler.runner.owner``): the same for a process started
again in the place of one that ended, never the same for two alive at once."""

from __future__ import annotations

import multiprocessing
import socket
from pathlib import Path

from crawler.runner.owner import machine_slot


def _hold_a_slot(folder: str, ready, done) -> None:
    with machine_slot(Path(folder)) as name:
        ready.put(name)
        done.wait(30)


def test_two_live_processes_get_two_names_and_a_freed_slot_is_taken_again(tmp_path) -> None:
    context = multiprocessing.get_context("spawn")
    ready, done = context.Queue(), context.Event()
    other = context.Process(target=_hold_a_slot, args=(str(tmp_path), ready, done))
    other.start()
    try:
        theirs = ready.get(timeout=30)
        with machine_slot(tmp_path) as ours:
            assert ours != theirs
            assert {theirs.rsplit(":", 1)[1], ours.rsplit(":", 1)[1]} == {"0", "1"}
    finally:
        done.set()
        other.join(30)
    with machine_slot(tmp_path) as again:  # both gone: the first slot is free again
        assert again == theirs
    assert again.startswith(socket.gethostname() + ":")


def test_a_machine_name_stands_for_the_host_name_and_folders_never_share_a_name(tmp_path) -> None:
    with machine_slot(tmp_path / "a", "box-7") as first, machine_slot(tmp_path / "b", "box-7") as second:
        assert first.startswith("box-7:") and second.startswith("box-7:")
        assert first != second
    assert (tmp_path / "a" / "owner-0.lock").stat().st_mode & 0o777 == 0o600
