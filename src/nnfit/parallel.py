"""Where work runs: in this process, or on a Dask cluster.

Every entry point that can spread work takes ``scheduler``: ``None`` runs locally, a string is
the address of a running ``dask.distributed`` scheduler (``"tcp://host:8786"``), and a
``dask.distributed.Client`` is used as it is. Only small arrays (weights, accumulators, cell
blocks) should cross the network.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")


@contextlib.contextmanager
def client_for(scheduler: Any) -> Iterator[Any]:
    """Yield a ``dask.distributed.Client`` for ``scheduler``, or ``None`` to run locally.

    A client created here from an address is closed on exit; a client passed in is left open.
    """
    if scheduler is None:
        yield None
        return
    from dask.distributed import Client

    if isinstance(scheduler, Client):
        yield scheduler
        return
    if not isinstance(scheduler, str):
        raise ValueError(
            "scheduler must be None (run here), a scheduler address such as "
            f"'tcp://127.0.0.1:8786', or a dask.distributed.Client; got {type(scheduler).__name__}"
        )
    try:
        client = Client(scheduler)
    except (OSError, ValueError, TypeError) as exc:  # a bad address, or nothing listening
        raise ValueError(
            f"scheduler {scheduler!r} (CLI --scheduler): could not reach a Dask scheduler there "
            f"({exc}); give its address, e.g. tcp://127.0.0.1:8786, or leave it out to run here"
        ) from exc
    try:
        yield client
    finally:
        client.close()


def map_blocks(
    func: Callable[..., R],
    blocks: Sequence[T],
    *,
    scheduler: Any = None,
    broadcast: Iterable[Any] = (),
    on_result: Callable[[int, R], None] | None = None,
    threads: int = 1,
) -> list[R]:
    """Apply ``func(block, *broadcast)`` to every block, locally or on a cluster.

    Results come back in block order; ``on_result(i, result)`` is called as each one arrives
    (in completion order on a cluster, in block order here) so callers can write results or
    advance a progress bar. ``broadcast`` arguments are scattered once to the workers rather
    than sent with each task. ``threads > 1`` runs local blocks that many at a time in threads,
    each with one BLAS thread (``func`` must then be thread-safe and release the GIL in its
    heavy parts, as NumPy's matrix products do); a cluster ignores it.
    """
    extra = list(broadcast)
    results: list[Any] = [None] * len(blocks)
    with client_for(scheduler) as client:
        if client is None:
            if threads > 1 and len(blocks) > 1:
                return _map_threads(func, blocks, extra, on_result, threads)
            for i, block in enumerate(blocks):
                results[i] = func(block, *extra)
                if on_result is not None:
                    on_result(i, results[i])
            return results
        from dask.distributed import as_completed

        # hash=False: scattering equal content twice under one key loses it between calls.
        scattered = [client.scatter(a, broadcast=True, hash=False) for a in extra]
        futures = [client.submit(func, block, *scattered, pure=False) for block in blocks]
        index = {f.key: i for i, f in enumerate(futures)}
        for fut in as_completed(futures):
            i = index[fut.key]
            results[i] = fut.result()
            if on_result is not None:
                on_result(i, results[i])
        return results


def _map_threads(
    func: Callable[..., R],
    blocks: Sequence[T],
    extra: list[Any],
    on_result: Callable[[int, R], None] | None,
    threads: int,
) -> list[R]:
    """``map_blocks`` here with ``threads`` blocks in flight; results delivered in block order.

    BLAS is held to one thread meanwhile, so the cores run blocks rather than splitting each
    product (a BLAS split over small products spins more than it computes); the products'
    arithmetic does not depend on their thread count.
    """
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    results: list[Any] = [None] * len(blocks)
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(threads) as pool:
        pending = {
            i: pool.submit(func, blocks[i], *extra) for i in range(min(threads, len(blocks)))
        }
        for i in range(len(blocks)):
            results[i] = pending.pop(i).result()
            if i + threads < len(blocks):
                pending[i + threads] = pool.submit(func, blocks[i + threads], *extra)
            if on_result is not None:
                on_result(i, results[i])
    return results


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity where the platform tells it)."""
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def die_with_parent() -> None:
    """Ask the kernel to kill this (worker) process when its parent dies, even by SIGKILL.

    For process-pool initializers: a killed command must not leave workers computing for no
    one. Linux only (``prctl(PR_SET_PDEATHSIG)``); elsewhere nothing happens.
    """
    import ctypes
    import ctypes.util
    import os
    import signal
    import sys

    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the request took effect
        os._exit(1)
