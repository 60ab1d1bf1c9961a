"""The index: what kvgroomd believes is in the cache directory.

Pure. A cache of the directory that can always be rebuilt from a scan (the
engine itself re-reads every header on each store; ccache and friends shipped
counter-drift bugs by never rebuilding). Rows live in one numpy structured
array so that policies score 100,000 snapshots in one vectorised pass and an
entry costs a few hundred bytes, not a Python object graph.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np
import numpy.typing as npt

from kvgroomd.decision import Cause, Decision, Fingerprint
from kvgroomd.snapshot import Header, Reason

# Texts sharing a prefix chain share their first HEAD_BYTES; the index buckets
# by a hash of them so supersession looks only at plausible candidates.
HEAD_BYTES = 64
SHORT_HEAD = 0  # texts shorter than HEAD_BYTES: a bucket every lookup includes

ROW = np.dtype(
    [
        ("dev", "u8"),
        ("ino", "u8"),
        ("size", "i8"),  # st_size, as the engine counts it
        ("mtime_ns", "i8"),
        ("created_at", "u8"),  # u64 in the header: any value must fit
        ("last_used", "u8"),
        ("payload_bytes", "u8"),
        ("head", "u8"),
        ("tokens", "u4"),
        ("hits", "u4"),
        ("ctx_size", "u4"),
        ("text_bytes", "u4"),
        ("reason", "u1"),
        ("reason_code", "i2"),
        ("quant_bits", "u1"),
        ("model_id", "u1"),
        ("abi", "u1"),
        ("ext_flags", "u1"),
        # Text is a strict prefix of a compatible longer snapshot that still
        # exists (as last seen): it serves only prompts diverging in between.
        ("covered", "?"),
    ]
)
Columns = npt.NDArray[np.void]  # a view of ROW records, one per snapshot


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One indexed snapshot: its name, header, file identity and text head."""

    name: str
    sha: str
    header: Header
    seen: Fingerprint
    head: int = SHORT_HEAD
    covered: bool = False

    @property
    def size(self) -> int:
        """Bytes on disk (st_size), what budgets count."""
        return self.seen.size


def decide(s: Snapshot, cause: Cause, now: float, **extra: Any) -> Decision:
    """A decision to unlink `s`, with the facts every unlink log line reports."""
    h = s.header
    fields = {
        "sha": s.sha, "reason": h.reason.label, "tokens": h.tokens, "hits": h.hits,
        "size": s.size, "age_s": max(0, round(now - h.created_at)), **extra,
    }  # fmt: skip
    return Decision(s.name, cause, s.seen, fields, header=h.pack())


def head_key(text_head: bytes, text_bytes: int) -> int:
    """Bucket key of a text from its first HEAD_BYTES bytes (0: too short)."""
    if text_bytes < HEAD_BYTES or len(text_head) < HEAD_BYTES:
        return SHORT_HEAD
    digest = hashlib.blake2b(text_head[:HEAD_BYTES], digest_size=8).digest()
    return int.from_bytes(digest, "little") or 1


class Change(Enum):
    """What `Index.put` did."""

    ADDED = "added"
    UPDATED = "updated"  # same file, header or size rewritten in place
    REPLACED = "replaced"  # same name, another inode (engine rename/replace)
    UNCHANGED = "unchanged"


def _to_row(s: Snapshot) -> tuple[object, ...]:
    h = s.header
    return (
        s.seen.dev, s.seen.ino, s.seen.size, s.seen.mtime_ns,
        h.created_at, h.last_used, h.payload_bytes, s.head, h.tokens, h.hits,
        h.ctx_size, h.text_bytes, int(h.reason), h.reason_code, h.quant_bits,
        h.model_id, h.abi, h.ext_flags, s.covered,
    )  # fmt: skip


def _from_row(name: str, r: np.void) -> Snapshot:
    header = Header(
        quant_bits=int(r["quant_bits"]), reason=Reason(int(r["reason"])),
        ext_flags=int(r["ext_flags"]), model_id=int(r["model_id"]),
        tokens=int(r["tokens"]), hits=int(r["hits"]), ctx_size=int(r["ctx_size"]),
        abi=int(r["abi"]), created_at=int(r["created_at"]),
        last_used=int(r["last_used"]), payload_bytes=int(r["payload_bytes"]),
        text_bytes=int(r["text_bytes"]), reason_code=int(r["reason_code"]),
    )  # fmt: skip
    seen = Fingerprint(
        int(r["dev"]), int(r["ino"]), int(r["size"]), int(r["mtime_ns"])
    )
    return Snapshot(name, name[:40].lower(), header, seen, int(r["head"]), bool(r["covered"]))


class Index:
    """Snapshots by file name, stored as rows of `ROW` (swap-remove on delete)."""

    def __init__(self, capacity: int = 1024) -> None:
        self._rows: npt.NDArray[np.void] = np.zeros(max(capacity, 16), dtype=ROW)
        self._names: list[str] = []
        self._where: dict[str, int] = {}
        # Kept in step by put/pop: every event reports usage, and summing
        # 100,000 rows per event would make a start-up scan quadratic.
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._where

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._names))

    @property
    def names(self) -> list[str]:
        """Row order: `names[i]` is the file of `columns()[i]`. Do not mutate."""
        return self._names

    def columns(self) -> Columns:
        """A view of the live rows, for vectorised policies. Valid until a change."""
        return self._rows[: len(self._names)]

    @property
    def total_bytes(self) -> int:
        """Sum of st_size over indexed snapshots."""
        return self._bytes

    def row_of(self, name: str) -> int | None:
        """Row number of `name`, or None."""
        return self._where.get(name)

    def get(self, name: str) -> Snapshot | None:
        """The snapshot indexed under `name`, or None."""
        i = self._where.get(name)
        return None if i is None else _from_row(name, self._rows[i])

    def at(self, row: int) -> Snapshot:
        """The snapshot in row `row`."""
        return _from_row(self._names[row], self._rows[row])

    def fingerprint(self, name: str) -> Fingerprint | None:
        """The file identity last seen for `name` (cheaper than `get`)."""
        i = self._where.get(name)
        if i is None:
            return None
        r = self._rows[i]
        return Fingerprint(
            int(r["dev"]), int(r["ino"]), int(r["size"]), int(r["mtime_ns"])
        )

    def put(self, s: Snapshot) -> Change:
        """Insert or update `s`; report what kind of change that was."""
        i = self._where.get(s.name)
        if i is None:
            i = len(self._names)
            if i == len(self._rows):
                grown = np.zeros(len(self._rows) * 2, dtype=ROW)
                grown[:i] = self._rows
                self._rows = grown
            self._names.append(s.name)
            self._where[s.name] = i
            self._rows[i] = _to_row(s)
            self._bytes += s.seen.size
            return Change.ADDED
        old = self._rows[i]
        if (int(old["dev"]), int(old["ino"])) != (s.seen.dev, s.seen.ino):
            change = Change.REPLACED
            s_row = _to_row(s)
        else:
            change = Change.UPDATED
            # the same file keeps what we learnt from its text
            s_row = (*_to_row(s)[:-1], bool(old["covered"]))
        new = np.array(s_row, dtype=ROW)
        if self._rows[i] == new:
            return Change.UNCHANGED
        self._bytes += s.seen.size - int(old["size"])
        self._rows[i] = new
        return change

    def pop(self, name: str) -> Snapshot | None:
        """Remove `name`; return what was indexed, or None."""
        i = self._where.pop(name, None)
        if i is None:
            return None
        gone = _from_row(name, self._rows[i])
        self._bytes -= gone.size
        last = len(self._names) - 1
        if i != last:  # move the last row into the hole: O(1), order is not kept
            self._rows[i] = self._rows[last]
            moved = self._names[last]
            self._names[i] = moved
            self._where[moved] = i
        self._names.pop()
        return gone

    def set_covered(self, names: Mapping[str, bool]) -> None:
        """Record which snapshots are strict prefixes of a longer compatible one."""
        for name, flag in names.items():
            i = self._where.get(name)
            if i is not None:
                self._rows[i]["covered"] = flag


@dataclass(frozen=True, slots=True)
class Drift:
    """How a directory scan differs from the index: what reconcile repairs."""

    added: tuple[str, ...]
    changed: tuple[str, ...]
    gone: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.added or self.changed or self.gone)


def drift(index: Index, scan: Mapping[str, Fingerprint]) -> Drift:
    """Compare a scan of snapshot names -> fingerprints with the index."""
    added = tuple(n for n in scan if n not in index)
    changed = tuple(
        n for n, fp in scan.items() if n in index and index.fingerprint(n) != fp
    )
    gone = tuple(n for n in index.names if n not in scan)
    return Drift(added, changed, gone)
