"""Which names in the cache directory are whose (docs/format.md).

Pure. Only `<40 hex>.kv` is a snapshot kvgroomd may act on; a temp file is the
engine's work in progress; anything else (e.g. the agent's `sysprompt.kv`)
belongs to another tool and is never touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SNAPSHOT = re.compile(r"([0-9a-fA-F]{40})\.kv")
_TEMP = re.compile(r"([0-9a-fA-F]{40})\.kv\.tmp\.([0-9]+)")


@dataclass(frozen=True, slots=True)
class SnapshotName:
    """A finished snapshot: `<sha>.kv`. `sha` is lower-cased for comparisons."""

    name: str
    sha: str


@dataclass(frozen=True, slots=True)
class TempName:
    """A snapshot being written (or left by a crash) by process `pid`."""

    name: str
    sha: str
    pid: int


@dataclass(frozen=True, slots=True)
class ForeignName:
    """Another tool's file. Never indexed, never deleted."""

    name: str


Name = SnapshotName | TempName | ForeignName


def classify(name: str) -> Name:
    """Sort a directory entry's name into one of the three kinds."""
    if m := _SNAPSHOT.fullmatch(name):
        return SnapshotName(name, m.group(1).lower())
    if m := _TEMP.fullmatch(name):
        return TempName(name, m.group(1).lower(), int(m.group(2)))
    return ForeignName(name)


def is_snapshot_name(name: str) -> bool:
    """True for `<40 hex>.kv`, the only kind of name kvgroomd may unlink."""
    return _SNAPSHOT.fullmatch(name) is not None
