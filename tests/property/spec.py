"""Spec section 2's validity rule, written from the spec alone (not from
kvgroomd.format.header), as the oracle of the parser properties and the fuzzer."""

from __future__ import annotations

import struct

SPEC = struct.Struct("<3sBBBBBIIIB3sQQQI")  # the 52 bytes before the text


def spec_verdict(raw: bytes, size: int) -> str:
    """What spec §2 says of a file whose first bytes are `raw` and whose size is `size`:
    valid, or why kvgroomd must leave it alone (short, magic, unknown_format,
    invalid, truncated)."""
    if len(raw) < SPEC.size:
        return "short"
    (magic, version, quant, _, _, _, tokens, _, _, abi, _, _, _, payload, text) = SPEC.unpack(
        raw[: SPEC.size]
    )
    if magic != b"KVC":
        return "magic"
    if version != 1 or abi not in (0, 2):
        return "unknown_format"  # maybe a newer engine's
    if quant not in (2, 4) or tokens == 0:
        return "invalid"
    if size < SPEC.size + text + payload:
        return "truncated"
    return "valid"
