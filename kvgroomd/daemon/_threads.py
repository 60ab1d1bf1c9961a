"""The daemon's signals, taken by one thread that waits for them.

The loop sleeps in a blocking queue read. A Python signal handler cannot
wake it reliably: CPython runs handlers in the main thread only, between
bytecodes, so a signal the kernel delivers to another thread, or to the main
thread just before it starts to wait, is handled only when the wait ends,
at the loop's next timer (up to the 5-minute reconcile: seen in CI as a
SIGTERM answered 300 s late). So SIGTERM, SIGINT and SIGHUP are blocked in
every thread, and one thread takes them with sigwait() and puts the wake-up
in the queue like any other event. Threads inherit the mask of the thread
that starts them: `__main__` imports numpy (whose BLAS starts threads) with
the signals blocked, and `worker` blocks them in threads started later.
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


class SignalWaiter:
    """Blocks the handled signals in the calling thread and takes them in a
    thread of its own, calling `on_signal(signum)` there."""

    def __init__(self, on_signal: Callable[[int], None]) -> None:
        self._on_signal = on_signal
        self._closed = False
        self._old = signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED)
        self._thread = worker(self._run, name="kvgroomd-signals")
        self._thread.start()

    def _run(self) -> None:
        while True:
            signum = signal.sigwait(HANDLED)
            if self._closed:
                return
            self._on_signal(signum)

    def close(self) -> None:
        """Stop taking signals; the calling thread's mask is as it was before."""
        self._closed = True
        if self._thread.ident is not None and self._thread.is_alive():
            # Blocked in that thread: its sigwait() takes it, and it ends.
            signal.pthread_kill(self._thread.ident, signal.SIGHUP)
            self._thread.join(1.0)
        signal.pthread_sigmask(signal.SIG_SETMASK, self._old)
