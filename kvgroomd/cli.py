"""Command line: `kvgroomd run | check-config | groom | simulate ...`.

Shell. Exit status: 0 success; 1 runtime failure; 2 usage error (argparse's
convention); 3 invalid configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from kvgroomd import log as events
from kvgroomd.config import Config, ConfigError, load_config, parse_duration, parse_size

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CONFIG = 0, 1, 2, 3


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", type=Path, help="YAML config file (see config.example.yaml)")
    p.add_argument("--cache-dir", type=Path, help="the ds4 --kv-disk-dir (overrides the config)")
    p.add_argument("--budget", type=_size, help="disk budget, e.g. 60GiB (overrides the config)")
    p.add_argument("--dry-run", action="store_const", const=True, default=None,
                   help="log snapshot.would_unlink instead of deleting")  # fmt: skip


def _load(args: argparse.Namespace) -> tuple[Config, dict[str, Any]]:
    overrides = {"cache_dir": args.cache_dir, "budget": args.budget, "dry_run": args.dry_run}
    if args.config is not None:
        return load_config(args.config).with_overrides(**overrides), overrides
    if args.cache_dir is None:
        raise ConfigError("give --config FILE or --cache-dir DIR")
    return Config(cache_dir=args.cache_dir).with_overrides(**overrides), overrides


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon in the foreground."""
    from kvgroomd.daemon import Daemon  # noqa: PLC0415 - watchdog only where needed

    config, overrides = _load(args)
    events.configure(config.log_format, config.log_level)
    return Daemon(config, events.get(), config_path=args.config, overrides=overrides).run()


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a config file and print the effective configuration."""
    config = load_config(args.file)
    json.dump(config.effective(), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return EXIT_OK


def cmd_groom(args: argparse.Namespace) -> int:
    """One pass of supersession and budget eviction, then exit."""
    from kvgroomd.groom import Groomer, cause_totals  # noqa: PLC0415

    config, _ = _load(args)
    events.configure(config.log_format, config.log_level)
    log = events.get()
    if not config.cache_dir.is_dir():
        log.error(events.DIR_MISSING, cache_dir=str(config.cache_dir))
        return EXIT_FAILED
    groomer = Groomer(config, log)
    groomer.reconcile(time.time(), startup=True)
    g = groomer.index
    over = config.budget is not None and g.total_bytes > config.budget and not config.dry_run
    log.info(events.GROOM_DONE, snapshots=len(g), dir_bytes=g.total_bytes,
             budget=config.budget, dry_run=config.dry_run,
             by_cause=cause_totals(groomer.totals), within_budget=not over)  # fmt: skip
    return EXIT_FAILED if over else EXIT_OK


def cmd_simulate(args: argparse.Namespace) -> int:
    """Replay a workload through the engine model, with and without kvgroomd."""
    from kvgroomd import simulate  # noqa: PLC0415 - pulls in the simulator only here

    return simulate.main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="kvgroomd", description="Groom a ds4-server disk KV-cache directory."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('kvgroomd')}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run the daemon in the foreground",
                       description=cmd_run.__doc__)  # fmt: skip
    _config_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("check-config", help="validate a config file and print it",
                       description=cmd_check_config.__doc__)  # fmt: skip
    p.add_argument("file", type=Path)
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("groom", help="one grooming pass, then exit",
                       description=cmd_groom.__doc__)  # fmt: skip
    p.add_argument("--once", action="store_true", required=True,
                   help="run a single pass (the only mode; the daemon is `run`)")  # fmt: skip
    _config_args(p)
    p.set_defaults(func=cmd_groom)

    p = sub.add_parser("simulate", help="replay a workload: engine alone vs kvgroomd",
                       description=cmd_simulate.__doc__, add_help=False)  # fmt: skip
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_simulate)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `kvgroomd` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as e:
        print(f"kvgroomd: invalid configuration: {e}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130
