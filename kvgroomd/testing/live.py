"""The engine emulator as its own process, replaying a simulator workload live.

`python -m kvgroomd.testing.live --dir DIR --workload interleaved --seed 3`
runs the workload's requests through the engine model (`kvgroomd.sim.server`
over `kvgroomd.sim.engine`, exactly what `kvgroomd simulate` runs) on a real
directory (`kvgroomd.testing.dirstore`: temp files, rename, touches, its own
eviction), at the workload's pace on the wall clock: the request that the
simulator serves at model time t is served at `start + t * time_scale`
(wall seconds). File headers carry those times, as the engine's `time(NULL)`.
A daemon watching DIR meanwhile acts on real files, as beside ds4-server.

Prints one JSON object: prompt tokens served from disk and in total, hits,
lookups, the share served, how late the emulator ran behind its schedule.
Payloads are sparse holes: a run writes GiBs of apparent size, little disk.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from kvgroomd.sim.engine import EngineModel
from kvgroomd.sim.generate import load_source
from kvgroomd.sim.replay import drive
from kvgroomd.sim.server import Server
from kvgroomd.sim.texts import EMPTY, SegText
from kvgroomd.sim.workload import requests
from kvgroomd.testing.dirstore import DirStore


class Schedule:
    """Model time -> wall time; sleeps until each action is due."""

    def __init__(self, start: float, scale: float) -> None:
        self.start = start
        self.scale = scale
        self.late = 0.0  # the most the emulator ran behind, seconds

    def wall(self, t: float) -> float:
        """The wall time of model time `t` (the engine's `now` then)."""
        return self.start + t * self.scale

    def __call__(self, t: float) -> float:
        due = self.wall(t)
        left = due - time.time()
        if left > 0:
            time.sleep(left)
        else:
            self.late = max(self.late, -left)
        return due


def main(argv: Sequence[str] | None = None) -> int:
    """Replay a simulator workload on a real directory at its pace."""
    p = argparse.ArgumentParser(prog="python -m kvgroomd.testing.live", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--dir", required=True, type=Path, help="the cache directory")
    p.add_argument("--workload", required=True, help="a workload YAML or a generator kind")
    p.add_argument("--seed", type=int, default=None, help="seed of a generated workload")
    p.add_argument("--pace", default=None, help="pace of a generated workload")
    p.add_argument("--budget", type=int, default=None, help="engine budget, bytes")
    p.add_argument("--unbounded", action="store_true", help="no engine budget at all")
    p.add_argument("--journal", type=Path, default=None, help="append JSON lines here")
    p.add_argument("--engine-log", type=Path, default=None,
                   help="write the engine's own log lines (spec section 5) here")  # fmt: skip
    p.add_argument("--start-at", type=float, default=None,
                   help="wall time of model time 0 (default: a whole second soon)")  # fmt: skip
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="wall seconds per model second (e.g. 0.25: four times faster)")  # fmt: skip
    args = p.parse_args(argv)
    w = load_source(args.workload, args.seed, args.pace, args.budget)
    reqs = requests(w)
    files = DirStore(args.dir, journal=args.journal)
    files.keep_records = False
    log_fp = open(args.engine_log, "a", encoding="utf-8") if args.engine_log else None  # noqa: SIM115
    try:
        model = EngineModel(files, w.engine, budget=None if args.unbounded else w.engine.budget,
                            directory=str(args.dir))
        if log_fp is not None:
            model.log = lambda line: print(line, file=log_fp)
        start = args.start_at if args.start_at is not None else math.ceil(time.time()) + 1
        schedule = Schedule(start, args.time_scale)
        server: Server[SegText] = Server(model, EMPTY, wait=schedule)
        t0 = time.monotonic()
        drive(server, reqs, w.restarts, budgets=not args.unbounded)
        wall = time.monotonic() - t0
    finally:
        if log_fp is not None:
            log_fp.close()
    out = {
        "workload": w.name, "requests": len(reqs), "budget": model.budget,
        "tokens_saved": server.saved, "tokens_prefilled": server.prefilled,
        "tokens_prompt": server.prompt_tokens, "hits": server.hits, "lookups": server.lookups,
        "share": 1 - server.prefilled / server.prompt_tokens if server.prompt_tokens else 0.0,
        "start": start, "wall_s": round(wall, 2), "late_s": round(schedule.late, 3),
        "stats": dict(server.stats),
    }  # fmt: skip
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
