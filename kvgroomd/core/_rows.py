"""An index row: one snapshot as a record of the `ROW` numpy dtype, and the
Snapshot value it stands for. Pure.

Rows carry everything the policies and the supersession rule read (header,
stat identity, text keys, the core's own stamps), so 100,000 snapshots are
scored in one vectorised pass; `record_of` and `snapshot_of` convert between a
Snapshot and its row, by field name one way and by position the other (a
start-up's decisions build thousands of Snapshots).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import numpy.typing as npt

from kvgroomd.core.decision import Fingerprint
from kvgroomd.format.header import Header, Reason
from kvgroomd.format.layouts import ROW_FIELDS
from kvgroomd.format.prefix import HEAD_BYTES, SHORT_HEAD, text_keys

# Rows carry each file's SHA-1 (which is its name), so the index keeps no
# Python object per entry: a name is rebuilt from its row when asked for.
ROW = np.dtype(
    [
        # The SHA-1 of the name in three pieces, so bytes 0..19 of a row are
        # the SHA-1 and the two u64 pieces are the hash table's key.
        ("sha_hi", "<u8"),  # bytes 0..7, little-endian
        ("sha_mid", "V4"),  # bytes 8..11
        ("sha_lo", "<u8"),  # bytes 12..19, little-endian
        ("dev", "u8"),
        ("ino", "u8"),
        ("size", "i8"),  # st_size, as the engine counts it
        ("mtime_ns", "i8"),
        ("created_at", "u8"),  # u64 in the header: any value must fit
        ("last_used", "u8"),
        ("payload_bytes", "u8"),
        # The 72-byte header's weights fingerprint (0: none, or another
        # layout): which engines load the file (format/layouts.same_engine).
        ("model_fp", "u8"),
        ("head", "u8"),  # format/prefix.py: first 64 text bytes, a bucket
        ("tail", "u8"),  # format/prefix.py: last 8 text bytes
        ("bkey", "u8"),  # format/prefix.py: key of the text's whole leading blocks
        # The cache's own clock (bytes landed, core/groomer.py) when this file
        # last landed or served a hit: the policies' measure of idleness that
        # does not depend on the pace of the traffic.
        ("act", "u8"),
        # Unix seconds (the core's `now`) when this version was first indexed.
        # Ages count from min(created_at, seen_at): a header time from a clock
        # that runs ahead cannot keep a file young for ever.
        ("seen_at", "u8"),
        # A save's parent's reuse evidence (core/branches.py): how many saves
        # extending the same longest earlier file were used again, and how
        # many left unused. 0 and 0: no evidence.
        ("sib_used", "u4"),
        ("sib_unused", "u4"),
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
        ("layout", "u1"),  # format/layouts.py: the header's layout family (0: version 1)
        # Text is a strict prefix of a compatible longer snapshot that still
        # exists (as last seen): it serves only prompts diverging in between.
        ("covered", "?"),
        ("flags", "u1"),  # TAIL_KNOWN | BKEY_KNOWN | ODD_NAME
    ]
)
Columns = npt.NDArray[np.void]  # a view of ROW records, one per snapshot
TAIL_KNOWN = 1
BKEY_KNOWN = 2
ODD_NAME = 4  # the file name is not "<lowercase SHA-1 hex>.kv": kept aside
_REASONS = tuple(Reason)
FIELDS: tuple[str, ...] = ROW.names or ()  # the fields, in order
_HEADER_FIELDS = ("quant_bits", "ext_flags", "model_id", "tokens", "hits", "ctx_size", "abi",
                  "created_at", "last_used", "payload_bytes", "text_bytes",
                  "reason_code", "layout", "model_fp")  # fmt: skip
# The bulk reader fills a row from ROW_FIELDS, `put` from _HEADER_FIELDS: a
# header field one of them forgot would be lost on that path only.
assert {*_HEADER_FIELDS, "reason"} == {*ROW_FIELDS, "reason_code", "layout"}
FP_FIELDS = ("dev", "ino", "size", "mtime_ns")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One indexed snapshot: its name, header, file identity and text keys.

    `tail` and `bkey` (format/prefix.py) are None when not known (a Snapshot
    built without its text); such a snapshot is a candidate for every longer
    one. `covered`, `act` and `seen_at` are the index's own facts about it.
    """

    name: str
    sha: str
    header: Header
    seen: Fingerprint
    head: int = SHORT_HEAD
    covered: bool = False
    tail: int | None = None
    bkey: int | None = None
    act: int = 0
    seen_at: int = 0

    @property
    def size(self) -> int:
        """Bytes on disk (st_size), what budgets count."""
        return self.seen.size


def head_key(text_head: bytes, text_bytes: int) -> int:
    """Bucket key of a text from its first HEAD_BYTES bytes (0: too short)."""
    if text_bytes < HEAD_BYTES or len(text_head) < HEAD_BYTES:
        return SHORT_HEAD
    head, _bkey, _probes = text_keys(text_head[:HEAD_BYTES], text_bytes)
    return head


def record_of(s: Snapshot, sha: bytes) -> dict[str, Any]:
    """The ROW fields of `s`, by name."""
    h = s.header
    flags = ((TAIL_KNOWN if s.tail is not None else 0) | (BKEY_KNOWN if s.bkey is not None else 0)
             | (0 if s.name == s.name.lower() else ODD_NAME))  # fmt: skip
    rec: dict[str, Any] = {f: getattr(h, f) for f in _HEADER_FIELDS}
    rec.update(zip(FP_FIELDS, (s.seen.dev, s.seen.ino, s.seen.size, s.seen.mtime_ns),
                   strict=True))  # fmt: skip
    rec.update(sha_hi=int.from_bytes(sha[:8], "little"), sha_mid=sha[8:12],
               sha_lo=int.from_bytes(sha[12:], "little"), head=s.head, tail=s.tail or 0,
               bkey=s.bkey or 0, act=s.act, seen_at=s.seen_at, reason=int(h.reason),
               covered=s.covered, flags=flags, sib_used=0, sib_unused=0)  # fmt: skip
    return rec


def same_file(old: Mapping[str, Any] | np.void, new: Snapshot) -> bool:
    """Whether `new` is the file of row `old` rewritten in place (a touch, a
    trailer rewrite) rather than another store under the same name. The
    engine never rewrites created_at in place, and ext4 hands a deleted
    file's inode number to the next file at once: so a new created_at on the
    same inode is a new store too."""
    return ((int(old["dev"]), int(old["ino"]), int(old["created_at"]))
            == (new.seen.dev, new.seen.ino, new.header.created_at))  # fmt: skip


def row_values(rec: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(rec[f] for f in FIELDS)


_AT = {f: i for i, f in enumerate(FIELDS)}  # field -> position in a row's tuple
_FP_AT = tuple(_AT[f] for f in FP_FIELDS)
_R, _FLAGS, _HEAD, _COV, _TAIL, _BKEY, _ACT, _SEEN = (_AT[f] for f in (
    "reason", "flags", "head", "covered", "tail", "bkey", "act", "seen_at"))  # fmt: skip


# Header's fields in its own order, as positions in a row's tuple (the reason
# is rebuilt from its code): a header is built positionally, no dict per row.
_HEADER_ORDER = tuple(f.name for f in dataclasses.fields(Header))[: len(_HEADER_FIELDS) + 1]
assert set(_HEADER_ORDER) == {"reason", *_HEADER_FIELDS}, _HEADER_ORDER
_REASON_SLOT = _HEADER_ORDER.index("reason")
_HEADER_POS = tuple(_AT[f] for f in _HEADER_ORDER if f != "reason")


def snapshot_from(name: str, v: tuple[Any, ...]) -> Snapshot:
    """A row's values (`np.void.item()`) as a Snapshot, by field position
    (a start-up's decisions build thousands of them)."""
    args = [v[i] for i in _HEADER_POS]
    args.insert(_REASON_SLOT, _REASONS[v[_R]])
    flags = v[_FLAGS]
    return Snapshot(name, name[:40].lower(), Header(*args), Fingerprint(*(v[i] for i in _FP_AT)),
                    v[_HEAD], v[_COV], v[_TAIL] if flags & TAIL_KNOWN else None,
                    v[_BKEY] if flags & BKEY_KNOWN else None, v[_ACT], v[_SEEN])  # fmt: skip


def snapshot_of(name: str, record: np.void) -> Snapshot:
    """The Snapshot a `ROW` record describes, under file name `name`."""
    return snapshot_from(name, cast("tuple[Any, ...]", record.item()))
