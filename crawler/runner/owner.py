"""Which owner of a shared checkpoint this process is: the machine's name and a slot on it.

On a server shared by many processes (``backend = "redis"``), a lease names its owner, and a
process that starts again under its old name takes its old leases back at once instead of
waiting out their lease time. So a name must be the same for a process started again in the
place of one that died, and never the same for two processes alive at once. A slot is a lock
file beside the checkpoint's local state: the first one no live process holds is this
process's (the operating system lets go of a dead process's locks at once), and its number
is the name's last part. The name also carries a digest of the state's folder, so projects in
two folders of one machine never share a name.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

# More slots than anyone runs processes of one crawl on one machine; a guard, not a limit.
_MOST_SLOTS = 1024


def machine_name(machine: str | None = None) -> str:
    """What this machine is called among a crawl's processes: ``machine`` (the config's
    ``checkpoint.machine``), or its host name."""
    return machine or socket.gethostname()


@contextlib.contextmanager
def machine_slot(state_folder: Path, machine: str | None = None) -> Iterator[str]:
    """This process's owner name, held until the block ends; ``machine`` stands for the host
    name."""
    state_folder.mkdir(parents=True, exist_ok=True)
    place = hashlib.blake2b(str(state_folder.resolve()).encode(), digest_size=4).hexdigest()
    for slot in range(_MOST_SLOTS):
        descriptor = os.open(state_folder / f"owner-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            continue
        try:
            yield f"{machine_name(machine)}:{place}:{slot}"
        finally:
            os.close(descriptor)  # and with it the lock
        return
    raise RuntimeError(f"{_MOST_SLOTS} processes of this crawl already run from {state_folder}")
