"""Configuration: a YAML file -> a frozen Config. Shell.

Every error names the file, the line and the key, so an operator who
mistypes `budgt:` in a 40-line file is pointed at it rather than at a stack
trace; `kvgroomd check-config FILE` prints the effective result.

    yamlfile.py  read the file safely, keep each value's line
    parse.py     keys, blocks, policy parameters, moved and retired keys
    values.py    each key's value checked (and what no cache_dir can be)
    units.py     sizes and durations as people write them
    model.py     Config itself, its defaults, and Rules for the core
    errors.py    ConfigError, bounded quoting
"""

from kvgroomd.config.errors import MAX_MESSAGE, MAX_SHOWN, ConfigError, shown
from kvgroomd.config.model import (
    TRACE_DEFAULT_PATH,
    TRACE_MAX_SIZE,
    TRACE_SEGMENTS,
    Config,
    TraceSettings,
)  # fmt: skip
from kvgroomd.config.parse import (
    RETIRED_PARAMS,
    check_values,
    load_config,
    parse_config,
    with_setting,
)  # fmt: skip
from kvgroomd.config.units import (
    SIZE_HINT,
    format_size,
    parse_duration,
    parse_engine_budget,
    parse_size,
)  # fmt: skip
from kvgroomd.config.values import implausible_cache_dir, trace_inside
from kvgroomd.config.yamlfile import MAX_DEPTH, MAX_FILE_BYTES, read_config_text

__all__ = [
    "MAX_DEPTH", "MAX_FILE_BYTES", "MAX_MESSAGE", "MAX_SHOWN", "RETIRED_PARAMS", "SIZE_HINT",
    "TRACE_DEFAULT_PATH", "TRACE_MAX_SIZE", "TRACE_SEGMENTS", "Config", "ConfigError",
    "TraceSettings", "check_values", "format_size", "implausible_cache_dir", "load_config",
    "parse_config", "parse_duration", "parse_engine_budget", "parse_size", "read_config_text",
    "shown", "trace_inside", "with_setting",
]  # fmt: skip
