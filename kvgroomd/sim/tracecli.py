"""`kvgroomd simulate --trace FILE`: replay the recorded traffic under configs.

The shell around sim/tracereplay.py: reads the trace's files (FILE and its
rotated elders FILE.1, FILE.2, ..., oldest first), builds the configs (the
recorded one, each --config, and the grid of every --set), prints a table or
JSON, draws tokens served against disk used.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

from kvgroomd.config import Config, ConfigError, load_config, parse_engine_budget, with_setting
from kvgroomd.sim import trace as fmt
from kvgroomd.sim.traceoutcome import Outcome, format_table, room
from kvgroomd.sim.tracereplay import Prepared, Setup, engine_of, prepare, replay

RECORDED = "recorded config"


def trace_files(path: Path) -> list[Path]:
    """FILE's rotated elders (FILE.9 ... FILE.1), oldest first, then FILE."""
    elders = []
    for sibling in path.parent.glob(f"{path.name}.*"):
        suffix = sibling.name.removeprefix(f"{path.name}.")
        if suffix.isdigit():
            elders.append((int(suffix), sibling))
    return [p for _, p in sorted(elders, reverse=True)] + ([path] if path.exists() else [])


def read_trace(path: Path) -> fmt.Trace:
    """Read a trace's files; raises TraceError (or OSError)."""
    files = trace_files(path)
    if not files:
        raise fmt.TraceError(f"{path}: no such trace file")
    with ExitStack() as stack:
        opened = [(str(p), stack.enter_context(p.open(encoding="utf-8", errors="replace")))
                  for p in files]  # fmt: skip
        return fmt.read(opened)


def recorded_config(record: dict[str, Any]) -> Config:
    """The config a trace recorded, as a Config (the cache directory is not recorded)."""
    return Config(
        cache_dir=Path("/"), budget=record.get("budget"),
        engine_budget=record.get("engine_budget"), engine=engine_of(record),
        low_watermark=float(record.get("low_watermark", 0.9)),
        protect_new=float(record.get("protect_new", 120.0)),
        policy=str(record.get("policy", Config.__dataclass_fields__["policy"].default)),
        policy_params=dict(record.get("policy_params") or {}),
        supersede=bool(record.get("supersede", True)),
        reconcile_interval=float(record.get("reconcile_interval", 300.0)),
        dry_run=bool(record.get("dry_run", False)),
    )  # fmt: skip


def parse_sets(items: list[str]) -> list[tuple[str, list[str]]]:
    """`--set key=v1,v2` options as (key, values)."""
    out = []
    for item in items:
        key, eq, values = item.partition("=")
        if not eq or not key.strip() or not values.strip():
            raise ConfigError(f"--set {item}: expected KEY=VALUE[,VALUE...], e.g. budget=2GiB,4GiB")
        out.append((key.strip(), [v.strip() for v in values.split(",") if v.strip()]))
    return out


def setups(bases: list[tuple[str, Config, bool]], sets: list[tuple[str, list[str]]],
           engine_budget: int | None,
           recorded: Config | None = None) -> Iterator[Setup]:  # fmt: skip
    """Every base config with every combination of the --set values; each
    says how its budgets compare with `recorded`'s (how its estimate errs)."""
    grid = list(itertools.product(*[[(k, v) for v in vs] for k, vs in sets])) if sets else [()]
    for label, base, as_recorded in bases:
        for combo in grid:
            config = base
            for key, value in combo:
                config = with_setting(config, key, value)
            settings = dict(combo)
            name = " ".join(f"{k}={v}" for k, v in combo)
            name = (f"{label}: {name}" if len(bases) > 1 else name) if combo else label
            budget = config.engine_budget if config.engine_budget is not None else engine_budget
            was = recorded or base
            was_engine = was.engine_budget if was.engine_budget is not None else engine_budget
            yield Setup(name, replace(config.rules(), prefixes=False), budget, config.engine,
                        config.reconcile_interval, follow_reloads=as_recorded and not combo,
                        settings=settings,
                        room=room((budget, config.budget), (was_engine, was.budget)))  # fmt: skip


def main(argv: list[str]) -> int:
    """`kvgroomd simulate --trace FILE [--config FILE ...] [--set KEY=V1,V2 ...]
    [--engine-budget SIZE] [--json] [--plot PNG]`: replay traffic the daemon
    recorded (`trace:` in its config) through the engine model and the
    daemon's own decision core, under the recorded config, each --config,
    and every combination of the --set values; per run the prompt tokens
    served from disk, GiB written, the engine's evictions, disk used, the
    difference to what was recorded, and which way its estimate errs (by its
    budgets against the recorded ones: sim/traceoutcome.ESTIMATE)."""
    ap = argparse.ArgumentParser(prog="kvgroomd simulate --trace", description=main.__doc__)
    ap.add_argument("--trace", required=True, type=Path, metavar="FILE",
                    help="the trace file (its rotated FILE.1, FILE.2, ... are read too)")
    ap.add_argument("--config", action="append", type=Path, default=[], metavar="FILE",
                    help="a kvgroomd config to replay under (repeatable; default: the "
                    "recorded one)")  # fmt: skip
    ap.add_argument("--set", action="append", default=[], metavar="KEY=V1,V2",
                    help="try each value of a config key, e.g. budget=2GiB,4GiB or "
                    "policy.idle_half_turnovers=0.5,1,2 (repeatable: the grid of all)")  # fmt: skip
    ap.add_argument("--engine-budget", metavar="SIZE",
                    help="the engine's --kv-disk-space-mb when the config does not say it")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    ap.add_argument("--plot", metavar="PNG", help="draw tokens served against disk used")
    args = ap.parse_args(argv)
    try:
        trace = read_trace(args.trace)
        prep = prepare(trace)
        engine_budget = parse_engine_budget(args.engine_budget) if args.engine_budget else None
        bases = [(RECORDED, recorded_config(dict(prep.config)), True)] if not args.config else [
            (str(p), load_config(p), False) for p in args.config]  # fmt: skip
        runs = list(setups(bases, parse_sets(args.set), engine_budget,
                           recorded_config(dict(prep.config))))  # fmt: skip
    except ConfigError as e:
        print(f"kvgroomd simulate: {e}", file=sys.stderr)
        return 3
    except (OSError, fmt.TraceError, ValueError) as e:
        print(f"kvgroomd simulate: {e}", file=sys.stderr)
        return 2
    for s in runs:
        if s.engine_budget is None:
            print(f"kvgroomd simulate: {s.label}: the engine's budget is not known (no "
                  "engine_budget: in the config): its own eviction never runs in this replay; "
                  "give --engine-budget", file=sys.stderr)  # fmt: skip
            break
    outcomes = [replay(prep, s) for s in runs]
    _print(args.trace, prep, outcomes, as_json=args.json)
    if args.plot:
        from kvgroomd.sim.traceplot import plot_sweep  # noqa: PLC0415 - matplotlib only if asked

        plot_sweep(prep.recorded, outcomes, args.plot, title=str(args.trace))
    return 0


def _print(path: Path, prep: Prepared, outcomes: list[Outcome], *, as_json: bool) -> None:
    start, end = prep.span
    files = len(prep.facts)
    if as_json:
        print(json.dumps({
            "trace": str(path), "hours": round((end - start) / 3600, 3), "files": files,
            "relations_unplaced": prep.conflicts, "recorded": prep.recorded.summary(),
            "runs": [o.summary(prep.recorded) for o in outcomes],
        }, indent=2))  # fmt: skip
        return
    span = end - start
    took = f"{span / 3600:.1f} h" if span >= 3600 else f"{span / 60:.1f} min"
    print(f"{path}: {took} of traffic, {files} files, {prep.recorded.lookups} disk lookups "
          f"seen, {prep.recorded.hits} hits")  # fmt: skip
    print(format_table(prep.recorded, outcomes, prep.conflicts))
