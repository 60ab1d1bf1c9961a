"""The ds4 snapshot file format (spec section 2): the only copy of its layout.

Pure: bytes in, values out. Reading files is `read.py`'s job; deciding what to
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

# spec §2: 48 fixed bytes, then the u32 text length; all little-endian.
_LAYOUT = struct.Struct("<3sBBBBBIIIB3xQQQI")
PREFIX_BYTES = _LAYOUT.size  # 52: everything needed before the text
TOUCH_BYTES = 48  # the engine rewrites only this much in place on a hit
MAGIC = b"KVC"
VERSION = 1
QUANT_BITS = (2, 4)
ABI_LEGACY = 0  # engines before 2026-05-26: a current engine ignores the file
ABI_CURRENT = 2
KNOWN_ABIS = (ABI_LEGACY, ABI_CURRENT)

EXT_TOOL_MAP = 0x01  # a "KTM" tool-id map trailer follows the payload
EXT_RESPONSES_TEXT = 0x02  # text is the responses-visible transcript
EXT_THINKING_TEXT = 0x04  # text is the thinking-visible transcript


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


# Kinds of "not a snapshot we may act on". `unknown_format` means a newer engine
# may own the file (version or ABI we do not know): leave it strictly alone.
UnparsableWhy = Literal["short", "magic", "unknown_format", "invalid", "truncated"]


@dataclass(frozen=True, slots=True)
class Unparsable:
    """Why some bytes are not a usable snapshot. Never a reason to delete."""

    why: UnparsableWhy
    detail: str


@dataclass(frozen=True, slots=True)
class Header:
    """The 52-byte header of a version-1 snapshot, as the engine wrote it."""

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
    payload_bytes: int
    text_bytes: int
    reason_code: int = -1  # the raw byte 5 when it is not a known Reason

    @classmethod
    def parse(cls, raw: bytes) -> Header | Unparsable:
        """Parse and validate the first 52 bytes the way the engine does."""
        if len(raw) < PREFIX_BYTES:
            return Unparsable("short", f"{len(raw)} of {PREFIX_BYTES} header bytes")
        (magic, version, quant, reason, ext, model, tokens, hits, ctx, abi,
         created, last_used, payload, text) = _LAYOUT.unpack_from(raw)  # fmt: skip
        if magic != MAGIC:
            return Unparsable("magic", f"magic={magic!r}")
        if version != VERSION:  # maybe a newer engine's file (spec §2)
            return Unparsable("unknown_format", f"version={version}")
        if abi not in KNOWN_ABIS:
            return Unparsable("unknown_format", f"abi={abi}")
        if quant not in QUANT_BITS or tokens == 0:  # the engine ignores these
            return Unparsable("invalid", f"quant_bits={quant} tokens={tokens}")
        kind = Reason.from_byte(reason)
        return cls(
            quant_bits=quant, reason=kind, ext_flags=ext, model_id=model,
            tokens=tokens, hits=hits, ctx_size=ctx, abi=abi, created_at=created,
            last_used=last_used, payload_bytes=payload, text_bytes=text,
            reason_code=-1 if kind == reason else reason,
        )  # fmt: skip

    def pack(self) -> bytes:
        """The 52 bytes the engine would write for this header."""
        code = self.reason_code if self.reason_code >= 0 else int(self.reason)
        return _LAYOUT.pack(
            MAGIC, VERSION, self.quant_bits, code, self.ext_flags, self.model_id,
            self.tokens, self.hits, self.ctx_size, self.abi, self.created_at,
            self.last_used, self.payload_bytes, self.text_bytes,
        )  # fmt: skip

    @property
    def min_file_size(self) -> int:
        """Smallest complete file: header + text + payload (trailers may follow)."""
        return PREFIX_BYTES + self.text_bytes + self.payload_bytes

    @property
    def legacy(self) -> bool:
        """Written by an engine older than 2026-05-26; current engines ignore it."""
        return self.abi == ABI_LEGACY

    @property
    def last_active(self) -> int:
        """The engine's notion of last use (it falls back to created_at)."""
        return self.last_used or self.created_at

    def touched(self, now: int) -> Header:
        """The header after one disk hit, as the engine rewrites it in place."""
        return replace(self, hits=self.hits + 1, last_used=now)


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
