"""Configuration: YAML file -> frozen Config. Defaults live only here.

Shell. Every error names the key and the line it is on, so an operator who
mistypes `budgt:` in a 40-line file is pointed at it rather than at a stack
trace. `kvgroomd check-config FILE` prints the effective result.
"""

from __future__ import annotations

import contextlib
import math
import os
import pwd
import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from kvgroomd.core.groomer import Rules
from kvgroomd.core.scoring import DEFAULT_POLICY, POLICIES
from kvgroomd.format.engine import COMPRESSING_LAYOUTS, ENGINE_LAYOUTS, EngineOptions, MiB
from kvgroomd.format.layouts import DETECT, Reading


class ConfigError(ValueError):
    """A config problem, with the file, line and key it concerns.

    The message is bounded (`MAX_MESSAGE`): a hostile file cannot make an
    error line, or the log line a failed reload writes, grow with it."""

    def __init__(self, message: str) -> None:
        if len(message) > MAX_MESSAGE:
            message = message[: MAX_MESSAGE - 15] + " ... (truncated)"
        super().__init__(message)


MAX_MESSAGE = 600  # characters of a ConfigError
MAX_SHOWN = 60  # characters of a value quoted in an error
MAX_FILE_BYTES = 64 * 1024  # a config file is a few hundred bytes; config.example.yaml ~3 KiB
MAX_DEPTH = 8  # nesting of mappings and lists (the deepest key is policy.<param>: 2)


def shown(value: object, limit: int = MAX_SHOWN) -> str:
    """`repr(value)`, cut to `limit` characters: errors quote what was given,
    but never all of a 60 KiB string."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 12]}... ({len(text)} chars)"


# A bare K/M/G/T (and Ki/Mi/...) is binary, as systemd reads `60G`; only an
# explicit "B" after the letter (`10GB`) is decimal.
_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([KMGT](?:i?B|i)?|B)?\s*", re.IGNORECASE)
_UNITS = {
    "b": 1, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
    "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40,
    "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40,
    "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
}  # fmt: skip
SIZE_HINT = "a size such as 60G, 500M, 8GiB (binary), 10GB (decimal) or a byte count"
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?\s*")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|d|h|m|s)")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_size(value: object) -> int:
    """Bytes from an int or a string such as `60G`, `500M`, `8GiB`, `1.5GB`, `4096`.

    K, M, G, T alone or with `i`/`iB` are powers of 1024 (as systemd reads
    them); `KB`, `MB`, `GB`, `TB` are powers of 1000."""
    if isinstance(value, bool):
        raise ValueError(f"expected {SIZE_HINT}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if isinstance(value, str) and (m := _SIZE.fullmatch(value)):
        # Decimal, not float: "2.01KB" is 2010 bytes, not 2009.
        exact = Decimal(m.group(1)) * _UNITS[(m.group(2) or "b").lower()]
        if exact != exact.to_integral_value() and exact < 1024:
            # "0.4B" is no size: say so rather than round it to 0 (or 1.5B to 1).
            raise ValueError(f"{shown(value)} is not a whole number of bytes")
        return int(exact)
    raise ValueError(f"expected {SIZE_HINT}, got {shown(value)}")


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as `120s`, `5m`, `6h`, `7d`,
    `1d2h30m` (the config's durations and the simulator's workloads)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 120s, 5m, 6h or seconds")
    if isinstance(value, int | float):
        if value < 0 or not math.isfinite(value):
            raise ValueError("a duration must be a finite number >= 0")
        return float(value)
    if isinstance(value, str) and (m := _DURATION.fullmatch(value)):
        return float(m.group(1)) * _SECONDS[m.group(2) or "s"]
    if isinstance(value, str):  # several parts: 1d2h, 1h 30m
        compact = value.replace(" ", "")
        parts = _DURATION_PART.findall(compact)
        if parts and "".join(n + u for n, u in parts) == compact:
            return sum(float(n) * _SECONDS[u] for n, u in parts)
    raise ValueError(f"expected a duration such as 120s, 5m, 6h or seconds, got {shown(value)}")


def parse_engine_budget(value: object) -> int:
    """Bytes of an `engine_budget` (config key or `--engine-budget`): a bare
    number is MiB, as ds4-server's --kv-disk-space-mb takes it (copied as
    is); a size with a unit (`4GiB`, `4096MiB`) is also accepted. Not 0: the
    engine then never evicts (leave engine_budget out instead)."""
    if isinstance(value, bool):
        raise ValueError("expected MiB as ds4-server's --kv-disk-space-mb takes, or a size "
                         "such as 4GiB")  # fmt: skip
    if isinstance(value, str) and re.fullmatch(r"\s*[0-9]+(?:\.[0-9]+)?\s*", value):
        value = Decimal(value.strip())
    if isinstance(value, int | float | Decimal):
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"expected a number of MiB >= 0, got {shown(value)}")
        n = int(Decimal(value) * MiB)
    else:
        n = parse_size(value)
    if n <= 0:
        raise ValueError("0 means the engine never evicts: leave engine_budget out instead")
    return n


def format_size(n: float) -> str:
    """Human size, binary units: 291.8 MiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


TRACE_MAX_SIZE = 256 * 2**20  # all of a trace's files together, by default
TRACE_SEGMENTS = 4  # files a trace rotates through (the current one included)
TRACE_DEFAULT_PATH = Path("trace.jsonl")  # `trace: true`: in the state directory


@dataclass(frozen=True, slots=True)
class TraceSettings:
    """The `trace:` block: where the daemon records the cache's activity
    (daemon/trace.py) and how much of it it keeps."""

    path: Path  # a relative path is under kvgroomd's state directory ($STATE_DIRECTORY)
    max_size: int = TRACE_MAX_SIZE  # bytes, every segment together
    segments: int = TRACE_SEGMENTS  # path, path.1, ..., path.<segments - 1>


@dataclass(frozen=True, slots=True)
class Config:
    """Everything kvgroomd can be told. See config.example.yaml."""

    cache_dir: Path
    budget: int | None = None  # bytes; None: no budget eviction
    # The engine's --kv-disk-space-mb, in bytes (None: not given).
    engine_budget: int | None = None
    # The engine's other cache flags (format/engine.py), the `engine:` block.
    engine: EngineOptions = field(default_factory=EngineOptions)
    # Snapshots of layouts the named engine does not read: counted and
    # evicted like its own (True), or reported apart and left alone.
    evict_other_layouts: bool = False
    low_watermark: float = 0.9
    protect_new: float = 0.0  # seconds (0: the value alone decides; core/evict.py)
    policy: str = DEFAULT_POLICY
    policy_params: Mapping[str, float] = field(default_factory=dict)
    supersede: bool = True
    reconcile_interval: float = 300.0  # seconds
    dry_run: bool = False
    log_format: str = "auto"  # auto | json | console
    log_level: str = "info"
    orphan_temps: bool = False
    orphan_temp_age: float = 3600.0
    stale_format: bool = False
    metrics_textfile: Path | None = None
    metrics_listen: str | None = None  # "127.0.0.1:9101"
    trace: TraceSettings | None = None  # the activity trace; None: off
    # What the file says that still works but should change (a moved key):
    # check-config prints these, the daemon logs them at start.
    warnings: tuple[str, ...] = ()

    @property
    def reading(self) -> Reading:
        """How to read the directory's files: the engine's layout (format/layouts.py)."""
        return Reading(self.engine.layout, self.evict_other_layouts)

    @property
    def reject_different_quant(self) -> bool:
        """The engine runs with --kv-cache-reject-different-quant (`engine:` block)."""
        return self.engine.reject_different_quant

    def rules(self) -> Rules:
        """What the decision core needs of this config."""
        return Rules(
            supersede=self.supersede, strict_quant=self.reject_different_quant,
            budget=self.budget, engine_budget=self.engine_budget,
            low_watermark=self.low_watermark, protect_new=self.protect_new, policy=self.policy,
            policy_params=self._policy_params(), dry_run=self.dry_run,
            orphan_temps=self.orphan_temps, orphan_temp_age=self.orphan_temp_age,
            stale_format=self.stale_format, cold_max_tokens=self.engine.cold_max_tokens,
            prefixes=self.trace is not None,
        )  # fmt: skip

    def _policy_params(self) -> dict[str, float]:
        """The policy's parameters; one that mirrors an engine option (the
        tokens over which a hit consumes a file) follows the `engine:` block
        unless the policy block sets it."""
        params = dict(self.policy_params)
        if "consume_tokens" in POLICIES[self.policy].defaults:
            params.setdefault("consume_tokens", float(self.engine.cold_max_tokens))
        return params

    def effective(self) -> dict[str, Any]:
        """The config as plain data, for `check-config` and the start-up log."""
        out = asdict(self)
        del out["warnings"]
        out["cache_dir"] = str(self.cache_dir)
        out["metrics_textfile"] = str(self.metrics_textfile) if self.metrics_textfile else None
        if self.trace is not None:
            out["trace"] = {**out["trace"], "path": str(self.trace.path)}
        out["policy_params"] = {**POLICIES[self.policy].defaults, **self._policy_params()}
        return out

    def with_overrides(self, **changes: Any) -> Config:
        """A copy with CLI overrides applied (None means "not given")."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _bool(v: object) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {shown(v)}")
    return v


def _fraction(v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 1:
        raise ValueError(f"expected a number in (0, 1], got {shown(v)}")
    return float(v)


def _positive_duration(v: object) -> float:
    seconds = parse_duration(v)
    if seconds <= 0:
        raise ValueError("must be more than 0")
    return seconds


def _optional(parse: Callable[[object], Any]) -> Callable[[object], Any]:
    return lambda v: None if v is None else parse(v)


def _choice(*options: str) -> Callable[[object], str]:
    def check(v: object) -> str:
        if v not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {shown(v)}")
        return str(v)

    return check


def _path(v: object) -> Path:
    if not isinstance(v, str) or not v:
        raise ValueError(f"expected a path, got {shown(v)}")
    if "\0" in v:
        raise ValueError("a path cannot contain a NUL character")
    return Path(v).expanduser()


def _listen(v: object) -> str:
    # A bare port (9101 or ":9101") binds to loopback: metrics are not for the world.
    if isinstance(v, int) and not isinstance(v, bool):
        v = f":{v}"
    if isinstance(v, str) and re.fullmatch(r":?[0-9]{1,5}", v):
        v = f"127.0.0.1:{v.lstrip(':')}"
    if not isinstance(v, str) or not re.fullmatch(r"\[?[0-9A-Za-z.:]+\]?:[0-9]{1,5}", v):
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:9101, got {shown(v)}")
    if int(v.rpartition(":")[2]) > 65535:
        raise ValueError(f"port out of range in {shown(v)}")
    return v


def _budget(v: object) -> int:
    n = parse_size(v)
    if n == 0:
        raise ValueError("0 bytes would evict every snapshot: give a size such as 60GiB, "
                         "or leave budget out (or null) for no budget eviction")  # fmt: skip
    return n


# Directories no cache can be: the engine's files never belong there, and a
# typo (or a variable that expanded to nothing) must not point kvgroomd at
# them. `_SYSTEM_TREES` are refused with everything under them.
_SYSTEM_DIRS = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
    "/media", "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp",
    "/usr", "/var", "/var/cache", "/var/lib", "/var/log", "/var/tmp", "/var/spool",
    "/var/mail", "/var/run", "/var/lock",
})  # fmt: skip
_SYSTEM_TREES = ("/proc", "/sys", "/dev", "/etc", "/boot", "/bin", "/sbin", "/lib", "/lib32",
                 "/lib64", "/libx32", "/usr/bin", "/usr/sbin", "/usr/lib", "/usr/include",
                 "/usr/share")  # fmt: skip


def _homes() -> set[str]:
    """Every user's home directory, and $HOME."""
    out = {os.path.normpath(h) for h in (os.environ.get("HOME"),) if h}
    with contextlib.suppress(OSError):
        out.update(os.path.normpath(p.pw_dir) for p in pwd.getpwall() if p.pw_dir)
    return out


def implausible_cache_dir(path: Path) -> str | None:
    """Why `path` cannot be a KV-cache directory (a system or home directory),
    or None. Checked as written and with symlinks resolved."""
    forms = {os.path.normpath(os.path.abspath(path))}
    with contextlib.suppress(OSError, ValueError):
        forms.add(os.path.realpath(path))
    homes = _homes()
    for p in sorted(forms):
        if p in _SYSTEM_DIRS:
            return f"{p} is a system directory, not a KV-cache directory"
        if any(p == t or p.startswith(t + "/") for t in _SYSTEM_TREES):
            return f"{p} is inside a system directory, not a KV-cache directory"
        if p in homes:
            return f"{p} is a home directory, not a KV-cache directory"
    return None


def _cache_dir(v: object) -> Path:
    path = Path(os.path.abspath(_path(v)))
    if why := implausible_cache_dir(path):
        raise ValueError(f"{why}: give the directory ds4-server was started with "
                         "(--kv-disk-dir)")  # fmt: skip
    return path


def _count(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"expected a whole number >= 0, got {shown(v)}")
    return v


def _ratio(v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not (math.isfinite(v) and v >= 1):
        raise ValueError(f"expected a number >= 1 (raw size / compressed size), got {shown(v)}")
    return float(v)


def _fine_size(v: object) -> float:
    """A size that may be fractional bytes (a per-token average: 13.45KiB)."""
    if isinstance(v, float) and not isinstance(v, bool) and math.isfinite(v) and v > 0:
        return v
    if isinstance(v, str) and (m := _SIZE.fullmatch(v)):
        n = float(Decimal(m.group(1)) * _UNITS[(m.group(2) or "b").lower()])
    else:
        n = float(parse_size(v))
    if n <= 0:
        raise ValueError("must be more than 0")
    return n


# key -> (Config field, parser). Nested blocks use "block.key"; a field
# "engine.X" is EngineOptions.X (format/engine.py).
_FIELDS: dict[str, tuple[str, Callable[[object], Any]]] = {
    "cache_dir": ("cache_dir", _cache_dir),
    "budget": ("budget", _optional(_budget)),
    "engine_budget": ("engine_budget", _optional(parse_engine_budget)),
    "evict_other_layouts": ("evict_other_layouts", _bool),
    "low_watermark": ("low_watermark", _fraction),
    "protect_new": ("protect_new", parse_duration),
    "supersede": ("supersede", _bool),
    "reconcile_interval": ("reconcile_interval", _positive_duration),
    "dry_run": ("dry_run", _bool),
    "log.format": ("log_format", _choice("auto", "json", "console")),
    "log.level": ("log_level", _choice("debug", "info", "warning", "error")),
    "cleanup.orphan_temps": ("orphan_temps", _bool),
    "cleanup.orphan_temp_age": ("orphan_temp_age", parse_duration),
    "cleanup.stale_format": ("stale_format", _bool),
    "metrics.textfile": ("metrics_textfile", _optional(_path)),
    "metrics.listen": ("metrics_listen", _optional(_listen)),
    "engine.layout": ("engine.layout", _choice(DETECT, *ENGINE_LAYOUTS)),
    "engine.continued_interval": ("engine.continued_interval", _count),
    "engine.boundary_align": ("engine.boundary_align", _count),
    "engine.boundary_trim": ("engine.boundary_trim", _count),
    "engine.min_tokens": ("engine.min_tokens", _count),
    "engine.cold_max_tokens": ("engine.cold_max_tokens", _count),
    "engine.compression": ("engine.compression", _bool),
    "engine.compression_ratio": ("engine.compression_ratio", _ratio),
    "engine.snapshot_overhead": ("engine.snapshot_overhead", parse_size),
    "engine.token_bytes": ("engine.token_bytes", _fine_size),
    "engine.reject_different_quant": ("engine.reject_different_quant", _bool),
}
_BLOCKS = {"log", "cleanup", "metrics", "engine"}
# Keys that moved: old key -> new key. The old one still works, with a warning.
_MOVED = {"reject_different_quant": "engine.reject_different_quant"}


class _Reader:
    """Walks the YAML node tree so every value keeps its line number."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.loader = yaml.SafeLoader(text)
        self.loader.name = source  # marks in YAML errors name the file, not "<unicode string>"

    def error(self, node: yaml.Node | yaml.Event | None, key: str, msg: str) -> ConfigError:
        mark = node.start_mark if node is not None else None
        where = f"{self.source}:{mark.line + 1}" if mark is not None else self.source
        key = key if len(key) <= MAX_SHOWN else shown(key)
        return ConfigError(f"{where}: {key}: {msg}" if key else f"{where}: {msg}")

    def mapping(self, node: yaml.Node, key: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, key, "expected a mapping of key: value")
        items, seen = [], set()
        for k, v in node.value:
            name = self.value(k, key)
            if not isinstance(name, str):
                raise self.error(k, key, f"keys must be words, got {shown(name)}")
            if name in seen:
                raise self.error(k, f"{key}.{name}" if key else name, "given twice")
            seen.add(name)
            items.append((name, k, v))
        return items

    def value(self, node: yaml.Node, key: str) -> object:
        # Unknown tags (`!foo`) and bad tagged scalars (`!!int x`) fail here.
        try:
            return self.loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError) as e:
            problem = getattr(e, "problem", None) or str(e)
            raise self.error(node, key, f"not valid YAML: {problem}") from None


def _plain(r: _Reader, text: str) -> None:
    """Refuse what a config file has no use for, before anything is built.

    Anchors and aliases (`&a`, `*a`) are how a few hundred bytes expand to
    gigabytes (the "billion laughs"); deep nesting is how a small file
    exhausts the recursion of YAML's composer. The parser's event stream is
    read in linear time, and nothing is constructed from it."""
    depth = 0
    events = yaml.SafeLoader(text)
    events.name = r.source
    try:
        while events.check_event():
            ev = events.get_event()  # type: ignore[no-untyped-call]
            if isinstance(ev, yaml.AliasEvent) or getattr(ev, "anchor", None) is not None:
                raise r.error(ev, "", "anchors and aliases (&name, *name) are not allowed "
                              "in a config file: write each value out")  # fmt: skip
            if isinstance(ev, yaml.CollectionStartEvent):
                depth += 1
                if depth > MAX_DEPTH:
                    raise r.error(ev, "", f"nested more than {MAX_DEPTH} levels deep")
            elif isinstance(ev, yaml.CollectionEndEvent):
                depth -= 1
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{r.source}:{mark.line + 1}" if mark is not None else r.source
        raise ConfigError(f"{where}: not valid YAML: {e}") from None
    finally:
        events.dispose()


def parse_config(text: str, source: str = "<config>") -> Config:
    """Parse YAML text into a Config, or raise ConfigError naming key and line."""
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(f"{source}: {len(text)} characters: a config file is at most "
                          f"{MAX_FILE_BYTES // 1024} KiB")  # fmt: skip
    r = _Reader(text, source)
    _plain(r, text)
    try:
        root = r.loader.get_single_node()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError(f"{where}: not valid YAML: {e}") from None
    if root is None:
        raise ConfigError(f"{source}: empty config: cache_dir is required")
    values: dict[str, Any] = {}
    engine: dict[str, Any] = {}
    nodes: dict[str, yaml.Node] = {}  # key -> its value's node, for errors across keys
    warnings: list[str] = []
    special: dict[str, tuple[yaml.Node, yaml.Node]] = {}  # policy:, trace: (their own shapes)
    for name, knode, vnode in r.mapping(root, ""):
        if name in ("policy", "trace"):
            special[name] = (knode, vnode)
            continue
        pairs = (
            [(f"{name}.{sub}", k, v) for sub, k, v in r.mapping(vnode, name)]
            if name in _BLOCKS
            else [(name, knode, vnode)]
        )
        for key, k, v in pairs:
            key, parsed = _entry(r, key, k, v, nodes=nodes, warnings=warnings)  # noqa: PLW2901 - a moved key
            if key.startswith("engine."):
                engine[key.removeprefix("engine.")] = parsed
            else:
                values[_FIELDS[key][0]] = parsed
    if "cache_dir" not in values:
        raise r.error(root, "cache_dir", "required: the ds4 --kv-disk-dir to groom")
    if "policy" in special:
        values["policy"], values["policy_params"] = _policy(r, *special["policy"])
    if "trace" in special:
        values["trace"] = _trace(r, special["trace"][1], values["cache_dir"])
    layout = engine.get("layout", DETECT)
    if engine.get("compression") and layout not in (DETECT, *COMPRESSING_LAYOUTS):
        raise r.error(nodes["engine.compression"], "engine.compression",
                      f"the {layout} layout does not compress (compressing layouts: "
                      f"{', '.join(COMPRESSING_LAYOUTS)})")  # fmt: skip
    return Config(**values, engine=EngineOptions(**engine), warnings=tuple(warnings))


def _entry(r: _Reader, key: str, k: yaml.Node, v: yaml.Node, *, nodes: dict[str, yaml.Node],
           warnings: list[str]) -> tuple[str, Any]:  # fmt: skip
    """(key, parsed value) of one `key: value`; a moved key is read as its
    new name, with a warning. `nodes` remembers each key's value node."""
    if key in _MOVED:
        new = _MOVED[key]
        if new in nodes:
            raise r.error(k, key, f"given twice: as {key} and as {new}")
        warnings.append(f"{r.source}:{k.start_mark.line + 1}: {key}: deprecated, now {new} "
                        "(still read, for now)")  # fmt: skip
        key = new
    elif key in nodes:  # the new name after the old one
        old = next(o for o, n in _MOVED.items() if n == key)
        raise r.error(k, key, f"given twice: as {old} and as {key}")
    if key not in _FIELDS:
        known = ", ".join(sorted({*(_FIELDS), "policy", "trace"}))
        raise r.error(k, key, f"unknown key (known: {known})")
    raw = r.value(v, key)
    try:
        parsed = _FIELDS[key][1](raw)
    except ValueError as e:
        raise r.error(v, key, str(e)) from None
    nodes[key] = v
    return key, parsed


# Policy parameters of earlier releases, and what replaced them. Their units
# changed (wall seconds -> turnovers of the cache's own activity clock), so an
# old value cannot be carried over: the error says what to write instead.
RETIRED_PARAMS = {"idle_half_life": "idle_half_turnovers", "hit_half_life": "hit_half_turnovers"}


def _retired(key: str, defaults: Mapping[str, float]) -> str:
    new = RETIRED_PARAMS[key]
    return (f"was measured in wall-clock time; the policy now measures idleness in turnovers "
            f"of the cache itself (bytes landed / bytes held), so the same traffic gets the "
            f"same decisions at any pace. Remove it, or set {new} (default {defaults[new]:g}); "
            f"docs/policy.md explains the parameters")  # fmt: skip


def _policy(r: _Reader, knode: yaml.Node, vnode: yaml.Node) -> tuple[str, dict[str, float]]:
    """`policy: NAME` or `policy: {name: NAME, <param>: value, ...}`."""
    if isinstance(vnode, yaml.ScalarNode):
        items: list[tuple[str, yaml.Node, yaml.Node]] = [("name", knode, vnode)]
    else:
        items = r.mapping(vnode, "policy")
    raw = {k: (kn, v) for k, kn, v in items}
    name_node = raw.pop("name", None)
    name = r.value(name_node[1], "policy.name") if name_node else DEFAULT_POLICY
    if name not in POLICIES:
        node = name_node[1] if name_node else vnode
        known = ", ".join(POLICIES)
        raise r.error(node, "policy.name", f"unknown policy {shown(name)} (known: {known})")
    defaults = POLICIES[str(name)].defaults
    params: dict[str, float] = {}
    for key, (kn, v) in raw.items():
        if key not in defaults and RETIRED_PARAMS.get(key) in defaults:
            raise r.error(kn, f"policy.{key}", _retired(key, defaults))
        if key not in defaults:
            known = ", ".join(defaults) or "none"
            raise r.error(kn, f"policy.{key}", f"not a parameter of {shown(name)} (known: {known})")
        raw_value = r.value(v, f"policy.{key}")
        try:
            params[key] = parse_duration(raw_value)
        except ValueError as e:
            raise r.error(v, f"policy.{key}", str(e)) from None
    return str(name), params


def _trace(r: _Reader, node: yaml.Node, cache_dir: Path) -> TraceSettings | None:
    """`trace: PATH`, `trace: true` (trace.jsonl in the state directory),
    `trace: false`/null (off), or `trace: {path: PATH, max_size: SIZE, segments: N}`.
    Never inside the cache directory."""
    settings = _trace_settings(r, node)
    if settings is not None and (why := trace_inside(settings.path, cache_dir)):
        key = "trace"
        if isinstance(node, yaml.MappingNode):
            key, node = "trace.path", next((v for k, v in node.value if k.value == "path"), node)
        raise r.error(node, key, why)
    return settings


def _trace_settings(r: _Reader, node: yaml.Node) -> TraceSettings | None:
    if isinstance(node, yaml.ScalarNode):
        v = r.value(node, "trace")
        if v is None or v is False:
            return None
        if v is True:
            return TraceSettings(TRACE_DEFAULT_PATH)
        try:
            return TraceSettings(_path(v))
        except ValueError as e:
            raise r.error(node, "trace", f"{e} (or true, or a block with path:)") from None
    settings: dict[str, Any] = {}
    parsers: dict[str, Callable[[object], Any]] = {
        "path": _optional(_path), "max_size": _trace_size, "segments": _segments}  # fmt: skip
    for key, k, v in r.mapping(node, "trace"):
        if key not in parsers:
            raise r.error(k, f"trace.{key}", f"unknown key (known: {', '.join(parsers)})")
        try:
            settings[key] = parsers[key](r.value(v, f"trace.{key}"))
        except ValueError as e:
            raise r.error(v, f"trace.{key}", str(e)) from None
    if "path" not in settings:
        raise r.error(node, "trace.path", "required in a trace: block (e.g. trace.jsonl, "
                      "which goes in kvgroomd's state directory; null: no trace)")  # fmt: skip
    return None if settings["path"] is None else TraceSettings(**settings)


def _trace_size(v: object) -> int:
    n = parse_size(v)
    if n < 2**20:
        raise ValueError("at least 1MiB: a trace's files start with the whole directory's state")
    return n


def _segments(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 2 <= v <= 100:
        raise ValueError(f"expected a whole number of files from 2 to 100, got {shown(v)}")
    return v


def trace_inside(trace: Path, cache_dir: Path) -> str | None:
    """Why a trace cannot be written at `trace` (inside the cache directory,
    among the engine's files), or None. A relative trace path is under the
    state directory, checked when the daemon opens it (daemon/trace.py)."""
    if not trace.is_absolute():
        return None
    forms = {os.path.normpath(trace)}
    with contextlib.suppress(OSError, ValueError):
        forms.add(os.path.realpath(trace))
    dirs = {os.path.normpath(cache_dir)}
    with contextlib.suppress(OSError, ValueError):
        dirs.add(os.path.realpath(cache_dir))
    for t in forms:
        for d in dirs:
            if t == d or t.startswith(d.rstrip("/") + "/"):
                return (f"{trace} is inside cache_dir {cache_dir}: kvgroomd writes nothing "
                        "among the engine's files; give a path in its state directory (a "
                        "relative path such as trace.jsonl goes there)")  # fmt: skip
    return None


def with_setting(config: Config, key: str, raw: str) -> Config:
    """`config` with one key set as the config file would set it (`kvgroomd
    simulate --set KEY=VALUE`): `budget`, `engine_budget`, `policy`,
    `policy.<param>`, `engine.<flag>`, `low_watermark`, ... Raises
    ConfigError naming the key."""
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    try:
        if key in ("policy", "policy.name"):
            if value not in POLICIES:
                raise ValueError(f"unknown policy {shown(value)} (known: {', '.join(POLICIES)})")
            same = value == config.policy
            return replace(config, policy=str(value),
                           policy_params=config.policy_params if same else {})  # fmt: skip
        if key.startswith("policy."):
            param = key.removeprefix("policy.")
            defaults = POLICIES[config.policy].defaults
            if param not in defaults:
                known = ", ".join(defaults) or "none"
                raise ValueError(f"not a parameter of {config.policy!r} (known: {known})")
            return replace(config, policy_params={**config.policy_params,
                                                  param: parse_duration(value)})  # fmt: skip
        if key not in _FIELDS or key in ("cache_dir", "log.format", "log.level"):
            raise ValueError("not a key a replay can change (budget, engine_budget, policy, "
                             "policy.<param>, engine.<flag>, low_watermark, protect_new, "
                             "supersede, reconcile_interval, dry_run)")  # fmt: skip
        name, parse = _FIELDS[key]
        parsed = parse(value)
        if name.startswith("engine."):
            return replace(config, engine=replace(config.engine,
                                                  **{name.removeprefix("engine."): parsed}))
        return replace(config, **{name: parsed})
    except ValueError as e:
        raise ConfigError(f"--set {key}={raw}: {e}") from None


def read_config_text(path: Path) -> str:
    """A config file's text: a regular file of at most MAX_FILE_BYTES, opened
    without blocking (a FIFO or a device named as the config must not hang a
    start or a SIGHUP reload) and read in one bounded read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise ConfigError(f"{path}: {st.st_size} bytes: a config file is at most "
                              f"{MAX_FILE_BYTES // 1024} KiB")  # fmt: skip
        raw = os.read(fd, MAX_FILE_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    finally:
        os.close(fd)
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"{path}: a config file is at most {MAX_FILE_BYTES // 1024} KiB")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None


def check_values(config: Config) -> Config:
    """The checks a config file gets, for values given on the command line
    (`--cache-dir`, `--budget`), and that cache_dir is not a symlink (`run`
    and `groom` only): raise ConfigError for an implausible one."""
    if why := implausible_cache_dir(config.cache_dir):
        raise ConfigError(f"--cache-dir: {why}")
    if config.cache_dir.is_symlink():
        # kvgroomd opens the directory itself (O_NOFOLLOW) and never acts
        # through a symlink, which could be pointed elsewhere at any time.
        raise ConfigError(f"cache_dir: {config.cache_dir} is a symlink (to "
                          f"{shown(os.readlink(config.cache_dir), 300)}): give the directory "
                          "itself")  # fmt: skip
    if config.budget == 0:
        raise ConfigError("--budget: 0 bytes would evict every snapshot; leave it out for "
                          "no budget eviction")  # fmt: skip
    if config.trace is not None and (why := trace_inside(config.trace.path, config.cache_dir)):
        raise ConfigError(f"trace.path: {why}")
    return config


def load_config(path: Path | str) -> Config:
    """Read and parse a config file."""
    p = Path(path)
    return parse_config(read_config_text(p), str(p))
