"""Figures measured on the real daemon process (`python -m kvgroomd run`).

* start-up: process spawn -> READY=1 on our NOTIFY_SOCKET (and the log's
  daemon.started / daemon.ready stamps, to split interpreter+imports from work);
* memory: VmRSS / VmHWM after READY, against a daemon on an empty directory;
* idle: utime+stime and on-CPU ns (schedstat) over a quiet window, plus the
  context switches of all its threads (a poller would show them);
* latency: the emulator's rename of a new snapshot -> the superseded file's
  unlink, seen by an inotify watch of our own (IN_DELETE of the held name)
  and by the daemon's own `snapshot.unlinked` time stamp.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from bench.common import (
    IN_DELETE,
    IN_MOVED_FROM,
    Daemon,
    Inotify,
    children_cpu,
    cpu_seconds,
    iso_to_epoch,
    median,
    pct,
    proc_status,
)
from kvgroomd.format.header import Reason
from kvgroomd.testing.engine import Engine, conversation, system_prompt

QUARANTINE_PREFIX = ".kvgroomd-unlinking."


def start_once(cache_dir: Path, workdir: Path, *, timeout: float, keep: bool = False,
               **config: Any) -> tuple[dict[str, Any], Daemon | None]:  # fmt: skip
    """Start a daemon, wait for READY=1; the figures and (if `keep`) the daemon."""
    d = Daemon(cache_dir, workdir, **config)
    out: dict[str, Any] = {}
    try:
        out["ready_s"] = d.wait_ready(timeout)
        out["cpu_s"] = cpu_seconds(d.pid)[1]  # on-CPU time up to READY, all threads
        out["child_cpu_s"] = children_cpu(d.pid)  # a start-up reader process, reaped
    except (TimeoutError, OSError):
        out["ready_s"] = None
        out["timeout_s"] = timeout
        d.stop()
        return out, None
    ready = d.first("daemon.ready", timeout=30)
    started = d.first("daemon.started", timeout=5)
    out["imports_s"] = iso_to_epoch(started["timestamp"]) - d.wall_spawn
    out["work_s"] = iso_to_epoch(ready["timestamp"]) - iso_to_epoch(started["timestamp"])
    out["snapshots"] = ready.get("snapshots")
    done = d.events("reconcile.done")
    out["reconcile"] = done[0] if done else None
    out["unlinked"] = len(d.events("snapshot.unlinked"))
    time.sleep(0.5)  # let the observer settle before reading memory
    st = proc_status(d.pid)
    out["rss"] = st["VmRSS"]
    out["hwm"] = st["VmHWM"]
    out["threads"] = st["threads"]
    if keep:
        return out, d
    d.stop()
    return out, None


def idle_window(d: Daemon, seconds: float, during: Any = None) -> dict[str, Any]:
    """CPU and wake-ups of an idle daemon over `seconds`; `during()` (work of
    the bench process elsewhere, never in the daemon's directory) runs meanwhile."""
    t0 = time.monotonic()
    ticks0, ns0 = cpu_seconds(d.pid)
    st0 = proc_status(d.pid)
    extra = during() if during is not None else None
    left = seconds - (time.monotonic() - t0)
    if left > 0:
        time.sleep(left)
    ticks1, ns1 = cpu_seconds(d.pid)
    st1 = proc_status(d.pid)
    return {
        "window_s": time.monotonic() - t0,
        "cpu_ticks_s": ticks1 - ticks0,
        "cpu_sched_s": ns1 - ns0,
        "wakeups": (st1["ctxt_voluntary"] - st0["ctxt_voluntary"])
        + (st1["ctxt_involuntary"] - st0["ctxt_involuntary"]),
        "log_lines": len(d.records),
        "during": extra,
    }


class TimedEngine(Engine):
    """The emulator, noting the instant each store's rename() returned."""

    t_rename_ns = 0
    wall_rename = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The store record is written right after rename() returns; keep no journal.
        self.files.journal_file = self._journal_file  # type: ignore[method-assign]
        self.files.journal = lambda *_a, **_k: None  # type: ignore[method-assign]

    def _journal_file(self, op: str, path: Path, header: Any, st: Any = None,
                      **fields: Any) -> None:  # fmt: skip
        if op == "store":
            self.t_rename_ns = time.perf_counter_ns()
            self.wall_rename = time.time()


def latency(cache_dir: Path, workdir: Path, *, trials: int, warmup: int = 10,
            seed: int = 0, system_seed: int = 0, o_tokens: int = 10240, n_tokens: int = 20480,
            timeout: float = 120.0) -> dict[str, Any]:  # fmt: skip
    """Rename of a `continued` N whose text extends an indexed `continued` O
    -> O's unlink. The texts share the populated directory's system prompt,
    so every indexed snapshot shares their first ~370 bytes."""
    start, d = start_once(cache_dir, workdir, timeout=timeout, keep=True)
    if d is None:
        return {"ready_s": None, "trials": 0}
    engine = TimedEngine(cache_dir, sparse=True)
    watch = Inotify(cache_dir, IN_MOVED_FROM | IN_DELETE)
    # A rendered chat after the populated directory's system prompt.
    system = system_prompt(system_seed, 64)
    lead = b"".join(system)
    body = conversation(seed, n_tokens, system=system).text()[len(lead):]
    o_len = len(body) * o_tokens // n_tokens
    gone_ms: list[float] = []
    name_ms: list[float] = []
    log_ms: list[float] = []
    misses = 0
    try:
        for t in range(warmup + trials):
            prefix = lead + f" latency trial {seed}-{t}:".encode()  # unique per trial
            o_path = engine.store(prefix + body[:o_len], o_tokens, Reason.CONTINUED)
            d.first("snapshot.added", timeout=30, path=str(o_path))
            watch.drain()
            engine.store(prefix + body, n_tokens, Reason.CONTINUED)
            t0 = engine.t_rename_ns
            wall0 = engine.wall_rename
            held = QUARANTINE_PREFIX + o_path.name
            t_name = t_gone = None
            deadline = time.monotonic() + 10
            while t_gone is None and time.monotonic() < deadline:
                for mask, _cookie, name, t_ev in watch.read(1.0):
                    if mask & IN_MOVED_FROM and name == o_path.name:
                        t_name = t_ev
                    elif mask & IN_DELETE and name in (held, o_path.name):
                        t_gone = t_ev
                        t_name = t_name or t_ev
            rec = d.first("snapshot.unlinked", timeout=30, path=str(o_path))
            if t < warmup:
                continue
            if t_gone is None:
                misses += 1
                continue
            gone_ms.append((t_gone - t0) / 1e6)
            name_ms.append(((t_name or t_gone) - t0) / 1e6)
            log_ms.append((iso_to_epoch(rec["timestamp"]) - wall0) * 1e3)
        st = proc_status(d.pid)
    finally:
        watch.close()
        d.stop()
    return {
        "ready_s": start["ready_s"],
        "snapshots": start["snapshots"],
        "o_text_kib": (len(lead) + o_len) / 1024,  # O's text; N's text is
        "n_text_kib": (len(lead) + len(body)) / 1024,  # the one hashed per landing
        "trials": len(gone_ms),
        "misses": misses,
        "p50_ms": median(gone_ms),
        "p90_ms": pct(gone_ms, 90),
        "p99_ms": pct(gone_ms, 99),
        "max_ms": max(gone_ms) if gone_ms else float("nan"),
        "name_gone_p50_ms": median(name_ms),
        "log_p50_ms": median(log_ms),
        "log_p99_ms": pct(log_ms, 99),
        "rss": st["VmRSS"],
        "text_bytes": (len(prefix) + o_len, len(prefix) + len(body)),
    }
