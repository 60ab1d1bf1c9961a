"""The value of each config key, checked: each parser takes what YAML
gave and returns the value or raises ValueError saying what was expected
(parse.py adds the file, line and key). Includes what no cache directory
can be (a system or home directory) and where no trace may go."""

from __future__ import annotations

import contextlib
import math
import os
import pwd
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kvgroomd.config.errors import shown
from kvgroomd.config.units import parse_duration, parse_size


def boolean(v: object) -> bool:
    if not isinstance(v, bool):
        raise ValueError(f"expected true or false, got {shown(v)}")
    return v


def fraction(v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 1:
        raise ValueError(f"expected a number in (0, 1], got {shown(v)}")
    return float(v)


def positive_duration(v: object) -> float:
    seconds = parse_duration(v)
    if seconds <= 0:
        raise ValueError("must be more than 0")
    return seconds


def optional(parse: Callable[[object], Any]) -> Callable[[object], Any]:
    return lambda v: None if v is None else parse(v)


def choice(*options: str) -> Callable[[object], str]:
    def check(v: object) -> str:
        if v not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {shown(v)}")
        return str(v)

    return check


def path_value(v: object) -> Path:
    if not isinstance(v, str) or not v:
        raise ValueError(f"expected a path, got {shown(v)}")
    if "\0" in v:
        raise ValueError("a path cannot contain a NUL character")
    return Path(v).expanduser()


def listen_address(v: object) -> str:
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


def budget_size(v: object) -> int:
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


def cache_dir_path(v: object) -> Path:
    path = Path(os.path.abspath(path_value(v)))
    if why := implausible_cache_dir(path):
        raise ValueError(f"{why}: give the directory ds4-server was started with "
                         "(--kv-disk-dir)")  # fmt: skip
    return path


def count(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"expected a whole number >= 0, got {shown(v)}")
    return v


def ratio(v: object) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not (math.isfinite(v) and v >= 1):
        raise ValueError(f"expected a number >= 1 (raw size / compressed size), got {shown(v)}")
    return float(v)


def trace_size(v: object) -> int:
    n = parse_size(v)
    if n < 2**20:
        raise ValueError("at least 1MiB: a trace's files start with the whole directory's state")
    return n


def segments(v: object) -> int:
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

