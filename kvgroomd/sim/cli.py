"""`kvgroomd simulate`: replay a workload, or many seeds of a generated one.

The shell around the pure simulator: reads the workload and the config,
prints tables or JSON, draws the plot.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

from kvgroomd.core.scoring import POLICIES
from kvgroomd.sim.generate import KINDS, load_source
from kvgroomd.sim.replay import BASELINE, DEFAULT, GroomParams, compare
from kvgroomd.sim.report import Report, Sweep, format_sweep, format_table, parse_seeds
from kvgroomd.sim.workload import Workload, WorkloadError

if TYPE_CHECKING:
    from kvgroomd.config import Config


def groom_params(c: Config, label: str = "config") -> GroomParams:
    """What the daemon would do under config `c`, as the simulator runs it."""
    return GroomParams(
        label=label,
        policy=c.policy,
        params=dict(c.policy_params),
        budget=c.budget,  # an optional cap
        # The simulator's engine budget is the workload's: a config that names
        # the engine's budget makes kvgroomd keep the room its next store needs.
        engine_budget=c.engine_budget is not None,
        low_watermark=c.low_watermark,
        protect_new=c.protect_new,
        supersede=c.supersede,
        reject_different_quant=c.reject_different_quant,
    )


def _contender(args: argparse.Namespace) -> GroomParams:
    from kvgroomd.config import load_config  # noqa: PLC0415

    mine = DEFAULT
    if args.config:
        mine = groom_params(load_config(args.config))
    if args.policy:
        if args.policy not in POLICIES:
            raise ValueError(f"--policy: unknown {args.policy!r} (known: {', '.join(POLICIES)})")
        mine = replace(mine, policy=args.policy, label=args.policy,
                       params=mine.params if mine.policy == args.policy else {})  # fmt: skip
    return mine


def main(argv: list[str]) -> int:
    """`kvgroomd simulate WORKLOAD [--seeds 1-10] [--budget SIZE ...] [--pace P]
    [--config FILE] [--policy NAME] [--plot PNG] [--json]`: replay a workload
    (a YAML file, or a generator: interleaved, mixed-month, or an adversarial
    one) with the engine alone, the `ds4` score plus supersession and the
    configured (default) policy; with --seeds, many seeds of a generated
    workload with the engine alone, unbounded and the configured policy,
    summarised per engine budget (mean and worst seed)."""
    if any(a == "--trace" or a.startswith("--trace=") for a in argv):
        from kvgroomd.sim import tracecli  # noqa: PLC0415 - replay of a recorded trace

        return tracecli.main(argv)
    ap = argparse.ArgumentParser(prog="kvgroomd simulate", description=main.__doc__,
                                 epilog="kvgroomd simulate --trace FILE --help: replay "
                                 "traffic the daemon recorded (trace: in its config)")  # fmt: skip
    ap.add_argument("workload",
                    help=f"workload YAML (see scenarios/) or one of: {', '.join(KINDS)}")
    ap.add_argument("--config", help="kvgroomd config: policy, parameters, budget, ...")
    ap.add_argument("--budget", action="append", help="engine budget (--kv-disk-space-mb), "
                    "e.g. 32GiB; the same in every run; repeat for several")  # fmt: skip
    ap.add_argument("--seeds", help="seeds of a generated workload, e.g. 1-10 or 1,4,7")
    ap.add_argument("--pace", help="pace of a generated workload: instant or 3000 (tokens/s)")
    ap.add_argument("--per-seed", action="store_true", help="with --seeds: every seed's figures")
    ap.add_argument("--policy", help=f"policy to try (known: {', '.join(POLICIES)})")
    ap.add_argument("--plot", metavar="PNG", help="write disk usage and tokens saved over time")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--compression", type=float, metavar="RATIO",
                    help="also replay with a compressing engine (snapshots RATIO times "
                         "smaller, e.g. 2.5) and show what the same budget then holds")  # fmt: skip
    args = ap.parse_args(argv)
    from kvgroomd.config import ConfigError, parse_size  # noqa: PLC0415

    try:
        budgets: list[int | None] = [parse_size(b) for b in args.budget or []] or [None]
        seeds = parse_seeds(args.seeds) if args.seeds else None
        mine = _contender(args)
        if seeds is None:
            w = load_source(args.workload, None, args.pace, budgets[0])
        else:
            sweeps = [_sweep(args.workload, seeds, args.pace, b, mine) for b in budgets]
    except ConfigError as e:  # exit statuses as for every command (docs/operator-tools.md)
        print(f"kvgroomd simulate: {e}", file=sys.stderr)
        return 3
    except (WorkloadError, ValueError) as e:
        print(f"kvgroomd simulate: {e}", file=sys.stderr)
        return 2
    if mine.budget is None and not mine.engine_budget:
        print("kvgroomd simulate: the config sets no budget, so kvgroomd only supersedes "
              "and the engine's own eviction does the rest", file=sys.stderr)  # fmt: skip
    if args.compression is not None and not (args.compression >= 1):
        print("kvgroomd simulate: --compression: a ratio >= 1, e.g. 2.5", file=sys.stderr)
        return 2
    if seeds is not None:
        if args.json:
            print(json.dumps([s.summary() for s in sweeps], indent=2))
        else:
            print("\n\n".join(format_sweep(s, per_seed=args.per_seed) for s in sweeps))
        return 0
    report = compare(w, (BASELINE, mine))
    _print(report, w, args.json)
    if args.compression is not None:
        _print_compressed(w, mine, report, args.compression, args.json)
    if args.plot:
        from kvgroomd.sim.plot import plot_report  # noqa: PLC0415 - matplotlib only when asked

        plot_report(report, args.plot)
    return 0


def _sweep(source: str, seeds: tuple[int, ...], pace: str | None, budget: int | None,
           mine: GroomParams) -> Sweep:  # fmt: skip
    reports = []
    name = source
    for s in seeds:
        w = load_source(source, s, pace, budget)
        reports.append(compare(w, (mine,), unbounded=True))
        name = w.name.rsplit("-s", 1)[0] if w.name.endswith(f"-s{s}") else w.name
        budget = w.engine.budget
    assert budget is not None
    return Sweep(name, budget, seeds, tuple(reports))


def _print_compressed(w: Workload, mine: GroomParams, raw: Report, ratio: float,
                      as_json: bool) -> None:  # fmt: skip
    """The same workload and budget with a compressing engine, beside `raw`."""
    engine = replace(w.engine, compression=True, compression_ratio=ratio)
    packed = compare(replace(w, engine=engine), (BASELINE, mine))
    if as_json:
        print(json.dumps({"compression_ratio": ratio,
                          "runs": [r.summary() for r in packed.runs]}, indent=2))  # fmt: skip
    else:
        print()
        print(format_compression(raw, packed, ratio))


def format_compression(raw: Report, packed: Report, ratio: float) -> str:
    """What the same engine budget holds, raw and compressed, per run."""
    head = (f"{'run':<26} {'snapshots held':>15} {'tokens from disk':>23} "
            f"{'share served':>17}")  # fmt: skip
    lines = [f"with a compressing engine (snapshots {ratio:g}x smaller), the same "
             f"{raw.budget / (1 << 30):.2f} GiB budget holds:", head, "-" * len(head)]  # fmt: skip
    for a, b in zip(raw.runs, packed.runs, strict=True):
        gain = f"{b.tokens_saved / a.tokens_saved:.2f}x" if a.tokens_saved else "-"
        lines.append(f"{a.label:<26} {a.files_held:>6.1f} -> {b.files_held:<6.1f} "
                     f"{a.tokens_saved:>9,} -> {b.tokens_saved:<9,} ({gain:>5}) "
                     f"{a.share:>6.1%} -> {b.share:<6.1%}")  # fmt: skip
    return "\n".join(lines)


def _print(report: Report, w: Workload, as_json: bool) -> None:
    if as_json:
        print(json.dumps({"workload": w.name, "budget": w.engine.budget,
                          "runs": [r.summary() for r in report.runs]}, indent=2))  # fmt: skip
    else:
        print(format_table(report))
