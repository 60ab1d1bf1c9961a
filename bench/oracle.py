"""How far the default policy is from one that knows the future (#10).

An instrument, not a policy. It replays a generated workload in the
simulator with everything kvgroomd does as it is (the limit and the room
kept for the engine's next store, supersession, files left to the engine)
but ranks the files by the future: tokens per byte, over the seconds until
the next request that would load the file (the longest file on disk that is
a prefix of a prompt not continuing the live session); a file no later
request would load is worth 0. What it serves above the default is what a
better ranking could still win; where it too falls below the engine alone,
the loss is the room's, not the ranking's.

    .venv/bin/python bench/oracle.py [--workload chat-traffic] [--budget 1600MiB]
        [--seeds 1-10] [--parallel 2]

Figures only, nothing judged (~2 s a seed for chat traffic).
"""

from __future__ import annotations

import argparse
import bisect
import statistics
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from kvgroomd.config.units import parse_size
from kvgroomd.core import scoring
from kvgroomd.core.index import Columns
from kvgroomd.sim import replay as sim_replay
from kvgroomd.sim.generate import load_source
from kvgroomd.sim.report import parse_seeds
from kvgroomd.sim.texts import SegText
from kvgroomd.sim.workload import Request, requests


@dataclass
class _Future:
    """The workload's requests, and the groomer of the run being replayed."""

    groomer: Any = None
    at: list[float] = field(default_factory=list)
    prompts: list[SegText] = field(default_factory=list)
    # The request looks the disk up: it does not continue the live session.
    lookups: list[bool] = field(default_factory=list)


_FUTURE = _Future()


class _Watched(sim_replay.SimGroomer):
    """The simulator's groomer, made known to the oracle's scorer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _FUTURE.groomer = self


def _oracle(cols: Columns, clock: scoring.Clock, _params: Mapping[str, float]) -> scoring.Values:
    """Tokens per byte per second until the next request that would load each file."""
    core = _FUTURE.groomer.core
    names = core.index.names
    assert len(names) == len(cols), "scored rows are the index's rows"
    texts = [_FUTURE.groomer.disk.texts.get(n) for n in names]
    first = bisect.bisect_right(_FUTURE.at, clock.now)
    nxt: list[float | None] = [None] * len(names)
    for i in range(first, len(_FUTURE.prompts)):
        if not _FUTURE.lookups[i]:
            continue
        best = None
        for j, t in enumerate(texts):
            if t is not None and _FUTURE.prompts[i].startswith(t) and (
                    best is None or t.tokens > texts[best].tokens):  # type: ignore[union-attr]
                best = j
        if best is not None and nxt[best] is None:
            nxt[best] = _FUTURE.at[i]
    out = np.zeros(len(names))
    for j, t_next in enumerate(nxt):
        if t_next is not None:
            per_byte = cols["tokens"][j] / max(int(cols["size"][j]), 1)
            out[j] = per_byte / max(t_next - clock.now, 0.01)
    return out


def _foresee(reqs: list[Request]) -> None:
    _FUTURE.at = [r.at + sim_replay.SIM_EPOCH for r in reqs]
    _FUTURE.prompts = [SegText(r.prompt, r.tokens) for r in reqs]
    _FUTURE.lookups = [i == 0 or r.session != reqs[i - 1].session for i, r in enumerate(reqs)]


def run(job: tuple[str, int, int | None]) -> tuple[int, int, int, int, int]:
    """Tokens from disk: engine alone, unbounded, the default, the oracle."""
    source, seed, budget = job
    sim_replay.SimGroomer = _Watched  # type: ignore[misc]
    scoring.register("oracle", {}, "knows every future prompt")(_oracle)
    w = load_source(source, seed, None, budget)
    reqs = requests(w)
    _foresee(reqs)
    alone = sim_replay.replay(w, None, reqs).tokens_saved
    unbounded = sim_replay.replay(w, None, reqs, unbounded=True).tokens_saved
    default = sim_replay.replay(w, sim_replay.DEFAULT, reqs).tokens_saved
    oracle = sim_replay.replay(w, replace(sim_replay.DEFAULT, policy="oracle"), reqs).tokens_saved
    return seed, alone, unbounded, default, oracle


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--workload", default="chat-traffic", help="a generated workload")
    p.add_argument("--budget", default=None, help="engine budget (default: the workload's)")
    p.add_argument("--seeds", default="1-10")
    p.add_argument("--parallel", type=int, default=2)
    args = p.parse_args()
    budget = None if args.budget is None else parse_size(args.budget)
    jobs = [(args.workload, s, budget) for s in parse_seeds(args.seeds)]
    with ProcessPoolExecutor(args.parallel) as pool:
        rows = list(pool.map(run, jobs))
    print(f"{args.workload}, engine budget {args.budget or 'its own'}: tokens from disk")
    print(f"{'seed':>4} {'engine alone':>13} {'unbounded':>12} {'default':>16} {'oracle':>16}")
    ratios: dict[str, list[float]] = {"default": [], "oracle": []}
    for seed, alone, unbounded, default, oracle in rows:
        cells = []
        for label, n in (("default", default), ("oracle", oracle)):
            r = n / alone if alone else float("nan")
            ratios[label].append(r)
            cells.append(f"{n:>9,} {r:5.2f}x")
        print(f"{seed:>4} {alone:>13,} {unbounded:>12,} {cells[0]:>16} {cells[1]:>16}")
    for label, rs in ratios.items():
        print(f"{label}: {statistics.fmean(rs):.2f}x the engine alone on average, "
              f"worst seed {min(rs):.2f}x, below it on {sum(r < 1 for r in rs)} of {len(rs)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
