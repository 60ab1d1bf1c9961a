"""Worker threads that never take the daemon's signals.

The kernel hands a signal sent to the process (systemd's SIGTERM, a SIGHUP
reload) to any thread that does not block it. CPython runs Python signal
handlers in the main thread only, and a main thread asleep in the loop's
queue read wakes early only when the signal lands on it: taken by a worker
thread instead, the handler waited for the loop's next timer, up to the
reconcile interval (5 minutes; seen once in CI as a SIGTERM answered 300 s
late). So every thread of the daemon process blocks the signals the main
thread handles, and the kernel must deliver them to the main thread. That
includes threads that libraries start (numpy's BLAS starts its own when
numpy is imported): `__main__` imports numpy inside `handled_blocked()`,
and threads inherit the mask of the thread that starts them.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

HANDLED = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})


def worker(target: Callable[..., object], *, name: str,
           args: tuple[Any, ...] = ()) -> threading.Thread:  # fmt: skip
    """A daemon thread running `target(*args)` with the handled signals blocked."""

    def run(*a: Any) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
        target(*a)

    return threading.Thread(target=run, args=args, name=name, daemon=True)


@contextlib.contextmanager
def handled_blocked() -> Iterator[None]:
    """Block the handled signals in this thread meanwhile: threads started
    inside keep them blocked. One that arrives meanwhile is delivered after."""
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
