"""Process state as the kernel sees it (Linux ``/proc``), for tests of workers and signals."""

from __future__ import annotations


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process: present and not a zombie.

    Asked of the kernel rather than of ``multiprocessing.Process.is_alive``: a pool's own thread
    reaps its workers too, and a ``Process`` whose exit another thread collected can go on
    calling itself alive.
    """
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
