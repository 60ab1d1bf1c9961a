"""Shared helpers for the benchmarks: directories, the daemon as a process,
an inotify watch of our own, /proc readings, percentiles.

Nothing here asserts anything: the benchmarks print figures.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

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


class Daemon:
    """`python -m kvgroomd run` on a directory, READY=1 via our own NOTIFY_SOCKET,
    its JSON log parsed by a reader thread."""

    def __init__(self, cache_dir: Path, workdir: Path, *, env: dict[str, str] | None = None,
                 **config: Any) -> None:  # fmt: skip
        config.setdefault("log", {"format": "json", "level": "info"})
        config["cache_dir"] = str(cache_dir)
        fd, path = tempfile.mkstemp(prefix="kvgroomd-", suffix=".yaml", dir=workdir)
        os.close(fd)
        self.config_path = Path(path)
        self.config_path.write_text(yaml.safe_dump(config))
        self.sock_path = tempfile.mktemp(prefix="notify-", dir=workdir)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.sock_path)
        self.records: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "NOTIFY_SOCKET": self.sock_path,
                    **(env or {})}  # fmt: skip
        self.t_spawn = time.monotonic()
        self.wall_spawn = time.time()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kvgroomd", "run", "--config", str(self.config_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env, text=True,
        )  # fmt: skip
        self.pid = self.proc.pid
        self.stderr = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._err = threading.Thread(target=self._read_err, daemon=True)
        self._err.start()
        # Read the notify socket for the daemon's whole life: a daemon whose
        # STATUS= datagrams are not read blocks in sendto() once the socket's
        # queue is full (main's notify.py has no send timeout).
        self.ready_at: float | None = None
        self._stopped = False
        self._ready = threading.Event()
        self._notify = threading.Thread(target=self._read_notify, daemon=True)
        self._notify.start()

    def _read_notify(self) -> None:
        self.sock.settimeout(0.5)
        while not self._stopped:
            try:
                msg = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            except OSError:
                return
            if "READY=1" in msg.split("\n") and self.ready_at is None:
                self.ready_at = time.monotonic()
                self._ready.set()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                rec = {"event": "<not json>", "line": line}
            rec["_seen"] = time.monotonic()
            with self._cond:
                self.records.append(rec)
                self._cond.notify_all()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def wait_ready(self, timeout: float) -> float:
        """Seconds from spawn to READY=1 on the notify socket."""
        if not self._ready.wait(timeout) or self.ready_at is None:
            raise TimeoutError(f"no READY=1 within {timeout} s; exit={self.proc.poll()}")
        return self.ready_at - self.t_spawn

    def wait_for(self, event: str, timeout: float = 30.0, **match: Any) -> dict[str, Any]:
        """The first log record of `event` matching `match` (waits for it)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            start = 0
            while True:
                for rec in self.records[start:]:
                    if rec.get("event") == event and all(rec.get(k) == v for k, v in match.items()):
                        return rec
                start = len(self.records)
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise TimeoutError(f"no {event} {match}; exit={self.proc.poll()} "
                                       f"stderr={self.stderr[-1000:]}")  # fmt: skip
                self._cond.wait(min(left, 0.5))

    def events(self, event: str) -> list[dict[str, Any]]:
        with self._cond:
            return [r for r in self.records if r.get("event") == event]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._reader.join(5)
        self._stopped = True
        self._notify.join(2)
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.sock_path)
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
