"""Sizes and durations as people write them in a config file or on the
command line: `60G`, `500MiB`, `10GB`, `120s`, `1d2h`, and the engine's
`--kv-disk-space-mb` (a bare number of MiB)."""

from __future__ import annotations

import math
import re
from decimal import Decimal

from kvgroomd.config.errors import shown
from kvgroomd.format.engine import MiB

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


def parse_fine_size(v: object) -> float:
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
