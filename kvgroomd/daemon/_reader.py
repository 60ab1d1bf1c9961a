"""A second process that reads part of a large start-up: the daemon's other core.

Shell. A start-up over 100,000 files is four syscalls a file plus the Python
around them, on one core; the daemon is sized for two. `Beside` starts this
module as a new program (fork and exec: nothing of the daemon's threads or
state is copied into it) with the pinned directory's descriptor passed on, so
it reads the very directory the daemon pinned, never a path. It reads the
names it is given (pickled on stdin with the daemon's `Reading`), parses
them into index rows with `read.read_many` and writes the pickled `Loaded`
to stdout. It decides, logs and deletes nothing. Whoever cannot start it,
or whose helper fails, reads the names itself (`Beside.result()` is None).

    python -m kvgroomd.daemon._reader DIR_FD
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from kvgroomd.core.facts import Loaded
from kvgroomd.core.index import NAME
from kvgroomd.daemon._threads import HANDLED, worker
from kvgroomd.daemon.pinned import PinnedDir
from kvgroomd.daemon.read import DETECTING, read_many
from kvgroomd.format.layouts import Reading

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])  # where `kvgroomd` is importable from
TICK_S = 0.1  # how long a wait for the helper goes without a tick


class Beside:
    """`read_many` of `names` in a helper process while the caller reads others."""

    def __init__(self, directory: PinnedDir, names: npt.NDArray[np.bytes_],
                 reading: Reading = DETECTING) -> None:  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self._writer: threading.Thread | None = None
        fd = directory.fd
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (_PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")) if p)}  # fmt: skip
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "kvgroomd.daemon._reader", str(fd)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                pass_fds=(fd,), env=env, close_fds=True,
            )  # fmt: skip
        except OSError:
            return
        data = pickle.dumps((np.ascontiguousarray(names, dtype=NAME), reading),
                            pickle.HIGHEST_PROTOCOL)  # fmt: skip
        # Written by a thread: the pipe holds 64 KiB, and the helper reads its
        # names only once its imports are done; the caller reads meanwhile.
        self._writer = worker(self._send, name="kvgroomd-reader-feed", args=(data,))
        self._writer.start()

    def _send(self, data: bytes) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        with contextlib.suppress(OSError):  # the helper died: result() says so
            self.proc.stdin.write(data)
        with contextlib.suppress(OSError):
            self.proc.stdin.close()

    def __bool__(self) -> bool:
        return self.proc is not None

    def result(self, tick: Callable[[], None] = lambda: None) -> Loaded | None:
        """The helper's `Loaded`, once it is done (None if it failed). Waits
        in short slices, calling `tick` between them (systemd's watchdog is
        fed, and a stop request may raise out of here: `cancel` then)."""
        proc = self.proc
        if proc is None or proc.stdout is None:
            return None
        fd = proc.stdout.fileno()
        data = bytearray()  # one growing buffer: no list of chunks joined at the end
        while True:
            tick()
            ready, _, _ = select.select([fd], [], [], TICK_S)
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                data += chunk
        self.proc = None
        proc.stdout.close()
        status = proc.wait()
        if self._writer is not None:
            self._writer.join()
        if status != 0 or not data:
            return None
        loaded: Loaded = pickle.loads(data)
        return loaded

    def cancel(self) -> None:
        """Stop the helper (if still running) and reap it."""
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()
        if self._writer is not None:
            self._writer.join()


def main(argv: list[str]) -> int:
    """Read the names on stdin in the directory `argv[0]` (an inherited fd)."""
    # Started by a daemon whose threads block its signals (_threads.py): the
    # mask is inherited, and a SIGTERM from systemd must still end this helper.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HANDLED)
    directory = PinnedDir.adopt(int(argv[0]))
    names, reading = pickle.loads(sys.stdin.buffer.read())
    loaded = read_many(directory, names, reading=reading)
    sys.stdout.buffer.write(pickle.dumps(loaded, pickle.HIGHEST_PROTOCOL))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
