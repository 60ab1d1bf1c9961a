"""Many raw headers at once: `header.read_header`'s verdicts, fields and
text offsets for a whole buffer of headers, by numpy over the layout
registry (layouts.py), without a Python object per file. The start-up scan
and every rescan read through it (daemon/read.py); a property test holds it
to the single-file parser byte for byte.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from kvgroomd.format.layouts import (
    BY_NAME,
    DETECT,
    LAYOUTS,
    MAGIC,
    ROW_FIELDS,
    U64_FIELDS,
    Layout,
)


@dataclass
class Classified:
    """What `classify` found in many raw headers: for each, the registry
    index of its layout (-1: not read, the single-file parser says why) and,
    for those read, the index's header fields and where the text starts."""

    layout: npt.NDArray[np.int16]  # index in LAYOUTS, or -1
    code: npt.NDArray[np.uint8]  # the index's layout byte
    columns: dict[str, npt.NDArray[Any]]  # ROW_FIELDS, plus codec and chunk_size
    text_at: npt.NDArray[np.int64]


def _views(buf: npt.NDArray[np.uint8], offset: int, stride: int, n: int,
           lay: Layout) -> npt.NDArray[np.void]:  # fmt: skip
    view: npt.NDArray[np.void] = np.ndarray((n,), dtype=lay.dtype(), buffer=buf, offset=offset,
                                            strides=(stride,))  # fmt: skip
    return view


def classify(buf: npt.NDArray[np.uint8], *, offset: int, stride: int,
             rows: npt.NDArray[np.intp], nread: npt.NDArray[np.int64],
             size: npt.NDArray[np.int64], engine: str = DETECT) -> Classified:  # fmt: skip
    """`header.read_header` for many raw headers: row `rows[j]` of `buf`
    holds `nread[j]` bytes of a file of `size[j]` bytes, starting `offset`
    bytes into the buffer, rows `stride` bytes apart. Same verdicts, same
    fields, without a Python object per file."""
    n = len(rows)
    ok_all = np.zeros((len(LAYOUTS), n), dtype=bool)
    cols_of: list[dict[str, npt.NDArray[Any]]] = []
    total = len(buf) if buf.ndim == 1 else buf.shape[0]
    for i, lay in enumerate(LAYOUTS):
        view = _views(buf.reshape(-1), offset, stride, total, lay)[rows] if n else None
        cols: dict[str, npt.NDArray[Any]] = (
            {f.name: view[f.name] for f in lay.fields} if view is not None else
            {f.name: np.zeros(0, dtype=f.dtype) for f in lay.fields}
        )  # fmt: skip
        for k, v in lay.constants.items():
            cols[k] = np.full(n, v, dtype=np.uint8)
        cand = (nread >= lay.prefix) & (cols["magic"] == MAGIC)
        for c in lay.claim_checks(engine):
            cand &= c.mask(cols)
        for c in lay.valid:
            cand &= c.mask(cols)
        # The size rule, exact for any u64 payload: the payload must fit in
        # what the file holds after header and text (never a wrapped sum).
        room = size - lay.prefix - cols["text_bytes"].astype(np.int64)
        fits = room >= 0
        fits[fits] = cols["payload_bytes"][fits] <= room[fits].astype(np.uint64)
        ok_all[i] = cand & fits
        cols_of.append(cols)
    count = ok_all.sum(axis=0)
    first = np.argmax(ok_all, axis=0).astype(np.int16)
    chosen = np.where(count == 1, first, np.int16(-1)).astype(np.int16)
    if engine != DETECT:
        e = LAYOUTS.index(BY_NAME[engine])
        chosen[ok_all[e]] = e
    out = {f: np.zeros(n, dtype=np.uint64 if f in U64_FIELDS else np.uint32)
           for f in (*ROW_FIELDS, "codec", "chunk_size")}  # fmt: skip
    code = np.zeros(n, dtype=np.uint8)
    at = np.zeros(n, dtype=np.int64)
    for i, lay in enumerate(LAYOUTS):
        sel = chosen == i
        if not sel.any():
            continue
        cols = cols_of[i]
        for f, column in out.items():
            if f in cols:
                column[sel] = cols[f][sel]
        if "chunk_log2" in cols:
            log2 = cols["chunk_log2"][sel].astype(np.uint32)
            out["chunk_size"][sel] = np.where(log2 >= 1, np.uint32(1) << np.minimum(log2, 31), 0)
        code[sel] = lay.code
        at[sel] = lay.prefix
    return Classified(chosen, code, out, at)
