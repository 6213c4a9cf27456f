"""Exit codes of every command, and stopping cleanly on Ctrl-C or SIGTERM.

One convention for ``derain-ros`` and ``derain-train`` (README, "Exit codes"):

- ``0`` (:data:`EXIT_OK`): done;
- ``1`` (:data:`EXIT_FAILURE`): the work failed (a :class:`~derain_ros.errors.DerainError`,
  printed as one line, no traceback);
- ``2`` (:data:`EXIT_USAGE`): a usage error (bad arguments, an input that cannot be used
  as given, e.g. a bag without frames for ``replay``);
- ``130`` (:data:`EXIT_INTERRUPTED`): interrupted by Ctrl-C (SIGINT); ``143`` for SIGTERM
  (128 + the signal number, as shells report it).

On interruption a command stops without a traceback; what it was writing is either
removed (bags appear only when complete, see :class:`derain_ros.bag.BagWriter`) or
marked (a report folder gets ``INCOMPLETE.txt``), and child processes are stopped (the
demo's node). :func:`sigterm_as_interrupt` makes SIGTERM take the same path as Ctrl-C, so
``finally`` blocks run.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from types import FrameType

__all__ = ["EPILOG", "EXIT_FAILURE", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "Terminated",
           "interrupted", "sigterm_as_interrupt", "version_text"]

#: The convention in one line, at the end of every --help.
EPILOG = "exit codes: 0 ok, 1 failure, 2 usage error, 130 interrupted (Ctrl-C; 143 SIGTERM)"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C's :class:`KeyboardInterrupt` (``signum`` = 15)."""

    signum = int(signal.SIGTERM)


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (a KeyboardInterrupt)."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted(prog: str, err: KeyboardInterrupt) -> int:
    """Say that ``prog`` was interrupted (one line on stderr); the exit code to return."""
    signum = getattr(err, "signum", int(signal.SIGINT))
    name = "SIGTERM" if signum == signal.SIGTERM else "Ctrl-C"
    print(f"\n{prog}: interrupted ({name}); incomplete outputs were removed or marked "
          f"INCOMPLETE", file=sys.stderr, flush=True)
    return 128 + int(signum)


def version_text(prog: str) -> str:
    """``PROG VERSION`` for ``--version`` (the installed distribution's version)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        number = version("derain_ros")
    except PackageNotFoundError:
        number = "unknown (not installed)"
    return f"{prog} {number}"
