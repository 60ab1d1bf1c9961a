"""The validity rules of every known snapshot layout, written from the format
description (docs/format.md) alone, not from kvgroomd.format, as the oracle
of the parser properties and the fuzzers.

`spec_verdict(raw, size)` says what kvgroomd must make of a file whose first
bytes are `raw` and whose size is `size`, in a directory whose engine is
upstream's (the default): `valid`, or why it must leave the file alone
(short, magic, unknown_format, invalid, truncated, other_layout).
`spec_layout` gives the layout name a file reads as, or the reason it reads
as none.
"""

from __future__ import annotations

import struct

SPEC = struct.Struct("<3sBBBBBIIIB3sQQQI")  # the 52 bytes before a version-1 text
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")
# Which layouts each engine lists, from the engines' sources (docs/format.md).
READS = {
    "upstream": {"upstream"},
    "codec-at-21": {"codec-at-21", "upstream"},
    "codec-at-7": {"codec-at-7", "codec-at-21", "upstream", "legacy", "gb10"},
    "header-72": {"header-72", "upstream"},
    "gb10": {"gb10"},
}


def _valid_common(raw: bytes) -> bool:
    return raw[4] in (2, 4) and U32.unpack_from(raw, 8)[0] != 0


def _readings(raw: bytes, engine: str) -> list[tuple[str, int, str | None]]:
    """(layout, bytes before the text, why its engine would refuse it or None)
    for every layout whose writer could have written this header."""
    version, b7, b20, b21, b22, b23 = raw[3], raw[7], raw[20], raw[21], raw[22], raw[23]
    out: list[tuple[str, int, str | None]] = []
    if version == 1 and b20 in (0, 2, 3, 4):
        name = {0: "legacy", 2: "upstream"}.get(b20, "gb10")
        out.append((name, 52, None if _valid_common(raw) else "invalid"))
    # codec at 21 (raw: 0, LZ4: 1), log2 of the chunk size at 22 (0 when raw)
    if version == 2 and b20 == 2 and b23 == 0 and (b21 == 1 or (b21 == 0 and b22 == 0)):
        ok = _valid_common(raw) and (b21 == 0 or 1 <= b22 <= 26)
        out.append(("codec-at-21", 52, None if ok else "invalid"))
    # codec at 7, u32 chunk size at 20: as written, its low byte is 0; named,
    # any low byte but the ABI 2 of the other version-2 layouts.
    if version == 2 and b7 in (0, 1) and (b20 == 0 or (engine == "codec-at-7" and b20 != 2)):
        chunk = U32.unpack_from(raw, 20)[0]
        ok = _valid_common(raw) and (b7 == 0 or 1 <= chunk <= 64 * 2**20)
        out.append(("codec-at-7", 52, None if ok else "invalid"))
    if (version == 2 and len(raw) >= 76 and raw[20:24] == b"\2\0\0\0" and raw[69] in (0, 1)
            and raw[70:72] == b"\0\0"):  # fmt: skip
        out.append(("header-72", 76, None if _valid_common(raw) else "invalid"))
    return out


def spec_layout(raw: bytes, size: int | None, engine: str = "detect") -> str:
    """The layout a file reads as (`upstream`, ..., `header-72`), or why none:
    short, magic, unknown_format (no layout, or two), invalid, truncated."""
    if len(raw) < 52:
        return "short"
    if raw[:3] != b"KVC":
        return "magic"
    ok, errors = [], {}
    for name, text_at, refused in _readings(raw, engine):
        text = U32.unpack_from(raw, text_at - 4)[0]
        payload = U64.unpack_from(raw, 40)[0]
        short = size is not None and size < text_at + text + payload
        if refused or short:
            errors[name] = refused or "truncated"
        else:
            ok.append(name)
    if engine in ok or len(ok) == 1:  # the named layout settles a doubt
        return engine if engine in ok else ok[0]
    if ok:
        return "unknown_format"  # two layouts could read it: in doubt
    # none reads it: the named layout's own reason, else the first one's
    return errors.get(engine) or next(iter(errors.values()), "unknown_format")


def spec_verdict(raw: bytes, size: int | None, engine: str = "detect",
                 others: bool = False) -> str:  # fmt: skip
    """What kvgroomd must make of the file: `valid` (its engine counts it),
    `other_layout` (a snapshot its engine does not read), or why it is no
    snapshot at all. With "detect" the engine counts as upstream's; legacy
    files are always counted; `others` counts every layout."""
    layout = spec_layout(raw, size, engine)
    if layout in ("short", "magic", "unknown_format", "invalid", "truncated"):
        return layout
    reads = READS["upstream" if engine == "detect" else engine] | {"legacy"}
    return "valid" if others or layout in reads else "other_layout"
