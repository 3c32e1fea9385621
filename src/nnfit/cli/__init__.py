"""The ``nnfit`` command line: one group per capability plus ``demo``.

Each capability's group lives in its own module here (``calcium``, ``spectral``, ``ptycho``)
with a ``register(subparsers)`` function, so this file only wires groups together. This
package is the only place that prints; nothing else in nnfit imports it.
"""

from __future__ import annotations

import _thread
import argparse
import errno
import importlib
import logging
import os
import re
import select
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from nnfit import __version__
from nnfit.io.hdf5 import ALLOW_EXTERNAL_ENV

# Command-group modules, in the order --help lists them.
_GROUPS = (
    "nnfit.cli.calcium",
    "nnfit.cli.spectral",
    "nnfit.cli.ptycho",
)

_EPILOG = """\
examples:
  nnfit demo --out demo-output             run every capability on built-in data
  nnfit calcium deconvolve rec.npy --fs 30 --tau-rise 0.05 --tau-decay 0.5 --lam 0.5 --out res/
  nnfit spectral simulate --out cube.h5    make a small synthetic spectral cube
  nnfit ptycho make --source big.npz --output fixture.npz

The groups 'cube' and 'fixture' are the older names of 'spectral' and 'ptycho'.
Run 'nnfit GROUP --help' or 'nnfit GROUP COMMAND --help' for details.
"""


def build_parser() -> argparse.ArgumentParser:
    """Return the full argument parser (used by ``main`` and by the tests)."""
    parser = argparse.ArgumentParser(
        prog="nnfit",
        description="Non-negative fitting of scientific signals.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"nnfit {__version__}")
    sub = parser.add_subparsers(dest="group", metavar="GROUP")
    sub.required = True

    demo = sub.add_parser(
        "demo",
        help="run each capability on built-in synthetic data",
        description="Simulate data for each capability, run the main job on it and write "
        "results and figures under --out.",
    )
    demo.add_argument("--out", default="demo-output", help="output folder (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    demo.set_defaults(func=_run_demo)

    for name in _GROUPS:
        importlib.import_module(name).register(sub)
    return parser


def _run_demo(args: argparse.Namespace) -> int:
    from nnfit.cli.demo import run_all

    return run_all(args.out, seed=args.seed)


def _show_library_log() -> None:
    """Library code logs (``logging.getLogger("nnfit....")``); the command line shows its
    warnings, and commands that report progress lower the level of their own loggers."""
    log = logging.getLogger("nnfit")
    if not any(getattr(h, "_nnfit_cli", False) for h in log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._nnfit_cli = True  # type: ignore[attr-defined]
        log.addHandler(handler)
    log.setLevel(logging.WARNING)


def _terminate_as_exit() -> Callable[[], None]:
    """Turn SIGTERM into ``SystemExit(143)`` so cleanup code (temporary files, worker pools,
    locks) runs as it does for Ctrl-C; return a function that restores the old handler."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    old = signal.signal(signal.SIGTERM, handler)
    return lambda: signal.signal(signal.SIGTERM, old)


def _redeliver(signum: int) -> None:
    """Interrupt the main thread with ``signum`` again, a moment later, from another thread.

    Delivered from inside the unraisable hook, the interrupt would be raised in the hook itself
    (at its next step) and swallowed once more; from a timer it lands in the main program.
    """
    timer = threading.Timer(0.01, _thread.interrupt_main, args=(signum,))
    timer.daemon = True
    timer.start()


def _unraisable(unraisable: Any) -> None:
    """Exceptions raised where Python cannot propagate them (``__del__``, weakref callbacks).

    Ctrl-C (or SIGTERM, turned into ``SystemExit``) that lands in one of them would be
    swallowed and the command would run on: the signal is delivered again (:func:`_redeliver`),
    so it interrupts the main program at its next step. h5py reports a failed flush of an HDF5
    handle being garbage-collected (a full disk) as an "Exception ignored" traceback; the same
    failure reaches the user as one line from the write that raised it, so these are not
    printed.
    """
    try:
        exc = unraisable.exc_value
        if isinstance(exc, KeyboardInterrupt):
            _redeliver(signal.SIGINT)
        elif isinstance(exc, SystemExit) and exc.code == 128 + signal.SIGTERM:
            _redeliver(signal.SIGTERM)
        elif not (isinstance(exc, OSError) and "h5py" in repr(unraisable.object)):
            sys.__unraisablehook__(unraisable)
    except KeyboardInterrupt:
        _redeliver(signal.SIGINT)  # a second Ctrl-C while this hook ran


_DISK_FULL = re.compile(r"No space left on device|errno = 28|\d+ requested and \d+ written")


def describe_error(exc: BaseException) -> str:
    """One line for the user: a full disk said as such (numpy and HDF5 word it their own way)."""
    text = " ".join(str(exc).split())
    full = isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if full or _DISK_FULL.search(text):
        where = getattr(exc, "filename", None)
        return (
            f"disk full{f' writing {where}' if where else ''}: free some space or write "
            f"elsewhere; outputs are written in full or not at all ({text})"
        )
    return text


def _raised_by_h5py(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is h5py's."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and "h5py" in tb.tb_frame.f_code.co_filename


def _stdout_gone() -> bool:
    """Whether standard output is a pipe whose reader has closed it."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return True
    except (OSError, ValueError):
        return False
    try:
        poll = select.poll()
        poll.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poll.poll(0))
    except (OSError, ValueError, AttributeError):  # no fileno, or no poll on this platform
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nnfit`` console script; returns the exit status."""
    try:
        parser = build_parser()
    except KeyboardInterrupt:
        print("nnfit: interrupted", file=sys.stderr)
        return 130
    args = parser.parse_args(argv)
    _show_library_log()
    saved = os.environ.get(ALLOW_EXTERNAL_ENV)
    if getattr(args, "allow_external", False):
        os.environ[ALLOW_EXTERNAL_ENV] = "1"  # an environment variable reaches worker processes
    restore = _terminate_as_exit()
    sys.unraisablehook = _unraisable
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("nnfit: interrupted", file=sys.stderr)
        return 130
    except KeyError as exc:
        # h5py reports a missing or unreadable object inside a file as KeyError("Unable to
        # ..."); any other KeyError is a bug and keeps its traceback.
        if "Unable to" not in str(exc):
            raise
        print(f"nnfit: error: in the input HDF5 file: {describe_error(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError as exc:
        if not _stdout_gone():
            print(f"nnfit: error: {describe_error(exc)}", file=sys.stderr)
            return 2
        # the reader of the output went away (``nnfit ... | head``): nothing is wrong, and
        # the output still buffered goes nowhere instead of failing again at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + getattr(signal, "SIGPIPE", 13)  # what a shell reports for SIGPIPE
    except (ValueError, OSError) as exc:
        # Bad input is the user's to fix: say what, without a traceback.
        print(f"nnfit: error: {describe_error(exc)}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        # h5py reports damaged metadata inside a file (a checksum that fails, a B-tree it
        # cannot walk) as RuntimeError; any other RuntimeError is a bug and keeps its traceback.
        if not _raised_by_h5py(exc):
            raise
        where = getattr(args, "store", None) or getattr(args, "input", None)
        print(
            f"nnfit: error: {f'{where}: ' if where else ''}damaged HDF5 file "
            f"({describe_error(exc)}); restore it from a copy or re-create it",
            file=sys.stderr,
        )
        return 2
    finally:
        restore()
        if saved is None:
            os.environ.pop(ALLOW_EXTERNAL_ENV, None)
        else:
            os.environ[ALLOW_EXTERNAL_ENV] = saved


if __name__ == "__main__":
    raise SystemExit(main())
