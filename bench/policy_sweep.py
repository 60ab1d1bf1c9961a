"""Every workload the default policy is judged on, in one table (#10).

A policy change that wins one workload often loses another; this runs them
all, in the simulator (the daemon's decision core, the engine model), and
prints per group the default config plus `engine_budget` against the engine
alone: tokens served from disk (mean ratio, worst seed, seeds below) and the
share of the alone-to-unbounded gap closed (mean, worst).

* `chat-traffic` (`kvgroomd.testing.traffic`'s chats) at 1,600, 3,200 and
  6,400 MiB;
* `interleaved` agents at 4 and 16 GiB;
* every adversarial generator at its own budget;
* every scenario of `scenarios/` at 0.75x, 0.9x, 1x and 1.3x its budget
  (scenarios below the engine alone are listed).

    .venv/bin/python bench/policy_sweep.py [--seeds 1-10] [--parallel 2]
        [--only chat-traffic] [--scales 0.75,0.9,1,1.3] [--json out.json]

Figures only, nothing judged; ~80 s for 10 seeds on 2 cores. docs/policy.md
quotes its figures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from kvgroomd.sim.generate import ADVERSARIAL, load_source
from kvgroomd.sim.replay import DEFAULT, replay
from kvgroomd.sim.report import RunReport, gap_closed, parse_seeds
from kvgroomd.sim.workload import requests

MiB = 1 << 20
GiB = 1 << 30
ROOT = Path(__file__).resolve().parents[1]
CHAT_BUDGETS = (1600 * MiB, 3200 * MiB, 6400 * MiB)
INTERLEAVED_BUDGETS = (4 * GiB, 16 * GiB)

Job = tuple[str, str, int | None, float | None]  # group, source, seed, budget or scale


def jobs(seeds: tuple[int, ...], scales: tuple[float, ...], only: str | None) -> list[Job]:
    """Every (group, workload, seed, budget-or-scale) to replay."""
    out: list[Job] = []
    out += [(f"chat-traffic {b // MiB} MiB", "chat-traffic", s, b)
            for b in CHAT_BUDGETS for s in seeds]  # fmt: skip
    out += [(f"interleaved {b // GiB} GiB", "interleaved", s, b)
            for b in INTERLEAVED_BUDGETS for s in seeds]  # fmt: skip
    out += [(kind, kind, s, None) for kind in ADVERSARIAL if kind != "chat-traffic"
            for s in seeds]  # fmt: skip
    scenarios = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "scenarios").glob("*.yaml"))
    out += [(f"scenarios x{f:g}", path, None, f) for f in scales for path in scenarios]
    return [j for j in out if only is None or only in j[0] or only in j[1]]


def run(job: Job) -> tuple[Job, RunReport, RunReport, RunReport]:
    """Engine alone, unbounded and the default on one workload."""
    _, source, seed, budget = job
    if seed is None:  # a scenario at a scale of its own budget
        own = load_source(source, None, None, None).engine.budget
        w = load_source(source, None, None, int(own * (budget or 1.0)))
    else:
        w = load_source(source, seed, None, None if budget is None else int(budget))
    reqs = requests(w)
    return (job, replay(w, None, reqs), replay(w, None, reqs, unbounded=True),
            replay(w, DEFAULT, reqs))  # fmt: skip


def summary(rows: list[tuple[Job, RunReport, RunReport, RunReport]]) -> dict[str, Any]:
    """Ratios to the engine alone (tokens from disk) and gaps closed, per group."""
    ratios, gaps, below, names = [], [], [], []
    for (_, source, seed, _), alone, unbounded, mine in rows:
        a, m = alone.tokens_saved, mine.tokens_saved
        below.append(m < a)
        if a:  # the engine alone served nothing from disk: no ratio
            ratios.append(m / a)
            names.append(source if seed is None else f"s{seed}")
        g = gap_closed(mine, alone, unbounded)
        if g is not None:
            gaps.append(g)
    worst = min(range(len(ratios)), key=ratios.__getitem__) if ratios else None
    return {
        "ratio_mean": statistics.fmean(ratios) if ratios else None,
        "ratio_worst": None if worst is None else ratios[worst],
        "worst": "" if worst is None else names[worst], "below": sum(below), "runs": len(rows),
        "gap_mean": statistics.fmean(gaps) if gaps else None,
        "gap_worst": min(gaps) if gaps else None,
        "below_names": [(src if seed is None else f"s{seed}")
                        for ((_, src, seed, _), *_), b in zip(rows, below, strict=True) if b],
    }  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--seeds", default="1-10")
    p.add_argument("--scales", default="0.75,0.9,1,1.3", help="scenario budgets, x their own")
    p.add_argument("--only", help="groups or workloads whose name contains this")
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--json", type=Path, help="write the summaries here too")
    args = p.parse_args()
    todo = jobs(parse_seeds(args.seeds), tuple(float(x) for x in args.scales.split(",")),
                args.only)  # fmt: skip
    start = time.monotonic()
    with ProcessPoolExecutor(args.parallel) as pool:
        done = list(pool.map(run, todo, chunksize=1))
    groups: dict[str, list[tuple[Job, RunReport, RunReport, RunReport]]] = {}
    for row in done:
        groups.setdefault(row[0][0], []).append(row)
    out = {}
    print(f"{'group':<28} {'vs engine alone: mean':>22} {'worst':>16} {'below':>7} "
          f"{'gap closed: mean':>17} {'worst':>7}")  # fmt: skip
    for name, rows in groups.items():
        s = out[name] = summary(rows)
        gap = "" if s["gap_mean"] is None else f"{s['gap_mean']:+17.0%} {s['gap_worst']:+7.0%}"
        if s["ratio_mean"] is None:  # the engine alone served nothing from disk
            mean, worst = f"{'-':>22}", f"{'-':>16}"
        else:
            mean = f"{s['ratio_mean']:>21.2f}x"
            ratio_worst, where = s["ratio_worst"], s["worst"][-12:]
            worst = f"{f'{ratio_worst:.2f}x ({where})':>16}"
        print(f"{name:<28} {mean} {worst} {s['below']:>3}/{s['runs']:<3} {gap}")
        for n in s["below_names"] if name.startswith("scenarios") else ():
            print(f"    below the engine alone: {n}")
    print(f"{len(todo)} runs in {time.monotonic() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
