"""Cache value, live: ds4-server's disk cache with and without kvgroomd.

For each seed of the interleaved-agent workload and each pace, three runs
start together, each the engine emulator as its own process
(`python -m kvgroomd.testing.live`) writing a real directory (sparse files)
on the wall clock:

* engine alone, at the engine budget;
* unbounded (no budget: the most any policy could serve);
* kvgroomd: the real daemon (`python -m kvgroomd run`) beside the engine,
  with the default config plus `engine_budget` (and `--config` keys).

It prints the share of prompt tokens served from cache and the share of the
alone-to-unbounded gap closed per seed, with the simulator's prediction
(`kvgroomd simulate`, the same engine model in memory, the daemon's code
acting at once after each store) beside each. Paces: `instant` (prefill and
generation instant, 0.2 s between requests) and `3000` (prefill at 3,000
tokens/s, generation instant, 0.2 s between requests). `--time-scale`
replays faster (0.5: twice as fast) and is printed with the figures; the
daemon's clock is then faster than the workload's, so it changes what a
wall-clock policy decides.

    .venv/bin/python bench/value.py --seeds 1-6 --paces instant,3000
    .venv/bin/python bench/value.py --seeds 1-3 --config extra.yaml   # e.g. budget: 3GiB

Nothing is judged: figures only. The machine's load shifts the daemon's
reaction time, so live and predicted differ most on a busy machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Daemon, load_average, machine
from kvgroomd.config import parse_config, parse_size
from kvgroomd.sim.cli import groom_params
from kvgroomd.sim.generate import load_source
from kvgroomd.sim.replay import compare
from kvgroomd.sim.report import ALONE, UNBOUNDED, parse_seeds

MiB = 1 << 20
GiB = 1 << 30
RUNS = ("alone", "unbounded", "kvgroomd")


@dataclass
class Case:
    """One seed at one pace: live figures, predicted figures, daemon facts."""

    seed: int
    pace: str
    live: dict[str, float] = field(default_factory=dict)  # run -> share served
    sim: dict[str, float] = field(default_factory=dict)
    unlinks: dict[str, int] = field(default_factory=dict)  # daemon unlinks by cause
    engine_evicted: int = 0  # files the engine evicted itself beside the daemon
    late_s: float = 0.0
    wall_s: float = 0.0

    def gap(self, which: str) -> float | None:
        """Gap closed by kvgroomd, live or predicted."""
        d = self.live if which == "live" else self.sim
        span = d["unbounded"] - d["alone"]
        return None if span <= 1e-9 else (d["kvgroomd"] - d["alone"]) / span


def emulator(directory: Path, args: argparse.Namespace, seed: int, pace: str, start: float,
             *, unbounded: bool, journal: Path) -> subprocess.Popen[str]:  # fmt: skip
    cmd = [sys.executable, "-m", "kvgroomd.testing.live", "--dir", str(directory),
           "--workload", args.workload, "--seed", str(seed), "--pace", pace,
           "--budget", str(args.budget), "--start-at", str(start),
           "--time-scale", str(args.time_scale), "--journal", str(journal)]  # fmt: skip
    if unbounded:
        cmd.append("--unbounded")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"emulator failed ({proc.returncode}): {err[-2000:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def live_case(root: Path, args: argparse.Namespace, extra: dict[str, Any], seed: int,
              pace: str) -> Case:  # fmt: skip
    case = Case(seed, pace)
    base = root / f"s{seed}-{pace}"
    dirs = {r: base / r for r in RUNS}
    for d in dirs.values():
        d.mkdir(parents=True)
    config = {"engine_budget": f"{args.budget // MiB}MiB", **extra}
    d = Daemon(dirs["kvgroomd"], base, **config)
    try:
        d.wait_ready(60)
        start = math.ceil(time.time()) + 2
        procs = {r: emulator(dirs[r], args, seed, pace, start, unbounded=r == "unbounded",
                             journal=base / f"{r}.jsonl") for r in RUNS}  # fmt: skip
        results = {r: finish(p) for r, p in procs.items()}
        time.sleep(1.0)  # the daemon's last reactions
    finally:
        d.stop()
        with open(base / "daemon.jsonl", "w", encoding="utf-8") as fp:
            for rec in d.records:
                fp.write(json.dumps({k: v for k, v in rec.items() if k != "_seen"}) + "\n")
    for r, res in results.items():
        case.live[r] = float(res["share"])
        case.late_s = max(case.late_s, float(res["late_s"]))
        case.wall_s = max(case.wall_s, float(res["wall_s"]))
    for rec in d.events("snapshot.unlinked"):
        cause = str(rec.get("cause"))
        case.unlinks[cause] = case.unlinks.get(cause, 0) + 1
    journal = [json.loads(line) for line in (base / "kvgroomd.jsonl").read_text().splitlines()]
    case.engine_evicted = sum(1 for rec in journal
                              if rec["op"] == "unlink" and rec.get("cause") == "evict")  # fmt: skip
    return case


def predict(case: Case, args: argparse.Namespace, extra: dict[str, Any]) -> None:
    w = load_source(args.workload, case.seed, case.pace, args.budget)
    config = parse_config(yaml.safe_dump({"cache_dir": "/var/cache/ds4-bench", "engine_budget":
                                          f"{args.budget // MiB}MiB", **extra}))  # fmt: skip
    mine = groom_params(config, "kvgroomd")
    if args.time_scale != 1.0:
        mine = _scaled(mine, args.time_scale)
    report = compare(w, (mine,), unbounded=True)
    case.sim = {"alone": report.run(ALONE).share, "unbounded": report.run(UNBOUNDED).share,
                "kvgroomd": report.run("kvgroomd").share}  # fmt: skip


def _scaled(g: Any, scale: float) -> Any:
    """The daemon's wall-clock settings as the model's clock sees them."""
    from dataclasses import replace  # noqa: PLC0415

    return replace(g, protect_new=g.protect_new / scale)


def pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.1%}"


def gap_s(x: float | None) -> str:
    return "-" if x is None else f"{x:+.0%}"


def table(cases: list[Case]) -> str:
    head = ("| seed | pace | alone live / sim | unbounded live / sim | kvgroomd live / sim "
            "| gap closed live / sim | kvgroomd live - sim | daemon unlinks | engine evictions "
            "| late |")  # fmt: skip
    lines = [head, "|" + "---|" * 10]
    for c in cases:
        unl = ", ".join(f"{k} {v}" for k, v in sorted(c.unlinks.items())) or "0"
        diff = (c.live["kvgroomd"] - c.sim["kvgroomd"]) * 100
        lines.append(
            f"| {c.seed} | {c.pace} | {pct(c.live['alone'])} / {pct(c.sim['alone'])} "
            f"| {pct(c.live['unbounded'])} / {pct(c.sim['unbounded'])} "
            f"| {pct(c.live['kvgroomd'])} / {pct(c.sim['kvgroomd'])} "
            f"| {gap_s(c.gap('live'))} / {gap_s(c.gap('sim'))} | {diff:+.1f} pt | {unl} "
            f"| {c.engine_evicted} | {c.late_s:.2f} s |"
        )
    for pace in sorted({c.pace for c in cases}):
        sub = [c for c in cases if c.pace == pace]
        for which in ("live", "sim"):
            gaps = [(g, c.seed) for c in sub if (g := c.gap(which)) is not None]
            below = sum(1 for c in sub
                        if (c.live if which == "live" else c.sim)["kvgroomd"]
                        < (c.live if which == "live" else c.sim)["alone"] - 1e-12)  # fmt: skip
            if gaps:
                mean = sum(g for g, _ in gaps) / len(gaps)
                worst = min(gaps)
                lines.append(f"\n{pace}, {which}: gap closed mean {mean:+.0%}, worst "
                             f"{worst[0]:+.0%} (seed {worst[1]}); below the engine alone on "
                             f"{below} of {len(sub)} seeds")  # fmt: skip
        worst_diff = max(abs(c.live["kvgroomd"] - c.sim["kvgroomd"]) for c in sub) * 100
        lines.append(f"{pace}: largest live-vs-predicted difference {worst_diff:.1f} points")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--workload", default="interleaved", help="generator kind or YAML")
    p.add_argument("--seeds", default="1-3")
    p.add_argument("--paces", default="instant,3000")
    p.add_argument("--budget", default="4GiB", help="engine budget (--kv-disk-space-mb)")
    p.add_argument("--config", type=Path, help="more daemon config keys (YAML mapping)")
    p.add_argument("--parallel", type=int, default=2, help="cases run at once")
    p.add_argument("--time-scale", type=float, default=1.0,
                   help="wall seconds per workload second (0.5: twice as fast)")  # fmt: skip
    p.add_argument("--workdir", type=Path, default=None)
    p.add_argument("--keep", action="store_true", help="leave the directories")
    p.add_argument("--json", type=Path, help="write every figure here too")
    args = p.parse_args(argv)
    args.budget = parse_size(args.budget)
    extra: dict[str, Any] = yaml.safe_load(args.config.read_text()) if args.config else {}
    seeds = parse_seeds(args.seeds)
    paces = [x.strip() for x in args.paces.split(",") if x.strip()]
    load0 = load_average()
    t0 = time.monotonic()
    ctx = (contextlib.nullcontext(str(args.workdir)) if args.workdir
           else tempfile.TemporaryDirectory(prefix="kvgroomd-value-"))  # fmt: skip
    cases: list[Case] = []
    lock = threading.Lock()
    with ctx as tmp:
        root = Path(tmp)
        jobs = [(s, pace) for pace in paces for s in seeds]

        def one(job: tuple[int, str]) -> Case:
            case = live_case(root, args, extra, *job)
            predict(case, args, extra)
            with lock:
                print(f"[{time.strftime('%H:%M:%S')}] seed {job[0]} pace {job[1]}: kvgroomd "
                      f"live {case.live['kvgroomd']:.1%} sim {case.sim['kvgroomd']:.1%}",
                      file=sys.stderr, flush=True)  # fmt: skip
            return case

        with ThreadPoolExecutor(max_workers=max(1, args.parallel)) as pool:
            cases = list(pool.map(one, jobs))
        if args.keep:
            print(f"directories kept in {root}", file=sys.stderr)
            input("press Enter to remove them ") if args.workdir is None else None
    print(f"{machine()}; load {load0} -> {load_average()}; bench took "
          f"{time.monotonic() - t0:.0f} s; workload {args.workload}, engine budget "
          f"{args.budget / GiB:.2f} GiB, time scale {args.time_scale}, daemon config "
          f"default + engine_budget{' + ' + json.dumps(extra) if extra else ''}\n")  # fmt: skip
    print(table(cases))
    if args.json:
        args.json.write_text(json.dumps([c.__dict__ for c in cases], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
