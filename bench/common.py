"""Shared helpers for the benchmarks: directories, the daemon as a process,
an inotify watch of our own, /proc readings, percentiles.

Nothing here asserts anything: the benchmarks print figures.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import shutil
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from kvgroomd.testing.daemon import DaemonProcess, write_config
from kvgroomd.testing.engine import populate

CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- directories ----------------------------------------------------------------


def populated(root: Path, name: str, n: int, seed: int) -> tuple[Path, float]:
    """`root/name` filled with `n` sparse snapshots by the engine emulator's
    `populate()`; returns the directory and the seconds it took."""
    d = root / name
    if d.exists():
        shutil.rmtree(d)
    t = time.perf_counter()
    populate(d, n, seed=seed)
    return d, time.perf_counter() - t


def top_up(directory: Path, n: int, seed: int) -> int:
    """Add unrelated single snapshots (no prefix chains) until `directory`
    holds `n` snapshots again; returns how many were added."""
    missing = n - count_kv(directory)
    if missing > 0:
        populate(directory, missing, seed=seed, chain_fraction=0.0)
    return max(missing, 0)


def count_kv(directory: Path) -> int:
    """Files named like snapshots in `directory`."""
    return sum(1 for e in os.scandir(directory) if e.name.endswith(".kv"))


# -- statistics ---------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """The q-th percentile (0..100), nearest rank; nan for no values."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * (len(s) - 1))))
    return s[k]


def median(values: list[float]) -> float:
    return pct(values, 50)


# -- /proc ----------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (bytes) and context switches of `pid`, summed over threads."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as fp:
        for line in fp:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    vol = invol = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError), open(f"/proc/{pid}/task/{task}/status") as fp:
            for line in fp:
                if line.startswith("voluntary_ctxt_switches"):
                    vol += int(line.split()[1])
                elif line.startswith("nonvoluntary_ctxt_switches"):
                    invol += int(line.split()[1])
    out["ctxt_voluntary"] = vol
    out["ctxt_involuntary"] = invol
    out["threads"] = len(os.listdir(f"/proc/{pid}/task"))
    return out


def children_cpu(pid: int) -> float:
    """cutime+cstime of PID (its reaped children, e.g. a start-up reader), in s."""
    with open(f"/proc/{pid}/stat") as fp:
        fields = fp.read().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / CLK_TCK


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(utime+stime from /proc/PID/stat, in s; on-CPU time summed over the
    threads' schedstat, in s: nanosecond resolution)."""
    with open(f"/proc/{pid}/stat") as fp:
        fields = fp.read().rsplit(")", 1)[1].split()
    ticks = (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime
    ns = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        path = f"/proc/{pid}/task/{task}/schedstat"
        with contextlib.suppress(FileNotFoundError), open(path) as fp:
            ns += int(fp.read().split()[0])
    return ticks, ns / 1e9


def load_average() -> str:
    with open("/proc/loadavg") as fp:
        return " ".join(fp.read().split()[:3])


def machine() -> str:
    model = "?"
    with open("/proc/cpuinfo") as fp:
        for line in fp:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with open("/proc/meminfo") as fp:
        mem = int(fp.readline().split()[1]) // 1024
    return f"{os.cpu_count()} CPU {model}, {mem / 1024:.0f} GiB RAM, Linux {os.uname().release}"


# -- our own inotify watch (to see the daemon's deletions from outside) --------

IN_MOVED_FROM = 0x40
IN_MOVED_TO = 0x80
IN_DELETE = 0x200
_EVENT = struct.Struct("iIII")


class Inotify:
    """A raw inotify watch on one directory, read from the calling thread."""

    def __init__(self, directory: Path, mask: int) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self._libc.inotify_init1(os.O_CLOEXEC | os.O_NONBLOCK)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(directory), mask)
        if wd < 0:
            raise OSError(ctypes.get_errno(), "inotify_add_watch")
        self._poll = select.poll()
        self._poll.register(self.fd, select.POLLIN)

    def read(self, timeout: float) -> list[tuple[int, int, str, int]]:
        """Events available within `timeout` s: (mask, cookie, name, perf_counter_ns)."""
        if not self._poll.poll(timeout * 1000):
            return []
        t = time.perf_counter_ns()
        try:
            buf = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        out = []
        pos = 0
        while pos < len(buf):
            _wd, mask, cookie, size = _EVENT.unpack_from(buf, pos)
            name = buf[pos + 16 : pos + 16 + size].rstrip(b"\0").decode()
            out.append((mask, cookie, name, t))
            pos += 16 + size
        return out

    def drain(self) -> None:
        while self.read(0):
            pass

    def close(self) -> None:
        os.close(self.fd)


# -- the daemon as a process ----------------------------------------------------


class Daemon(DaemonProcess):
    """`python -m kvgroomd run` on a directory (kvgroomd.testing.daemon, as the
    tests run it), with a config written into `workdir` and READY=1 read off
    our own NOTIFY_SOCKET."""

    def __init__(self, cache_dir: Path, workdir: Path, *, env: dict[str, str] | None = None,
                 **config: Any) -> None:  # fmt: skip
        config.setdefault("log", {"format": "json", "level": "info"})
        fd, path = tempfile.mkstemp(prefix="kvgroomd-", suffix=".yaml", dir=workdir)
        os.close(fd)
        super().__init__(write_config(Path(path), cache_dir=cache_dir, **config), env,
                         notify_dir=workdir)  # fmt: skip

    def first(self, event: str, timeout: float = 30.0, **match: Any) -> dict[str, Any]:
        """The first log record of `event` matching `match` (waits for it)."""
        return self.wait_for(event, timeout, **match)[0]

    def stop(self, timeout: float = 30.0) -> int:
        code = super().stop(timeout)
        self.config_path.unlink(missing_ok=True)
        return code


@contextlib.contextmanager
def daemon(cache_dir: Path, workdir: Path, **config: Any) -> Iterator[Daemon]:
    d = Daemon(cache_dir, workdir, **config)
    try:
        yield d
    finally:
        d.stop()


def iso_to_epoch(ts: str) -> float:
    """The daemon's ISO-8601 UTC timestamp as Unix seconds."""
    from datetime import datetime  # noqa: PLC0415

    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
