"""The ds4 snapshot header: read and written in every known layout.

Pure: bytes in, values out. The layouts themselves are data (layouts.py);
this module interprets them for one file (the bulk reader, bulk.classify,
for many at once). Reading files is `read.py`'s job; deciding what to
do with a snapshot is the policies'. A file that does not parse is *invisible*
to the engine, so it is never a reason to delete anything.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import IntEnum
from typing import Literal

from kvgroomd.format import layouts as _layouts
from kvgroomd.format.layouts import (
    ABI_CURRENT,
    ABI_LEGACY,
    BY_NAME,
    DETECT,
    HEADER_72,
    LAYOUTS,
    MAGIC,
    MIN_HEADER,
    V1,
    VERSIONS,
    Layout,
)

# The version-1 layout (docs/format.md): 48 fixed bytes, then the u32 text
# length; all little-endian. Other layouts: format/layouts.py.
_LAYOUT = struct.Struct("<3sBBBBBIIIB3xQQQI")
PREFIX_BYTES = _LAYOUT.size  # 52: everything before the text of a version-1 file
assert PREFIX_BYTES == MIN_HEADER
TOUCH_BYTES = 48  # the engine rewrites only this much in place on a hit
VERSION = 1
QUANT_BITS = (2, 4)
KNOWN_ABIS = (ABI_LEGACY, ABI_CURRENT)  # of upstream's version-1 files

EXT_TOOL_MAP = 0x01  # a "KTM" tool-id map trailer follows the payload
EXT_RESPONSES_TEXT = 0x02  # text is the responses-visible transcript
EXT_THINKING_TEXT = 0x04  # text is the thinking-visible transcript

__all__ = ["ABI_CURRENT", "ABI_LEGACY", "DETECT", "MAGIC", "PREFIX_BYTES", "TOUCH_BYTES",
           "Header", "Reason", "Unparsable", "check_size", "prefix_digests", "read_header",
           "sha1_hex"]  # fmt: skip


class Reason(IntEnum):
    """Why the engine stored a snapshot (header byte 5)."""

    UNKNOWN = 0
    COLD = 1
    CONTINUED = 2
    EVICT = 3
    SHUTDOWN = 4
    AGENT_SYSTEM = 5
    AGENT_SESSION = 6

    @classmethod
    def from_byte(cls, code: int) -> Reason:
        # The engine reads codes it does not know as UNKNOWN; so do we.
        return cls(code) if code <= cls.AGENT_SESSION else cls.UNKNOWN

    @property
    def label(self) -> str:
        """The engine's own word for it, as in its logs ("agent-session")."""
        return self.name.lower().replace("_", "-")


# Kinds of "not a snapshot we may act on". `unknown_format` means a newer (or
# another) engine may own the file, or its layout is in doubt: leave it alone.
UnparsableWhy = Literal["short", "magic", "unknown_format", "invalid", "truncated"]


@dataclass(frozen=True, slots=True)
class Unparsable:
    """Why some bytes are not a usable snapshot. Never a reason to delete."""

    why: UnparsableWhy
    detail: str


@dataclass(frozen=True, slots=True)
class Header:
    """A snapshot's header as the engine wrote it, in any known layout.

    `layout` is the index's layout byte (format/layouts.py: the family); the
    default is upstream's version-1 layout. `model_fp` is the 72-byte
    header's weights fingerprint (bytes 56..63; 0 in every other layout),
    which the index keeps: it decides which engines load the file, so it
    must survive every path (a lost one reads as 0, "loaded by every
    engine", and would let the file supersede wrongly). `codec` and
    `chunk_size` are the compressing layouts' (0: raw), `extra` the 72-byte
    header's bytes 48..71 as read (lineage, fingerprint, bucket, level,
    stale). The index keeps none of those three: a Header rebuilt from an
    index row has them 0 or empty, which is why `pack` gives only the bytes
    a row determines. In the codec-at-7 layout byte 7 is the codec:
    `model_id` holds that byte and `abi` is NO_ABI (255), that layout having
    none.
    """

    quant_bits: int
    reason: Reason
    ext_flags: int
    model_id: int
    tokens: int
    hits: int
    ctx_size: int
    abi: int
    created_at: int
    last_used: int
    payload_bytes: int  # bytes of payload on disk (compressed, if it is)
    text_bytes: int
    reason_code: int = -1  # the raw byte 5 when it is not a known Reason
    layout: int = V1
    model_fp: int = 0
    codec: int = 0
    chunk_size: int = 0
    extra: bytes = b""

    def __post_init__(self) -> None:
        # The fingerprint decides which engines load the file (and so what
        # it may supersede): only where the format has one, and said once
        # (`extra` repeats it when given; encode() writes `model_fp`).
        if self.model_fp and self.layout != HEADER_72:
            raise ValueError(f"a weights fingerprint in layout {self.layout}: only the "
                             "72-byte header has one")  # fmt: skip
        if len(self.extra) >= 16 and int.from_bytes(self.extra[8:16], "little") != self.model_fp:
            raise ValueError("extra's bytes 8..15 (the fingerprint) are not model_fp")

    @classmethod
    def parse(cls, raw: bytes) -> Header | Unparsable:
        """Parse and validate a header the way its engine does, without the
        file's size (see `read_header`)."""
        return read_header(raw)

    @property
    def entry(self) -> Layout:
        """This header's entry in the layout registry."""
        return _layouts.entry_of(self.layout, self.abi) or _layouts.family(self.layout)

    @property
    def layout_name(self) -> str:
        """The registry's name of this header's layout (`upstream`, ...)."""
        return _layouts.name_of(self.layout, self.abi)

    @property
    def text_at(self) -> int:
        """Where the text starts in the file."""
        return _layouts.text_at(self.layout)

    def encode(self) -> bytes:
        """Every header byte the engine wrote, up to and with the text length
        (52 bytes; 76 for the 72-byte header), from this Header's fields."""
        code = self.reason_code if self.reason_code >= 0 else int(self.reason)
        fam = self.layout
        base = _LAYOUT.pack(
            MAGIC, VERSION if fam == V1 else 2, self.quant_bits, code, self.ext_flags,
            self.model_id, self.tokens, self.hits, self.ctx_size, self.abi & 0xFF,
            self.created_at, self.last_used, self.payload_bytes, self.text_bytes,
        )  # fmt: skip
        if fam == _layouts.CODEC_AT_21:
            log2 = self.chunk_size.bit_length() - 1 if self.chunk_size > 0 else 0
            return base[:21] + bytes([self.codec, log2, 0]) + base[24:]
        if fam == _layouts.CODEC_AT_7:
            return base[:20] + self.chunk_size.to_bytes(4, "little") + base[24:]
        if fam == HEADER_72:
            extra = self.extra.ljust(24, b"\0")[:24]
            fp = self.model_fp.to_bytes(8, "little")
            return base[:48] + extra[:8] + fp + extra[16:] + base[48:]
        return base

    def pack(self) -> bytes:
        """The leading header bytes this Header determines even when rebuilt
        from an index row: all 52 of a version-1 file (as the engine writes
        them, reserved bytes 21..23 zero), 48 of a 72-byte header, 20 of the
        compressing layouts (whose codec and chunk bytes the index does not
        keep). The deleter compares these with the file before it unlinks."""
        return self.encode()[: self.entry.judged_bytes]

    @property
    def min_file_size(self) -> int:
        """Smallest complete file: header + text + payload (trailers may follow)."""
        return self.text_at + self.text_bytes + self.payload_bytes

    @property
    def legacy(self) -> bool:
        """Written by an engine older than 2026-05-26; current engines ignore it."""
        return self.layout == V1 and self.abi == ABI_LEGACY

    @property
    def last_active(self) -> int:
        """The engine's notion of last use (it falls back to created_at)."""
        return self.last_used or self.created_at

    def touched(self, now: int) -> Header:
        """The header after one disk hit, as the engine rewrites it in place."""
        return replace(self, hits=self.hits + 1, last_used=now)


def _header_of(lay: Layout, v: dict[str, int], raw: bytes) -> Header:
    code = v["reason"]
    kind = Reason.from_byte(code)
    chunk = v.get("chunk_size", 0)
    if "chunk_log2" in v:
        chunk = 1 << min(v["chunk_log2"], 31) if v["chunk_log2"] >= 1 else 0
    extra = bytes(raw[48:72]) if lay.code == HEADER_72 else b""
    return Header(
        quant_bits=v["quant_bits"], reason=kind, ext_flags=v["ext_flags"],
        model_id=v["model_id"], tokens=v["tokens"], hits=v["hits"], ctx_size=v["ctx_size"],
        abi=v["abi"], created_at=v["created_at"], last_used=v["last_used"],
        payload_bytes=v["payload_bytes"], text_bytes=v["text_bytes"],
        reason_code=-1 if kind == code else code, layout=lay.code,
        model_fp=v.get("model_fp", 0), codec=v.get("codec", 0), chunk_size=chunk, extra=extra,
    )  # fmt: skip


def _unknown(raw: bytes) -> Unparsable:
    version = raw[3]
    if version not in VERSIONS:
        return Unparsable("unknown_format", f"version={version}")
    if version == VERSION:
        return Unparsable("unknown_format", f"abi={raw[20]}")
    where = f"byte 7 = {raw[7]}, bytes 20-23 = {raw[20:24].hex(' ')}"
    return Unparsable("unknown_format", f"version {version} of no known layout ({where})")


def _read_as(lay: Layout, raw: bytes, file_size: int | None,
             engine: str) -> dict[str, int] | Unparsable | None:  # fmt: skip
    """`raw`'s fields in layout `lay`; why not when `lay` claims it but its
    engine would not read it; None when `lay` does not claim it."""
    if len(raw) < lay.prefix:
        return None
    v = lay.values(raw)
    if not all(c.holds(v) for c in lay.claim_checks(engine)):
        return None
    failed = [c for c in lay.valid if not c.holds(v)]
    if failed:
        where = "" if lay.code == V1 else f" ({lay.name})"
        return Unparsable("invalid", " ".join(c.words(v) for c in failed) + where)
    if file_size is not None:
        need = lay.prefix + v["text_bytes"] + v["payload_bytes"]
        if file_size < need:
            return Unparsable("truncated", f"{file_size} bytes, header needs {need}")
    return v


def read_header(raw: bytes, file_size: int | None = None, *,
                engine: str = DETECT) -> Header | Unparsable:  # fmt: skip
    """The header of a file whose first bytes are `raw` and whose size is
    `file_size` (None: not known, the size rule is not applied), read in the
    one layout that claims it and finds it valid (format/layouts.py).

    With `engine` naming the engine's layout, that layout wins where several
    would read the file; with DETECT such a file is `unknown_format`. The
    verdict is the bulk reader's (`bulk.classify`), byte for byte."""
    if len(raw) < MIN_HEADER:
        return Unparsable("short", f"{len(raw)} of {MIN_HEADER} header bytes")
    magic = bytes(raw[:3])
    if magic != MAGIC:
        return Unparsable("magic", f"magic={magic!r}")
    readable: list[tuple[Layout, dict[str, int]]] = []
    first_error: Unparsable | None = None  # the named layout's, else the first's
    for lay in LAYOUTS:
        got = _read_as(lay, raw, file_size, engine)
        if isinstance(got, dict):
            readable.append((lay, got))
        elif got is not None and (first_error is None or lay.name == engine):
            first_error = got
    if engine != DETECT:
        named = BY_NAME[engine]
        readable = [r for r in readable if r[0] is named] or readable
    if len(readable) == 1:
        lay, v = readable[0]
        return _header_of(lay, v, raw)
    if readable:
        names = " or ".join(lay.name for lay, _ in readable)
        return Unparsable("unknown_format", f"ambiguous: {names} (engine.layout names "
                                            "the engine's layout)")  # fmt: skip
    return first_error or _unknown(raw)


def check_size(header: Header, file_size: int) -> Unparsable | None:
    """The engine's completeness rule: the file must hold text and payload."""
    if file_size < header.min_file_size:
        return Unparsable(
            "truncated", f"{file_size} bytes, header needs {header.min_file_size}"
        )
    return None


def sha1_hex(data: bytes) -> str:
    """The engine's file key: lowercase SHA-1 hex of the rendered text."""
    return hashlib.sha1(data, usedforsecurity=False).hexdigest()


def prefix_digests(text: bytes, lengths: Iterable[int]) -> dict[int, str]:
    """SHA-1 hex of text[:n] for each n, in one pass over `text`.

    Hashing incrementally at ascending lengths (and copying the running state)
    makes the cost one read of the text however many prefixes are asked for.
    """
    wanted = sorted({n for n in lengths if 0 <= n <= len(text)})
    running = hashlib.sha1(usedforsecurity=False)
    digests: dict[int, str] = {}
    done = 0
    view = memoryview(text)
    for n in wanted:
        running.update(view[done:n])
        done = n
        digests[n] = running.copy().hexdigest()
    return digests
