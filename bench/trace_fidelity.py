"""How well a replayed activity trace predicts what the engine serves (#13).

Per seed: the engine emulator serves `kvgroomd.testing.traffic`'s chats beside
the real daemon (a process, recording a trace) at the engine budget B and at
each other budget of `--scales` (times B, the first being B's own); what the
emulator served from disk is the truth. Then the trace recorded at B is
replayed (`kvgroomd simulate --trace`'s code, in-process) under the recorded
config and with the engine budget set to each other budget; every trace is
replayed under its own config too.

    .venv/bin/python bench/trace_fidelity.py [--seeds 1,2,3,4,5,6] [--requests 300]
        [--budget-mib 1600] [--scales 1,0.75,1.5,2] [--workdir DIR] [--replay-only]

`--replay-only` replays the traces a previous run left in `--workdir` (the
emulator's figures are kept there in runs.json), for a change to the replay
alone. Paced on the wall clock (a minute or more a run at 300 requests): the
daemon's races with the engine are real, so figures move a little from run
to run and more on a loaded machine.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from kvgroomd.config import with_setting
from kvgroomd.sim.tracecli import RECORDED, read_trace, recorded_config, setups
from kvgroomd.sim.tracereplay import prepare, replay
from kvgroomd.testing.daemon import DaemonProcess, write_config
from kvgroomd.testing.engine import MiB
from kvgroomd.testing.traffic import PROTECT_NEW, chats


def record(root: Path, seed: int, budget_mib: int, requests: int) -> dict[str, Any]:
    """One emulator run beside a tracing daemon: what the emulator served."""
    run = root / f"s{seed}-b{budget_mib}"
    cache, state = run / "kv", run / "state"
    cache.mkdir(parents=True)
    state.mkdir()
    cfg = write_config(run / "kvgroomd.yaml", cache_dir=cache, trace="trace.jsonl",
                       engine_budget=budget_mib, protect_new=PROTECT_NEW)  # fmt: skip
    d = DaemonProcess(cfg, {"STATE_DIRECTORY": str(state)})
    try:
        d.wait_for("daemon.ready", timeout=30)
        flow = chats(cache, seed=seed, requests=requests, budget=budget_mib * MiB)
        seen = -1
        while len(d.records) != seen:  # the daemon has handled everything: its log is quiet
            seen = len(d.records)
            time.sleep(1.0)
    finally:
        d.stop()
    return {"seed": seed, "budget_mib": budget_mib, "served": flow.saved, "hits": flow.hits,
            "lookups": flow.lookups, "trace": str(state / "trace.jsonl")}  # fmt: skip


def replays(trace: Path, budgets_mib: list[int]) -> tuple[int, dict[int, int]]:
    """The trace's own recorded figure and its replays under the recorded config,
    with the engine budget set to each of `budgets_mib` (the first: as recorded)."""
    prep = prepare(read_trace(trace))
    base = recorded_config(dict(prep.config))
    out = {}
    for i, mib in enumerate(budgets_mib):
        config = base if i == 0 else with_setting(base, "engine_budget", str(mib))
        setup = next(setups([(RECORDED, config, i == 0)], [], None))
        out[mib] = replay(prep, setup).tokens_from_disk
    return prep.recorded.tokens_from_disk, out


def _pct(a: float, b: float) -> float:
    return (a / b - 1) * 100 if b else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="1,2,3,4,5,6")
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--budget-mib", type=int, default=1600)
    ap.add_argument("--scales", default="1,0.75,1.5,2")
    ap.add_argument("--workdir", type=Path, help="kept (default: a temporary directory)")
    ap.add_argument("--replay-only", action="store_true")
    args = ap.parse_args()
    if args.replay_only and not args.workdir:
        ap.error("--replay-only replays the runs of a --workdir")
    with contextlib.ExitStack() as stack:
        root = args.workdir or Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="trace-fidelity-")))  # fmt: skip
        measure(args, root)


def measure(args: argparse.Namespace, root: Path) -> None:
    """Run (or read) the emulator's runs, replay, print the table."""
    seeds = [int(s) for s in args.seeds.split(",")]
    budgets = [round(args.budget_mib * float(x)) for x in args.scales.split(",")]
    book = root / "runs.json"
    if args.replay_only:
        runs = json.loads(book.read_text())
    else:
        runs = [record(root, seed, mib, args.requests) for seed in seeds for mib in budgets]
        book.write_text(json.dumps(runs, indent=1))
    truth = {(r["seed"], r["budget_mib"]): r for r in runs}
    print(f"{args.requests} requests a run; workdir {root}")
    print("| seed | engine budget | emulator served | trace's own record | own replay "
          "| replayed from the B trace | error vs emulator |")
    print("|---|---|---|---|---|---|---|")
    errors: dict[int, list[float]] = {mib: [] for mib in budgets}
    for seed in seeds:
        if (seed, budgets[0]) not in truth:
            continue
        _rec, from_b = replays(Path(truth[seed, budgets[0]]["trace"]), budgets)
        for mib in budgets:
            r = truth.get((seed, mib))
            if r is None:
                continue
            own_rec, own = replays(Path(r["trace"]), [mib])
            err = _pct(from_b[mib], r["served"])
            errors[mib].append(err)
            print(f"| {seed} | {mib} MiB | {r['served']:,} | {own_rec:,} "
                  f"({_pct(own_rec, r['served']):+.1f}%) | {own[mib]:,} "
                  f"({_pct(own[mib], r['served']):+.1f}%) | {from_b[mib]:,} | {err:+.1f}% |")
    for mib, xs in errors.items():
        if xs:
            worst = max(xs, key=abs)
            print(f"{mib} MiB, replayed from the {budgets[0]} MiB trace vs the emulator: "
                  f"mean {statistics.fmean(xs):+.1f}%, worst {worst:+.1f}% ({len(xs)} seeds)")


if __name__ == "__main__":
    main()
