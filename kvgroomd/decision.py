"""Decision: the functional core's only output, and what `unlink.py` acts on.

A decision names a file, why it should go, and the fingerprint of the file the
policy looked at. The deleter re-checks that fingerprint right before the
unlink, so a file the engine touched, truncated or replaced since is spared
(redis evict.c calls such stale pool entries "ghosts").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Cause(StrEnum):
    """Why a file is unlinked: the log's `cause` and the metrics label."""

    SUPERSEDED = "superseded"
    BUDGET = "budget"
    ORPHAN_TEMP = "orphan_temps"
    STALE_FORMAT = "stale_format"


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """Identity of one version of a file: device, inode, size, mtime."""

    dev: int
    ino: int
    size: int
    mtime_ns: int


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
