"""A config file's text -> Config: every key, block and policy parameter,
moved and retired keys, and `simulate --set KEY=VALUE`; every error names
the file, the line and the key."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from kvgroomd.config.errors import ConfigError, shown
from kvgroomd.config.model import TRACE_DEFAULT_PATH, Config, TraceSettings
from kvgroomd.config.units import (
    parse_duration,
    parse_engine_budget,
    parse_fine_size,
    parse_size,
)  # fmt: skip
from kvgroomd.config.values import (
    boolean,
    budget_size,
    cache_dir_path,
    choice,
    count,
    fraction,
    implausible_cache_dir,
    listen_address,
    optional,
    path_value,
    positive_duration,
    ratio,
    segments,
    trace_inside,
    trace_size,
)  # fmt: skip
from kvgroomd.config.yamlfile import MAX_FILE_BYTES, NodeReader, read_config_text, refuse_unplain
from kvgroomd.core.scoring import DEFAULT_POLICY, POLICIES
from kvgroomd.format.engine import COMPRESSING_LAYOUTS, ENGINE_LAYOUTS, EngineOptions
from kvgroomd.format.layouts import DETECT

# key -> (Config field, parser). Nested blocks use "block.key"; a field
# "engine.X" is EngineOptions.X (format/engine.py).
_FIELDS: dict[str, tuple[str, Callable[[object], Any]]] = {
    "cache_dir": ("cache_dir", cache_dir_path),
    "budget": ("budget", optional(budget_size)),
    "engine_budget": ("engine_budget", optional(parse_engine_budget)),
    "evict_other_layouts": ("evict_other_layouts", boolean),
    "low_watermark": ("low_watermark", fraction),
    "protect_new": ("protect_new", parse_duration),
    "supersede": ("supersede", boolean),
    "reconcile_interval": ("reconcile_interval", positive_duration),
    "dry_run": ("dry_run", boolean),
    "log.format": ("log_format", choice("auto", "json", "console")),
    "log.level": ("log_level", choice("debug", "info", "warning", "error")),
    "cleanup.orphan_temps": ("orphan_temps", boolean),
    "cleanup.orphan_temp_age": ("orphan_temp_age", parse_duration),
    "cleanup.stale_format": ("stale_format", boolean),
    "metrics.textfile": ("metrics_textfile", optional(path_value)),
    "metrics.listen": ("metrics_listen", optional(listen_address)),
    "engine.layout": ("engine.layout", choice(DETECT, *ENGINE_LAYOUTS)),
    "engine.continued_interval": ("engine.continued_interval", count),
    "engine.boundary_align": ("engine.boundary_align", count),
    "engine.boundary_trim": ("engine.boundary_trim", count),
    "engine.min_tokens": ("engine.min_tokens", count),
    "engine.cold_max_tokens": ("engine.cold_max_tokens", count),
    "engine.compression": ("engine.compression", boolean),
    "engine.compression_ratio": ("engine.compression_ratio", ratio),
    "engine.snapshot_overhead": ("engine.snapshot_overhead", parse_size),
    "engine.token_bytes": ("engine.token_bytes", parse_fine_size),
    "engine.reject_different_quant": ("engine.reject_different_quant", boolean),
}
_BLOCKS = {"log", "cleanup", "metrics", "engine"}
# Keys that moved: old key -> new key. The old one still works, with a warning.
_MOVED = {"reject_different_quant": "engine.reject_different_quant"}

def parse_config(text: str, source: str = "<config>") -> Config:
    """Parse YAML text into a Config, or raise ConfigError naming key and line."""
    if len(text) > MAX_FILE_BYTES:
        raise ConfigError(f"{source}: {len(text)} characters: a config file is at most "
                          f"{MAX_FILE_BYTES // 1024} KiB")  # fmt: skip
    r = NodeReader(text, source)
    refuse_unplain(r, text)
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


def _entry(r: NodeReader, key: str, k: yaml.Node, v: yaml.Node, *, nodes: dict[str, yaml.Node],
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


def _policy(r: NodeReader, knode: yaml.Node, vnode: yaml.Node) -> tuple[str, dict[str, float]]:
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


def _trace(r: NodeReader, node: yaml.Node, cache_dir: Path) -> TraceSettings | None:
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


def _trace_settings(r: NodeReader, node: yaml.Node) -> TraceSettings | None:
    if isinstance(node, yaml.ScalarNode):
        v = r.value(node, "trace")
        if v is None or v is False:
            return None
        if v is True:
            return TraceSettings(TRACE_DEFAULT_PATH)
        try:
            return TraceSettings(path_value(v))
        except ValueError as e:
            raise r.error(node, "trace", f"{e} (or true, or a block with path:)") from None
    settings: dict[str, Any] = {}
    parsers: dict[str, Callable[[object], Any]] = {
        "path": optional(path_value), "max_size": trace_size, "segments": segments}  # fmt: skip
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
