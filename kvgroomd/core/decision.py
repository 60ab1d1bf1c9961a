"""Decision: the functional core's only output, and what `daemon/apply.py` acts on.

A decision names a file, why it should go, and the fingerprint of the file the
policy looked at. The deleter re-checks that fingerprint right before the
unlink, so a file the engine touched, truncated or replaced since is spared
(redis evict.c calls such stale pool entries "ghosts").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import os


class Result(StrEnum):
    """What the deleter did with a decision (the core is told: `Groomer.settle`)."""

    UNLINKED = "unlinked"
    WOULD_UNLINK = "would_unlink"  # dry run
    GONE = "gone"  # someone (the engine) removed it first: normal
    CHANGED = "changed"  # touched, truncated or replaced since the decision
    REFUSED = "refused"  # not a name or kind of file we may delete
    FAILED = "failed"  # an OS error (permissions, ...)


class Cause(StrEnum):
    """Why a file is unlinked: the log's `cause` and the metrics label."""

    SUPERSEDED = "superseded"
    BUDGET = "budget"
    ORPHAN_TEMP = "orphan_temps"
    STALE_FORMAT = "stale_format"


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """Identity of one version of a file: device, inode, size, mtime.

    `mtime_ns` is kept as a signed 64-bit value (see `of`), as the index stores it.
    """

    dev: int
    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> Fingerprint:
        """The fingerprint of a stat result. An mtime past 2262 (or before 1678)
        overflows int64 nanoseconds; it wraps, so two mtimes 584 years apart
        look alike, which no file identity check needs to tell apart."""
        return cls(st.st_dev, st.st_ino, st.st_size, wrap_ns(st.st_mtime_ns))


def wrap_ns(ns: int) -> int:
    """Nanoseconds wrapped into int64, as the index stores them (see Fingerprint.of)."""
    return (ns + 2**63) % 2**64 - 2**63


@dataclass(frozen=True, slots=True)
class Decision:
    """Unlink `name` because of `cause`, if it is still the file seen as `seen`.

    `fields` carries the facts the log line reports (reason, tokens, score,
    superseded_by, ...); the deleter adds what only it knows (dir_bytes).
    """

    name: str
    cause: Cause
    seen: Fingerprint
    fields: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    # The 52 header bytes the policy judged, when it judged a snapshot. On
    # ext4 an unlinked inode number is soon reused, and mtime ticks are coarse,
    # so a same-name replacement can match the fingerprint: the header cannot.
    header: bytes | None = None
