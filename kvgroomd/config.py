"""Configuration: YAML file -> frozen Config. Defaults live only here.

Shell. Every error names the key and the line it is on, so an operator who
mistypes `budgt:` in a 40-line file is pointed at it rather than at a stack
trace. `kvgroomd check-config FILE` prints the effective result.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from kvgroomd.core.scoring import DEFAULT_POLICY, POLICIES


class ConfigError(ValueError):
    """A config problem, with the file, line and key it concerns."""


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
        return int(Decimal(m.group(1)) * _UNITS[(m.group(2) or "b").lower()])
    raise ValueError(f"expected {SIZE_HINT}, got {value!r}")


def parse_duration(value: object) -> float:
    """Seconds from a number or a string such as `120s`, `5m`, `6h`, `7d`."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 120s, 5m, 6h or seconds")
    if isinstance(value, int | float):
        if value < 0 or not math.isfinite(value):
            raise ValueError("a duration must be a finite number >= 0")
        return float(value)
    if isinstance(value, str) and (m := _DURATION.fullmatch(value)):
        return float(m.group(1)) * _SECONDS[m.group(2) or "s"]
    raise ValueError(f"expected a duration such as 120s, 5m, 6h or seconds, got {value!r}")


def format_size(n: float) -> str:
    """Human size, binary units: 291.8 MiB."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@dataclass(frozen=True, slots=True)
class Config:
    """Everything kvgroomd can be told. See config.example.yaml."""

    cache_dir: Path
    budget: int | None = None  # bytes; None: no budget eviction
    low_watermark: float = 0.9
    protect_new: float = 120.0  # seconds
    policy: str = DEFAULT_POLICY
    policy_params: Mapping[str, float] = field(default_factory=dict)
    supersede: bool = True
    reject_different_quant: bool = False
    reconcile_interval: float = 300.0  # seconds
    dry_run: bool = False
    log_format: str = "auto"  # auto | json | console
    log_level: str = "info"
    orphan_temps: bool = False
    orphan_temp_age: float = 3600.0
    stale_format: bool = False
    metrics_textfile: Path | None = None
    metrics_listen: str | None = None  # "127.0.0.1:9101"

    def effective(self) -> dict[str, Any]:
        """The config as plain data, for `check-config` and the start-up log."""
        out = asdict(self)
        out["cache_dir"] = str(self.cache_dir)
        out["metrics_textfile"] = str(self.metrics_textfile) if self.metrics_textfile else None
        out["policy_params"] = {**POLICIES[self.policy].defaults, **self.policy_params}
        return out

    def with_overrides(self, **changes: Any) -> Config:
        """A copy with CLI overrides applied (None means "not given")."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})


def _bool(v: object) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {v!r}")
    return v


def _fraction(v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 1:
        raise ValueError(f"expected a number in (0, 1], got {v!r}")
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
            raise ValueError(f"expected one of {', '.join(options)}, got {v!r}")
        return str(v)

    return check


def _path(v: object) -> Path:
    if not isinstance(v, str) or not v:
        raise ValueError(f"expected a path, got {v!r}")
    return Path(v).expanduser()


def _listen(v: object) -> str:
    # A bare port (9101 or ":9101") binds to loopback: metrics are not for the world.
    if isinstance(v, int) and not isinstance(v, bool):
        v = f":{v}"
    if isinstance(v, str) and re.fullmatch(r":?[0-9]{1,5}", v):
        v = f"127.0.0.1:{v.lstrip(':')}"
    if not isinstance(v, str) or not re.fullmatch(r"\[?[0-9A-Za-z.:]+\]?:[0-9]{1,5}", v):
        raise ValueError(f"expected HOST:PORT such as 127.0.0.1:9101, got {v!r}")
    if int(v.rpartition(":")[2]) > 65535:
        raise ValueError(f"port out of range in {v!r}")
    return v


# key -> (Config field, parser). Nested blocks use "block.key".
_FIELDS: dict[str, tuple[str, Callable[[object], Any]]] = {
    "cache_dir": ("cache_dir", _path),
    "budget": ("budget", _optional(parse_size)),
    "low_watermark": ("low_watermark", _fraction),
    "protect_new": ("protect_new", parse_duration),
    "supersede": ("supersede", _bool),
    "reject_different_quant": ("reject_different_quant", _bool),
    "reconcile_interval": ("reconcile_interval", _positive_duration),
    "dry_run": ("dry_run", _bool),
    "log.format": ("log_format", _choice("auto", "json", "console")),
    "log.level": ("log_level", _choice("debug", "info", "warning", "error")),
    "cleanup.orphan_temps": ("orphan_temps", _bool),
    "cleanup.orphan_temp_age": ("orphan_temp_age", parse_duration),
    "cleanup.stale_format": ("stale_format", _bool),
    "metrics.textfile": ("metrics_textfile", _optional(_path)),
    "metrics.listen": ("metrics_listen", _optional(_listen)),
}
_BLOCKS = {"log", "cleanup", "metrics"}


class _Reader:
    """Walks the YAML node tree so every value keeps its line number."""

    def __init__(self, text: str, source: str) -> None:
        self.source = source
        self.loader = yaml.SafeLoader(text)
        self.loader.name = source  # marks in YAML errors name the file, not "<unicode string>"

    def error(self, node: yaml.Node | None, key: str, msg: str) -> ConfigError:
        where = f"{self.source}:{node.start_mark.line + 1}" if node else self.source
        return ConfigError(f"{where}: {key}: {msg}" if key else f"{where}: {msg}")

    def mapping(self, node: yaml.Node, key: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, key, "expected a mapping of key: value")
        items, seen = [], set()
        for k, v in node.value:
            name = self.value(k, key)
            if not isinstance(name, str):
                raise self.error(k, key, f"keys must be words, got {name!r}")
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


def parse_config(text: str, source: str = "<config>") -> Config:
    """Parse YAML text into a Config, or raise ConfigError naming key and line."""
    r = _Reader(text, source)
    try:
        root = r.loader.get_single_node()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError(f"{where}: not valid YAML: {e}") from None
    if root is None:
        raise ConfigError(f"{source}: empty config: cache_dir is required")
    values: dict[str, Any] = {}
    policy_node: tuple[yaml.Node, yaml.Node] | None = None
    for name, knode, vnode in r.mapping(root, ""):
        if name == "policy":
            policy_node = (knode, vnode)
            continue
        pairs = (
            [(f"{name}.{sub}", k, v) for sub, k, v in r.mapping(vnode, name)]
            if name in _BLOCKS
            else [(name, knode, vnode)]
        )
        for key, k, v in pairs:
            if key not in _FIELDS:
                known = ", ".join(sorted({*(_FIELDS), "policy"}))
                raise r.error(k, key, f"unknown key (known: {known})")
            attr, parse = _FIELDS[key]
            raw = r.value(v, key)
            try:
                values[attr] = parse(raw)
            except ValueError as e:
                raise r.error(v, key, str(e)) from None
    if "cache_dir" not in values:
        raise r.error(root, "cache_dir", "required: the ds4 --kv-disk-dir to groom")
    if policy_node:
        values["policy"], values["policy_params"] = _policy(r, *policy_node)
    return Config(**values)


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
        raise r.error(node, "policy.name", f"unknown policy {name!r} (known: {known})")
    defaults = POLICIES[str(name)].defaults
    params: dict[str, float] = {}
    for key, (kn, v) in raw.items():
        if key not in defaults:
            known = ", ".join(defaults) or "none"
            raise r.error(kn, f"policy.{key}", f"not a parameter of {name!r} (known: {known})")
        raw_value = r.value(v, f"policy.{key}")
        try:
            params[key] = parse_duration(raw_value)
        except ValueError as e:
            raise r.error(v, f"policy.{key}", str(e)) from None
    return str(name), params


def load_config(path: Path | str) -> Config:
    """Read and parse a config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{p}: cannot read: {e.strerror}") from None
    return parse_config(text, str(p))
