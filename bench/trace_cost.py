"""What recording the activity trace costs the daemon's event path (#13).

In-process, on the daemon's own code: `DiskGroomer.landed` for engine hits
(a header rewritten in place) and for new stores (a `continued` snapshot
extending one on disk), over a directory of `--files` snapshots, with the
trace on and off (alternating, many trials, medians); and the recorder alone
(`Recorder.note`) per note, its buffered writes included. `--gone` files are
removed first (the engine evicts them), so the recorder checks each store
against that many removed files (daemon/tracegone.py: its window is 1,024).

    .venv/bin/python bench/trace_cost.py [--files 1000] [--trials 2000] [--gone 1024]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from kvgroomd.config import Config, TraceSettings
from kvgroomd.core.groomer import Note
from kvgroomd.daemon.groom import DiskGroomer
from kvgroomd.daemon.trace import open_trace
from kvgroomd.format.header import Reason
from kvgroomd.testing.engine import Engine, conversation, populate


class NullLog:
    """A logger that drops everything (the figures are about the work, not JSON)."""

    def __getattr__(self, _name: str) -> Any:
        return lambda *a, **kw: None


def _groomer(cache: Path, trace: Path | None) -> DiskGroomer:
    settings = TraceSettings(trace, max_size=1 << 30) if trace else None
    config = Config(cache_dir=cache, trace=settings, dry_run=True)  # both see every file
    recorder = open_trace(config, NullLog())
    g = DiskGroomer(config, NullLog(), trace=recorder)
    g.reconcile(time.time(), startup=True)
    return g


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--trials", type=int, default=2000)
    ap.add_argument("--gone", type=int, default=1024)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        cache = base / "kv"
        populate(cache, args.files + args.gone, seed=1)
        engine = Engine(cache, budget_bytes=None)
        on = _groomer(cache, base / "state" / "t.jsonl")
        off = _groomer(cache, None)
        everything = sorted(p.name for p in cache.iterdir())
        for name in everything[args.files :]:  # the engine evicts them
            engine.files.delete(name, "evict", time.time())
            for g in (on, off):
                g.gone(name)
        names = everything[:200]
        hits: dict[str, list[float]] = {"off": [], "on": []}
        for i in range(args.trials):
            name = names[i % len(names)]
            engine.touch(name)
            for label, g in (("off", off), ("on", on)) if i % 2 else (("on", on), ("off", off)):
                t = time.perf_counter()
                g.landed(name, time.time())
                hits[label].append(time.perf_counter() - t)
        stores: dict[str, list[float]] = {"off": [], "on": []}
        for i in range(min(args.trials // 10, 200)):
            conv = conversation(10_000 + i, 21000)
            for k in (10240, 20480):
                path = engine.store(conv.text(k), k, Reason.CONTINUED)
                for label, g in (("off", off), ("on", on)) if i % 2 else (("on", on), ("off", off)):
                    t = time.perf_counter()
                    g.landed(path.name, time.time())
                    stores[label].append(time.perf_counter() - t)
        assert on.trace is not None
        notes = [Note("snapshot.updated", "debug", {"name": n, "hits": 7, "last_used": 1,
                                                    "size": 4096}) for n in names]  # fmt: skip
        t = time.perf_counter()
        for i in range(100_000):
            on.trace.note(notes[i % len(notes)])
        on.trace.flush()
        per_note = (time.perf_counter() - t) / 100_000
        on.trace.close()
        size = sum(p.stat().st_size for p in (base / "state").glob("t.jsonl*"))
    print(f"{args.files} snapshots on disk ({args.gone} removed before), {args.trials} hits, "
          f"{len(stores['on'])} stores")
    print("| event | trace off (median) | trace on (median) | difference |")
    print("|---|---|---|---|")
    for label, xs in (("engine hit -> landed()", hits), ("new continued -> landed()", stores)):
        a, b = statistics.median(xs["off"]) * 1e6, statistics.median(xs["on"]) * 1e6
        print(f"| {label} | {a:.1f} us | {b:.1f} us | {b - a:+.1f} us ({(b - a) / a:+.0%}) |")
    print(f"| Recorder.note alone (U record, buffered, writes included) | | "
          f"{per_note * 1e6:.2f} us | |")
    print(f"trace bytes written: {size:,} ({size / (100_000 + args.trials):.0f} B per record)")


if __name__ == "__main__":
    main()
