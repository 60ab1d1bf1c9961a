"""Every on-disk layout of ds4 snapshots kvgroomd knows, described once, as data.

Pure. Upstream ds4 writes one layout (header version 1, payload ABI 2); forks
and an open pull request write others into the same kind of directory, under
the same `<sha>.kv` names, and each file is valid only to the engine that can
read it. An entry here says, for one layout:

* how it is recognised (`claims`: byte values its writer always puts there);
* its header length and where each field sits (`fields`);
* what makes a file valid to its engine (`valid`, plus the size rule every
  layout shares: file size >= header + 4 + text_bytes + the u64 at 40);
* which layouts its engine reads, what it writes and whether it compresses.

The single-file parser (format/header.py) and the bulk reader (daemon/read.py,
through `classify`) both interpret these entries, so they give the same
verdict for every byte string; adding a layout is adding an entry (and its
fixtures). docs/format.md describes each layout in words.

A file is read in a layout only when its header leaves no doubt: exactly one
layout claims it and finds it valid. When two do (a raw `codec-at-21` file
and a `header-72` one can both fit), the file is `unknown_format` and left
alone, unless the operator named the engine's layout (`engine.layout`), which
settles it in that layout's favour.

The index keeps one byte per file for its layout: the *family* code (one per
header structure; upstream, legacy and gb10 files share the version-1
structure and differ by payload ABI). It also keeps the 72-byte header's
weights fingerprint (`model_fp`, 0 in every other layout), which decides
which of those files an engine loads (`same_engine`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

DETECT = "detect"  # engine.layout when not named: each file is read in the layout it proves
MAGIC = b"KVC"
ABI_LEGACY = 0  # engines before 2026-05-26: a current engine ignores the file
ABI_CURRENT = 2
NO_ABI = 255  # the layout has no payload ABI byte (codec-at-7)
U32_MAX = 2**32 - 1
MIN_HEADER = 52  # the shortest header + text length of any layout

# Family codes: the index's `layout` byte. 0 is the version-1 structure, so
# rows and headers built without a layout are version-1 ones.
V1, CODEC_AT_21, CODEC_AT_7, HEADER_72 = 0, 1, 2, 3

CODEC_NONE, CODEC_LZ4 = 0, 1
MAX_CHUNK = 64 * 2**20  # the compressing engines' largest LZ4 chunk


@dataclass(frozen=True, slots=True)
class Field:
    """An integer (or the magic) at a byte offset of the header, little-endian."""

    name: str
    offset: int
    size: int  # bytes: 1, 2, 4 or 8 (3 for the magic)

    @property
    def dtype(self) -> str:
        """The numpy type of this field."""
        return "S3" if self.name == "magic" else ("u1" if self.size == 1 else f"<u{self.size}")

    def read(self, raw: bytes) -> int:
        """This field's value in `raw` (which must hold it)."""
        return int.from_bytes(raw[self.offset : self.offset + self.size], "little")


@dataclass(frozen=True, slots=True)
class Check:
    """`field` lies in one of `ranges` (inclusive), whenever `when` = (other
    field, value) holds (always, when `when` is None)."""

    field: str
    ranges: tuple[tuple[int, int], ...]
    when: tuple[str, int] | None = None

    def holds(self, values: Mapping[str, int]) -> bool:
        """Whether the check passes for one header's field values."""
        if self.when is not None and values[self.when[0]] != self.when[1]:
            return True
        v = values[self.field]
        return any(lo <= v <= hi for lo, hi in self.ranges)

    def mask(self, columns: Mapping[str, npt.NDArray[Any]]) -> npt.NDArray[np.bool_]:
        """Whether the check passes, for many headers' field columns at once."""
        v = columns[self.field]
        ok = np.zeros(len(v), dtype=bool)
        for lo, hi in self.ranges:
            ok |= (v >= lo) & (v <= hi)
        if self.when is not None:
            ok |= columns[self.when[0]] != self.when[1]
        return ok

    def words(self, values: Mapping[str, int]) -> str:
        """The failed check, for a log line: `quant_bits=3`."""
        return f"{self.field}={values[self.field]}"


def _one(v: int) -> tuple[tuple[int, int], ...]:
    return ((v, v),)


@dataclass(frozen=True, slots=True)
class Layout:
    """One on-disk layout of ds4 snapshots, and its engine."""

    name: str  # as engine.layout names it
    code: int  # its family: the index's `layout` byte
    writer: str  # who writes it (for docs and log lines)
    header_bytes: int  # bytes before the u32 text length (48 or 72)
    fields: tuple[Field, ...]  # where each field sits; text_bytes is last
    claims: tuple[Check, ...]  # recognition: all hold => it may be this layout
    valid: tuple[Check, ...]  # what else its engine requires (besides the size rule)
    reads: tuple[str, ...] = ()  # the layouts its engine lists (empty: no engine to name)
    compresses: bool = False  # its engine can write LZ4 payloads (u64 at 40 = bytes on disk)
    has_model: bool = True  # byte 7 is a model id its engine's lookups compare
    # Claims when the operator named this layout (engine.layout): broader,
    # what its engine itself accepts. None: the same as `claims`.
    named_claims: tuple[Check, ...] | None = None
    # Index fields this layout has no bytes for, and the value they take.
    constants: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    # Leading header bytes the index's row can rebuild exactly (what the
    # deleter compares before it unlinks, with the file's identity).
    judged_bytes: int = MIN_HEADER

    @property
    def prefix(self) -> int:
        """Bytes before the text: the header and the u32 text length."""
        return self.header_bytes + 4

    @property
    def is_engine(self) -> bool:
        """Whether an engine writes this layout today (engine.layout may name it)."""
        return bool(self.reads)

    def values(self, raw: bytes) -> dict[str, int]:
        """Every field of `raw` (at least `prefix` bytes), by name."""
        out = {f.name: f.read(raw) for f in self.fields if f.name != "magic"}
        out.update(self.constants)
        return out

    def claim_checks(self, engine: str) -> tuple[Check, ...]:
        """The recognition checks that apply when the engine's layout is `engine`."""
        if engine == self.name and self.named_claims is not None:
            return self.named_claims
        return self.claims

    def dtype(self) -> np.dtype[np.void]:
        """A numpy record of this header's fields, at their offsets."""
        return np.dtype({"names": [f.name for f in self.fields],
                         "formats": [f.dtype for f in self.fields],
                         "offsets": [f.offset for f in self.fields],
                         "itemsize": self.prefix})  # fmt: skip


# -- the registry ------------------------------------------------------------------

_COMMON = (
    Field("magic", 0, 3), Field("version", 3, 1), Field("quant_bits", 4, 1),
    Field("reason", 5, 1), Field("ext_flags", 6, 1), Field("tokens", 8, 4), Field("hits", 12, 4),
    Field("ctx_size", 16, 4), Field("created_at", 24, 8), Field("last_used", 32, 8),
    Field("payload_bytes", 40, 8),
)  # fmt: skip
_V1_FIELDS = (*_COMMON, Field("model_id", 7, 1), Field("abi", 20, 1), Field("text_bytes", 48, 4))
# What every engine requires of a header (docs/format.md).
_VALID = (Check("quant_bits", ((2, 2), (4, 4))), Check("tokens", ((1, U32_MAX),)))


LAYOUTS: tuple[Layout, ...] = (
    Layout(
        "upstream", V1, "antirez/ds4 since 2026-05-26 (the contract: version 1, payload ABI 2)",
        48, _V1_FIELDS, claims=(Check("version", _one(1)), Check("abi", _one(ABI_CURRENT))),
        valid=_VALID, reads=("upstream",),
    ),
    Layout(
        "legacy", V1, "antirez/ds4 before 2026-05-26 (version 1, payload ABI 0)",
        48, _V1_FIELDS, claims=(Check("version", _one(1)), Check("abi", _one(ABI_LEGACY))),
        valid=_VALID,
    ),
    Layout(
        "gb10", V1, "redhunt07/ds4-DSpark-GB10 (version 1, payload ABI 3 until 2026-07-12, then 4)",
        48, _V1_FIELDS, claims=(Check("version", _one(1)), Check("abi", ((3, 4),))),
        valid=_VALID, reads=("gb10",),
    ),
    Layout(
        "codec-at-21", CODEC_AT_21,
        "jasontitus/ds4 (antirez/ds4 pull request #186 as a fork carries it)",
        48, (*_COMMON, Field("model_id", 7, 1), Field("abi", 20, 1), Field("codec", 21, 1),
             Field("chunk_log2", 22, 1), Field("reserved", 23, 1), Field("text_bytes", 48, 4)),
        claims=(Check("version", _one(2)), Check("abi", _one(ABI_CURRENT)),
                Check("codec", ((CODEC_NONE, CODEC_LZ4),)), Check("reserved", _one(0)),
                Check("chunk_log2", _one(0), when=("codec", CODEC_NONE))),
        valid=(*_VALID, Check("chunk_log2", ((1, 26),), when=("codec", CODEC_LZ4))),
        reads=("codec-at-21", "upstream"), compresses=True, judged_bytes=20,
    ),
    Layout(
        "codec-at-7", CODEC_AT_7, "the head of antirez/ds4 pull request #186 (2026-05-19)",
        48, (*_COMMON, Field("model_id", 7, 1), Field("codec", 7, 1), Field("chunk_low", 20, 1),
             Field("chunk_size", 20, 4), Field("text_bytes", 48, 4)),
        # As written: a chunk size of 0 (raw) or 16 MiB, whose low byte is 0;
        # the other layouts of version 2 have their ABI byte 2 there.
        claims=(Check("version", _one(2)), Check("codec", ((CODEC_NONE, CODEC_LZ4),)),
                Check("chunk_low", _one(0))),
        named_claims=(Check("version", _one(2)), Check("codec", ((CODEC_NONE, CODEC_LZ4),)),
                      Check("chunk_low", ((0, 1), (3, 255)))),
        valid=(*_VALID, Check("chunk_size", ((1, MAX_CHUNK),), when=("codec", CODEC_LZ4))),
        # Its reader takes any version-1 file and any version-2 48-byte header
        # whose byte 7 is 0 or 1 (so every codec-at-21 file with model 0 or 1).
        reads=("codec-at-7", "codec-at-21", "upstream", "legacy", "gb10"),
        compresses=True, has_model=False, constants=MappingProxyType({"abi": NO_ABI}),
        judged_bytes=20,
    ),
    Layout(
        "header-72", HEADER_72, "nazerim/ds4 (2026-08: a 72-byte header)",
        72, (*_COMMON, Field("model_id", 7, 1), Field("abi", 20, 1), Field("abi_word", 20, 4),
             Field("conv_id", 48, 8), Field("model_fp", 56, 8), Field("bucket", 64, 4),
             Field("level", 68, 1), Field("stale", 69, 1), Field("reserved", 70, 2),
             Field("text_bytes", 72, 4)),
        claims=(Check("version", _one(2)), Check("abi_word", _one(ABI_CURRENT)),
                Check("stale", ((0, 1),)), Check("reserved", _one(0))),
        valid=_VALID, reads=("header-72", "upstream"), judged_bytes=48,
    ),
)  # fmt: skip

BY_NAME: Mapping[str, Layout] = MappingProxyType({lay.name: lay for lay in LAYOUTS})
MAX_PREFIX = max(lay.prefix for lay in LAYOUTS)  # bytes a header of any layout fits in
ENGINES = tuple(lay.name for lay in LAYOUTS if lay.is_engine)
VERSIONS = frozenset(c.ranges[0][0] for lay in LAYOUTS for c in lay.claims if c.field == "version")
# Fields the index keeps of every header (the Header's, format/header.py).
ROW_FIELDS = ("quant_bits", "reason", "ext_flags", "model_id", "tokens", "hits", "ctx_size",
              "abi", "created_at", "last_used", "payload_bytes", "text_bytes",
              "model_fp")  # fmt: skip
U64_FIELDS = frozenset({"created_at", "last_used", "payload_bytes", "model_fp"})  # the rest are u32


def _entry_table() -> npt.NDArray[np.int16]:
    """(layout byte, abi) -> index in LAYOUTS of the entry that file is, or -1."""
    table = np.full((256, 256), -1, dtype=np.int16)
    for i, lay in enumerate(LAYOUTS):
        abis = next((c.ranges for c in lay.claims if c.field == "abi"), None)
        fixed = lay.constants.get("abi")
        if fixed is not None:
            table[lay.code, fixed] = i
        elif abis is not None:
            for lo, hi in abis:
                table[lay.code, lo : hi + 1] = i
        else:  # header-72: the ABI word is 2
            table[lay.code, ABI_CURRENT] = i
    return table


_ENTRY = _entry_table()
_HAS_MODEL = np.ones(256, dtype=bool)
_TEXT_AT = np.full(256, LAYOUTS[0].prefix, dtype=np.int64)
for _lay in LAYOUTS:
    _HAS_MODEL[_lay.code] = _lay.has_model
    _TEXT_AT[_lay.code] = _lay.prefix
_LEGACY = BY_NAME["legacy"]


def entry_of(layout: int, abi: int) -> Layout | None:
    """The registry entry of a file with this layout byte and payload ABI."""
    i = int(_ENTRY[layout & 0xFF, abi & 0xFF])
    return LAYOUTS[i] if i >= 0 else None


def name_of(layout: int, abi: int) -> str:
    """The entry's name (`upstream`, `header-72`, ...), or `unknown`."""
    lay = entry_of(layout, abi)
    return lay.name if lay is not None else "unknown"


def family(layout: int) -> Layout:
    """The first registry entry of a layout byte's family (its structure)."""
    return next(lay for lay in LAYOUTS if lay.code == layout)


def text_at(layout: int) -> int:
    """Where the text starts in a file of this layout byte."""
    return int(_TEXT_AT[layout & 0xFF])


def text_offsets(layouts: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.int64]:
    """`text_at` of many layout bytes."""
    out: npt.NDArray[np.int64] = _TEXT_AT[np.asarray(layouts, dtype=np.intp)]
    return out


def engine_of(engine: str) -> Layout:
    """The registry entry of the engine `engine.layout` names. With DETECT
    (nothing named) kvgroomd counts as the upstream engine does: files of
    other layouts are read and reported, but acted on only once the
    operator names their engine (or sets evict_other_layouts)."""
    return BY_NAME["upstream" if engine == DETECT else engine]


def reads(engine: str, layouts: npt.NDArray[np.integer[Any]],
          abis: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.bool_]:  # fmt: skip
    """Which files (layout byte, abi) the engine `engine` lists as entries."""
    entry = _ENTRY[np.asarray(layouts, dtype=np.intp), np.asarray(abis, dtype=np.intp)]
    wanted = engine_of(engine).reads
    ok = np.array([lay.name in wanted for lay in LAYOUTS] + [False])
    out: npt.NDArray[np.bool_] = ok[entry]  # -1 (unknown) picks the trailing False
    return out


def counted(engine: str, layouts: npt.NDArray[np.integer[Any]],
            abis: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.bool_]:  # fmt: skip
    """Which files kvgroomd counts against the engine's budget (and may evict):
    those the engine reads, and `legacy` ones (upstream's files from before
    2026-05-26, which no current engine reads: kvgroomd's stale_format leak,
    counted and ranked low as it always was)."""
    entry = _ENTRY[np.asarray(layouts, dtype=np.intp), np.asarray(abis, dtype=np.intp)]
    out: npt.NDArray[np.bool_] = reads(engine, layouts, abis) | (entry == LAYOUTS.index(_LEGACY))
    return out


def same_engine(*, n_layout: npt.ArrayLike, n_abi: npt.ArrayLike, n_model: npt.ArrayLike,
                n_fp: npt.ArrayLike, o_layout: npt.ArrayLike, o_abi: npt.ArrayLike,
                o_model: npt.ArrayLike, o_fp: npt.ArrayLike) -> npt.NDArray[np.bool_]:  # fmt: skip
    """Whether snapshot N can serve every lookup snapshot O could, as far as
    the layout goes (arrays broadcast): the same layout family, the same
    payload ABI (or O a legacy file under a current version-1 N, which the
    current engine loads instead), the same model id where the layout has
    one, and a weights fingerprint (`*_fp`) every engine that loads O also
    accepts. The rules of supersession (context, quant, text prefix:
    docs/format.md) come on top.

    The fingerprint rule is the load guard of the engine that writes the
    72-byte header: an engine whose fingerprint is F loads a file whose
    fingerprint is x when x is 0 or F. So N (fingerprint n) serves whoever
    loads O (fingerprint o) when n is 0 (every engine loads N) or n == o
    (the one engine that loads O loads N); not when n != 0 and o is 0 (every
    engine loads O, one loads N). The fingerprints are required arguments:
    one left out would read as 0, and make N look loadable by every engine."""
    nl, ol = np.asarray(n_layout, dtype=np.intp), np.asarray(o_layout, dtype=np.intp)
    na, oa = np.asarray(n_abi, dtype=np.intp), np.asarray(o_abi, dtype=np.intp)
    nf, of = np.asarray(n_fp, dtype=np.uint64), np.asarray(o_fp, dtype=np.uint64)
    fam = nl == ol
    abi = (na == oa) | ((nl == V1) & (na == ABI_CURRENT) & (oa == ABI_LEGACY))
    model = (np.asarray(n_model) == np.asarray(o_model)) | ~_HAS_MODEL[nl]
    fp = (nf == 0) | (nf == of)
    out: npt.NDArray[np.bool_] = np.asarray(fam & abi & model & fp, dtype=bool)
    return out


@dataclass(frozen=True, slots=True)
class Reading:
    """How kvgroomd reads a cache directory: the engine's layout (DETECT or
    an engine's name) and whether files of layouts that engine does not read
    are indexed too (`other_layouts`: then they count against the budget and
    may be evicted like the engine's own; by default they are reported apart
    and left alone). Every file is read in the layout its header proves
    either way; with DETECT the engine counts as upstream's (`engine_of`)."""

    engine: str = DETECT
    other_layouts: bool = False

    def __post_init__(self) -> None:
        if self.engine != DETECT and self.engine not in ENGINES:
            raise ValueError(f"unknown engine layout {self.engine!r} (known: "
                             f"{', '.join((DETECT, *ENGINES))})")  # fmt: skip

    def keeps(self, layout: int, abi: int) -> bool:
        """Whether a file of this layout byte and ABI goes into the index."""
        return bool(self.keeps_mask(np.array([layout]), np.array([abi]))[0])

    def keeps_mask(self, layouts: npt.NDArray[np.integer[Any]],
                   abis: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.bool_]:  # fmt: skip
        """`keeps` of many files."""
        if self.other_layouts:
            return np.asarray(_ENTRY[np.asarray(layouts, dtype=np.intp),
                                     np.asarray(abis, dtype=np.intp)] >= 0)  # fmt: skip
        return counted(self.engine, layouts, abis)

    def refusal(self, layout: int, abi: int) -> str:
        """Why a file of this layout is not the engine's, for a log line."""
        lay = entry_of(layout, abi)
        what = f"{lay.name}, written by {lay.writer}" if lay is not None else "an unknown layout"
        if self.engine == DETECT:
            hint = f"engine.layout: {lay.name}" if lay is not None and lay.is_engine else ""
            return (f"{what}: the upstream engine does not read it; counted apart and left "
                    f"alone unless {hint + ' names this engine or ' if hint else ''}"
                    "evict_other_layouts is set")  # fmt: skip
        return f"{what}: the engine's layout is {self.engine}, which does not read it"
