"""Command line: `kvgroomd run | check-config | ls | groom | stats | tail | simulate`.

Shell. Exit status: 0 success; 1 runtime failure (directory missing or
unreadable, an unlink failed); 2 usage error (argparse's convention); 3
invalid configuration; 4 `groom --once` ended still over budget (everything
left is protected); 5 broken installation (an import failed: __main__.py);
6 another kvgroomd already grooms the directory (`run` and `groom`).
docs/operator-tools.md documents each command.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from kvgroomd import log as events
from kvgroomd.config import (
    Config,
    ConfigError,
    check_values,
    load_config,
    parse_duration,
    parse_engine_budget,
    parse_size,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CONFIG, EXIT_OVER_BUDGET = 0, 1, 2, 3, 4
# 5: a broken installation (__main__.py); 6: EXIT_LOCKED, another kvgroomd grooms it


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _engine_budget(text: str) -> int:
    try:
        return parse_engine_budget(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _engine_budget_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine-budget", "--kv-disk-space-mb", dest="engine_budget",
                   type=_engine_budget, metavar="MiB",
                   help="the engine's --kv-disk-space-mb: a bare number is MiB, a size with "
                        "a unit (4GiB) also works (overrides the config)")  # fmt: skip


def _warn(config: Config, log: Any) -> None:
    """Log what the config file says that still works but should change."""
    for warning in config.warnings:
        log.warning(events.CONFIG_WARNING, warning=warning)


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", type=Path, help="YAML config file (see config.example.yaml)")
    p.add_argument("--cache-dir", type=Path, help="the ds4 --kv-disk-dir (overrides the config)")
    p.add_argument("--budget", type=_size, help="disk budget, e.g. 60GiB (overrides the config)")
    _engine_budget_arg(p)
    p.add_argument("--dry-run", action="store_const", const=True, default=None,
                   help="log snapshot.would_unlink instead of deleting")  # fmt: skip


def _load(args: argparse.Namespace) -> tuple[Config, dict[str, Any]]:
    cache_dir = args.cache_dir.absolute() if args.cache_dir is not None else None
    overrides = {"cache_dir": cache_dir, "budget": args.budget,
                 "engine_budget": args.engine_budget, "dry_run": args.dry_run}  # fmt: skip
    if args.config is not None:
        config = load_config(args.config).with_overrides(**overrides)
    elif cache_dir is None:
        raise ConfigError("give --config FILE or --cache-dir DIR")
    else:
        config = Config(cache_dir=cache_dir).with_overrides(**overrides)
    return check_values(config), overrides


def _need_a_directory(args: argparse.Namespace) -> None:
    """Nothing to work on: the usage and exit status 2, as for any usage error."""
    if args.config is None and args.cache_dir is None:
        args.parser.error("give --cache-dir DIR (and --engine-budget N) or --config FILE")


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon in the foreground."""
    _need_a_directory(args)
    from kvgroomd.daemon.loop import Daemon  # noqa: PLC0415 - watchdog only where needed

    config, overrides = _load(args)
    events.configure(config.log_format, config.log_level)
    _warn(config, events.get())
    return Daemon(config, events.get(), config_path=args.config, overrides=overrides).run()


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a config file and print the effective configuration."""
    config = load_config(args.file)
    json.dump(config.effective(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    for warning in config.warnings:
        print(f"kvgroomd: warning: {warning}", file=sys.stderr)
    return EXIT_OK


GROOM_EXIT_CODES = """exit status:
  0  the pass did what was asked (a dry run included)
  1  the directory is missing or unreadable, or an unlink failed
  2  usage error
  3  invalid configuration
  4  still over budget after the pass: everything left is protected
  6  another kvgroomd already grooms this directory"""


def cmd_groom(args: argparse.Namespace) -> int:
    """One pass of leak cleanup (if enabled), supersession and budget eviction,
    with the daemon's log lines, then exit."""
    _need_a_directory(args)
    from kvgroomd.daemon.groom import DiskGroomer, cause_totals  # noqa: PLC0415
    from kvgroomd.daemon.metrics import Metrics  # noqa: PLC0415 - prometheus_client only if asked
    from kvgroomd.daemon.pinned import (  # noqa: PLC0415
        EXIT_LOCKED,
        Locked,
        PinnedDir,
        Unpinned,
        is_missing,
        warn_if_unusual,
    )

    config, _ = _load(args)
    events.configure(config.log_format, config.log_level)
    log = events.get()
    _warn(config, log)
    directory = PinnedDir(config.cache_dir)
    try:
        directory.pin()
        directory.lock()
    except Locked as e:
        log.error(events.DIR_LOCKED, cache_dir=str(config.cache_dir), error=str(e), pid=e.pid)
        return EXIT_LOCKED
    except OSError as e:
        if is_missing(e):
            log.error(events.DIR_MISSING, cache_dir=str(config.cache_dir))
        else:
            log.error(events.DIR_ERROR, cache_dir=str(config.cache_dir), error=e.strerror,
                      errno=e.errno)  # fmt: skip
        return EXIT_FAILED
    metrics = Metrics(log, textfile=config.metrics_textfile) if config.metrics_textfile else None
    with directory:
        warn_if_unusual(directory, log)
        groomer = DiskGroomer(config, log, directory=directory)
        try:
            groomer.reconcile(time.time(), startup=True)
        except Unpinned as e:
            log.error(events.DIR_CHANGED, cache_dir=str(config.cache_dir), why=e.why,
                      action="stopped")  # fmt: skip
            return EXIT_FAILED
        except OSError as e:
            log.error(events.DIR_ERROR, cache_dir=str(config.cache_dir), error=e.strerror,
                      errno=e.errno)  # fmt: skip
            return EXIT_FAILED
    core = groomer.core
    t = groomer.totals
    limit = core.limit()
    over = limit is not None and core.usage > limit and not config.dry_run
    # A dry run's total: what the real pass would free (dir_bytes is already as after it).
    would = {"would_unlink": sum(t.would.values()),
             "would_free": sum(t.would_free.values())} if config.dry_run else {}  # fmt: skip
    log.info(events.GROOM_DONE, snapshots=len(core.index), dir_bytes=core.usage,
             budget=limit, dry_run=config.dry_run, **would,
             by_cause=cause_totals(t), within_budget=not over,
             unlink_failures=t.failed)  # fmt: skip
    if metrics is not None:
        metrics.update(groomer, config)
    if groomer.totals.failed:
        return EXIT_FAILED
    return EXIT_OVER_BUDGET if over else EXIT_OK


def _inventory(args: argparse.Namespace) -> tuple[Any, str]:
    """Scan DIR read-only and build its inventory under the configured policy."""
    from kvgroomd.core.scoring import POLICIES  # noqa: PLC0415
    from kvgroomd.daemon.groom import survey  # noqa: PLC0415
    from kvgroomd.daemon.pinned import PinnedDir  # noqa: PLC0415
    from kvgroomd.daemon.scan import scan_directory  # noqa: PLC0415
    from kvgroomd.ops import inventory  # noqa: PLC0415

    if args.dir is None and args.config is None:
        args.parser.error("give DIR or --config FILE")
    config = load_config(args.config) if args.config else Config(cache_dir=args.dir)
    directory = args.dir if args.dir is not None else config.cache_dir
    if args.policy is not None and args.policy != config.policy:
        config = config.with_overrides(policy=args.policy, policy_params={})
    config = config.with_overrides(engine_budget=args.engine_budget)
    settings = inventory.Settings(
        POLICIES[config.policy], dict(config.policy_params), config.protect_new,
        config.reject_different_quant,
        args.budget if args.budget is not None else config.budget, config.orphan_temp_age,
        config.engine_budget, config.engine.layout,
    )  # fmt: skip
    with PinnedDir(Path(directory)) as pinned:
        pinned.pin(follow=True)  # read-only: a symlink to the cache is fine here
        now = time.time()
        core, invalid, texts = survey(pinned, config.rules(), now, reading=config.reading)
        found = scan_directory(pinned, snapshots=False, reading=config.reading)
        inv = inventory.build(core, texts, invalid=invalid, temps=found.temps,
                              foreign=found.foreign, now=now, settings=settings)  # fmt: skip
    return inv, str(directory)


def _readonly(fn: Any) -> Any:
    """Turn an unreadable directory into one line on stderr and exit status 1."""

    def run(args: argparse.Namespace) -> int:
        try:
            return int(fn(args))
        except BrokenPipeError:  # `kvgroomd ls | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_OK
        except OSError as e:
            where = e.filename if e.filename else (args.dir or args.config)
            print(f"kvgroomd: cannot read {where}: {e.strerror}", file=sys.stderr)
            return EXIT_FAILED

    run.__doc__ = fn.__doc__
    return run


@_readonly
def cmd_ls(args: argparse.Namespace) -> int:
    """List every snapshot with the value its policy puts on it and its
    eviction rank, and every other file with the reason it is not a snapshot.
    Read-only. Filters (--reason, --older-than, --newer-than) select snapshots;
    `-q` prints only their file names, one a line, for xargs."""
    from kvgroomd.ops import inventory, report  # noqa: PLC0415

    inv, directory = _inventory(args)
    rows = inventory.sorted_rows(inv, args.sort, reverse=args.reverse)
    chosen = report.Selection(frozenset(args.reason or ()), args.older_than, args.newer_than)
    if chosen:
        rows = [r for r in rows if chosen(r, inv.now)]
    if args.quiet:
        sys.stdout.writelines(f"{r.snap.name}\n" for r in rows)
    elif args.json:
        json.dump(inventory.ls_json(inv, directory, rows), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        lines = report.ls_lines(inv, rows, directory, others=not chosen)
        sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


@_readonly
def cmd_stats(args: argparse.Namespace) -> int:
    """Totals by reason, bytes against budget, chains, invalid files and leaks
    (ABI-0 files, crash-left temp files). Read-only."""
    from kvgroomd.ops import inventory, report  # noqa: PLC0415

    inv, directory = _inventory(args)
    st = inventory.stats(inv, directory)
    if args.json:
        json.dump(st, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        sys.stdout.write("\n".join(report.stats_lines(st)) + "\n")
    return EXIT_OK


def cmd_tail(args: argparse.Namespace) -> int:
    """Follow kvgroomd's JSON log (a file, or stdin) and render it for people."""
    from kvgroomd.ops import tail  # noqa: PLC0415

    return tail.main(args)


def _inspect_args(p: argparse.ArgumentParser) -> None:
    from kvgroomd.core.scoring import POLICIES  # noqa: PLC0415

    p.add_argument("dir", nargs="?", type=Path, metavar="DIR",
                   help="the cache directory (default: cache_dir of --config)")  # fmt: skip
    p.add_argument("--config", "-c", type=Path,
                   help="take policy, budget, protect_new, quant rule from this file")  # fmt: skip
    p.add_argument("--policy", choices=sorted(POLICIES),
                   help="score with this policy (default: the config's, else prefill)")  # fmt: skip
    p.add_argument("--budget", type=_size, help="budget to compare with, e.g. 60GiB")
    _engine_budget_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON (schema in the docs)")


def cmd_simulate(args: argparse.Namespace) -> int:
    """Replay a workload through the engine model, with and without kvgroomd."""
    from kvgroomd.sim import cli as simulate  # noqa: PLC0415 - pulls in the simulator only here

    return simulate.main(args.rest)


def _can_plot() -> bool:
    """Whether the optional matplotlib (`kvgroomd[plot]`) imports. Asked before
    a simulation that may run for a minute, not after it."""
    try:
        import matplotlib  # noqa: F401, PLC0415 - optional dependency
    except ImportError:
        return False
    return True


class _Version(argparse.Action):
    """--version, reading the installed version only when asked: importlib.metadata
    (and the email package it pulls in) would add ~50 ms to every start-up."""

    def __call__(self, parser: argparse.ArgumentParser, *_args: Any, **_kw: Any) -> None:
        from importlib.metadata import version  # noqa: PLC0415

        sys.stdout.write(f"{parser.prog} {version('kvgroomd')}\n")  # as argparse's "version"
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="kvgroomd", description="Groom a ds4-server disk KV-cache directory."
    )
    parser.add_argument("--version", action=_Version, nargs=0, help="show the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the daemon in the foreground",
                       description=cmd_run.__doc__)  # fmt: skip
    _config_args(p)
    p.set_defaults(func=cmd_run, parser=p)

    p = sub.add_parser("check-config", help="validate a config file and print it",
                       description=cmd_check_config.__doc__)  # fmt: skip
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("groom", help="one grooming pass, then exit",
                       description=cmd_groom.__doc__, epilog=GROOM_EXIT_CODES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("--once", action="store_true",
                   help="accepted for compatibility: groom always runs one pass "
                        "(the daemon is `run`)")  # fmt: skip
    _config_args(p)
    p.set_defaults(func=cmd_groom, parser=p)

    from kvgroomd.format.header import Reason  # noqa: PLC0415
    from kvgroomd.ops.inventory import SORT_KEYS  # noqa: PLC0415

    p = sub.add_parser("ls", help="list snapshots with score, rank and chain (read-only)",
                       description=cmd_ls.__doc__)  # fmt: skip
    _inspect_args(p)
    p.add_argument("--sort", choices=list(SORT_KEYS), default="rank",
                   help="sort key (default: rank, the first to be evicted first)")  # fmt: skip
    p.add_argument("--reverse", "-r", action="store_true", help="reverse the order")
    p.add_argument("--reason", action="append", metavar="REASON",
                   choices=[r.label for r in Reason],
                   help="only snapshots stored for this reason (repeatable): "
                        f"{', '.join(r.label for r in Reason)}")  # fmt: skip
    p.add_argument("--older-than", type=_duration, metavar="AGE",
                   help="only snapshots created more than AGE ago, e.g. 7d, 12h")  # fmt: skip
    p.add_argument("--newer-than", type=_duration, metavar="AGE",
                   help="only snapshots created less than AGE ago")  # fmt: skip
    p.add_argument("--quiet", "-q", action="store_true",
                   help="print only the snapshots' file names, one a line (for xargs)")  # fmt: skip
    p.set_defaults(func=cmd_ls, parser=p)

    p = sub.add_parser("stats", help="totals, budget, chains, invalid files, leaks (read-only)",
                       description=cmd_stats.__doc__)  # fmt: skip
    _inspect_args(p)
    p.set_defaults(func=cmd_stats, parser=p)

    p = sub.add_parser("tail", help="follow the JSON log and render it for people",
                       description=cmd_tail.__doc__)  # fmt: skip
    p.add_argument("file", nargs="?", type=Path, metavar="FILE",
                   help="a JSON log file (default: stdin, e.g. journalctl -o cat -f)")  # fmt: skip
    p.add_argument("--no-follow", dest="follow", action="store_false",
                   help="stop at the end of FILE instead of waiting for more")  # fmt: skip
    p.add_argument("--event", "-e", action="append", metavar="GLOB",
                   help="only events matching GLOB, e.g. 'snapshot.*' (repeatable)")  # fmt: skip
    p.add_argument("--cause", action="append", metavar="CAUSE",
                   choices=["superseded", "budget", "orphan_temps", "stale_format"],
                   help="only lines with this unlink cause (repeatable)")  # fmt: skip
    p.add_argument("--color", choices=["auto", "always", "never"], default="auto",
                   help="colour output (auto: on a terminal, unless NO_COLOR is set)")  # fmt: skip
    p.set_defaults(func=cmd_tail)

    p = sub.add_parser("simulate", help="replay a workload: engine alone vs kvgroomd",
                       description=cmd_simulate.__doc__, add_help=False)  # fmt: skip
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_simulate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `kvgroomd` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["simulate"]:  # the simulator parses its own options (and --help)
        if any(a == "--plot" or a.startswith("--plot=") for a in argv[1:]) and not _can_plot():
            print("kvgroomd simulate: --plot needs matplotlib: pip install 'kvgroomd[plot]'",
                  file=sys.stderr)  # fmt: skip
            return EXIT_FAILED
        from kvgroomd.sim import cli as simulate  # noqa: PLC0415

        return simulate.main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as e:
        print(f"kvgroomd: invalid configuration: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
