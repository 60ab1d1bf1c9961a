"""Snapshot names in bulk: `<40 hex>.kv` as numpy arrays, for the index.

Pure. Many names at once travel as a NAME array (43 ASCII bytes each), not as
a list of str: 100,000 str objects at once fragment Python's small-object
arenas for good (~12 MiB kept after a start-up, measured). The index keeps
no name at all, only the 20 SHA-1 bytes a name carries.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


def sha_of(name: str) -> bytes | None:
    """The 20 SHA-1 bytes a `<40 hex>.kv` name carries (either case), else None."""
    if len(name) != 43 or not name.endswith(".kv"):
        return None
    try:
        sha = bytes.fromhex(name[:40])
    except ValueError:
        return None
    return sha if len(sha) == 20 else None  # fromhex skips whitespace


NAME = np.dtype("S43")
_NIBBLE = np.full(256, 255, dtype=np.uint8)  # ASCII hex digit -> value, 255 otherwise
for _i, _c in enumerate(b"0123456789abcdef"):
    _NIBBLE[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _NIBBLE[_c] = 10 + _i
HEXDIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
SHA_FIELDS = np.dtype([("sha_hi", "<u8"), ("sha_mid", "V4"), ("sha_lo", "<u8")])  # 20 bytes


def names_array(names: Sequence[str] | npt.NDArray[np.bytes_]) -> npt.NDArray[np.bytes_]:
    """`names` as a NAME array (names that are not 43 ASCII characters become
    b"", which no lookup matches)."""
    if isinstance(names, np.ndarray):
        return names.astype(NAME, copy=False)
    return np.array([n.encode() if len(n) == 43 and n.isascii() else b"" for n in names],
                    dtype=NAME)  # fmt: skip


def parse_names(names: npt.NDArray[np.bytes_]) -> tuple[npt.NDArray[np.void], npt.NDArray[np.bool_],
                                                        npt.NDArray[np.bool_]]:  # fmt: skip
    """(SHA_FIELDS records, is `<40 hex>.kv`, has upper-case hex) of each name,
    without a Python object per name."""
    raw = np.frombuffer(names.tobytes(), dtype=np.uint8).reshape(len(names), 43)
    nib = _NIBBLE[raw[:, :40]]
    ok = (nib != 255).all(axis=1) & (raw[:, 40:] == np.frombuffer(b".kv", np.uint8)).all(axis=1)
    upper = ((raw[:, :40] >= ord("A")) & (raw[:, :40] <= ord("F"))).any(axis=1)
    sha = (nib[:, 0::2] << 4) | nib[:, 1::2]
    fields: npt.NDArray[np.void] = np.ascontiguousarray(sha).view(SHA_FIELDS).reshape(len(names))
    return fields, np.asarray(ok, dtype=bool), np.asarray(upper, dtype=bool)
