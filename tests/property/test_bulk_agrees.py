"""The bulk reader and the single-file parser give the same verdict, and the
same fields, for every byte string and every engine layout (issue #11.1:
a u64 that wrapped in the bulk path once made a file valid there and
invalid here).

The pure halves are compared directly (format/header.read_header against
format/bulk.classify over an in-memory buffer), many headers at once;
tests/property/test_fuzz_header.py compares the file-reading halves
(read_snapshot against read_many) on mutated real files.
"""

from __future__ import annotations

import random
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvgroomd.core.index import Index, Snapshot, snapshot_of
from kvgroomd.daemon.pinned import PinnedDir
from kvgroomd.daemon.read import Invalid, read_many, read_snapshot
from kvgroomd.format.bulk import classify
from kvgroomd.format.header import Header, Reason, Unparsable, read_header
from kvgroomd.format.layouts import (
    CODEC_AT_7,
    CODEC_AT_21,
    DETECT,
    ENGINES,
    HEADER_72,
    LAYOUTS,
    ROW_FIELDS,
    V1,
    Reading,
)
from kvgroomd.format.names import SnapshotName
from tests.property.spec import spec_layout

ENGINE_CHOICES = (DETECT, *ENGINES)
WIDTH = 4096 + 8
U8, U32, U64 = (st.integers(0, 2**b - 1) for b in (8, 32, 64))
FINGERPRINTS = (0, 1, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1)
LAYOUT_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "layouts"


def bulk(raws: list[bytes], sizes: list[int], engine: str) -> list[object]:
    """classify's verdict on each raw head: the row's fields, or None."""
    buf = np.zeros((len(raws), WIDTH), dtype=np.uint8)
    for i, raw in enumerate(raws):
        buf[i, 4 : 4 + len(raw[:4096])] = np.frombuffer(raw[:4096], dtype=np.uint8)
    nread = np.array([min(len(r), 4096) for r in raws], dtype=np.int64)
    found = classify(buf, offset=4, stride=WIDTH, rows=np.arange(len(raws)), nread=nread,
                     size=np.array(sizes, dtype=np.int64), engine=engine)  # fmt: skip
    out: list[object] = []
    for j in range(len(raws)):
        if found.layout[j] < 0:
            out.append(None)
            continue
        cols = {f: int(found.columns[f][j]) for f in (*ROW_FIELDS, "codec", "chunk_size")}
        out.append((int(found.code[j]), int(found.text_at[j]), cols))
    return out


def single(raw: bytes, size: int, engine: str) -> object:
    """read_header's verdict in the same shape (None when not a header)."""
    h = read_header(raw[:4096], size, engine=engine)
    if isinstance(h, Unparsable):
        return None
    code = h.reason_code if h.reason_code >= 0 else int(h.reason)
    cols = {f: getattr(h, f) for f in ROW_FIELDS if f != "reason"} | {"reason": code}
    return (h.layout, h.text_at, cols | {"codec": h.codec, "chunk_size": h.chunk_size})


# -- drawing headers of every layout ------------------------------------------------


@st.composite
def heads(draw: st.DrawFn) -> tuple[bytes, int]:
    """A header of some layout (often valid, often almost), text, and a size."""
    family = draw(st.sampled_from([V1, V1, CODEC_AT_21, CODEC_AT_7, HEADER_72]))
    # The 72-byte header's fingerprint: the u64 values a signed or narrowed
    # copy would get wrong, and any other.
    fp = draw(st.sampled_from(FINGERPRINTS) | U64) if family == HEADER_72 else 0
    extra = bytearray(draw(st.binary(min_size=24, max_size=24) | st.just(bytes(24))))
    extra[8:16] = fp.to_bytes(8, "little")
    text = draw(st.integers(0, 6000) | U32)
    payload = draw(st.integers(0, 100_000) | U64 | st.sampled_from([2**63, 2**64 - 1]))
    h = Header(
        quant_bits=draw(st.sampled_from([2, 4]) | U8), reason=Reason.COLD,
        ext_flags=draw(U8), model_id=draw(st.sampled_from([0, 1]) | U8),
        tokens=draw(st.integers(1, 50_000) | U32), hits=draw(U32), ctx_size=draw(U32),
        abi=draw(st.sampled_from([0, 2, 3, 4]) | U8), created_at=draw(U64),
        last_used=draw(U64), payload_bytes=payload, text_bytes=text,
        reason_code=draw(U8), layout=family, model_fp=fp,
        codec=draw(st.sampled_from([0, 1]) | U8),
        chunk_size=draw(st.sampled_from([0, 1 << 24, 1 << 27]) | U32),
        extra=bytes(extra) if family == HEADER_72 else b"",
    )  # fmt: skip
    raw = bytearray(h.encode())
    for _ in range(draw(st.integers(0, 3))):  # a few bytes anywhere in the header
        raw[draw(st.integers(0, len(raw) - 1))] = draw(U8)
    body = draw(st.binary(max_size=300))
    exact = len(raw) + text + payload
    size = draw(st.sampled_from([exact, exact - 1, exact + 7]) | st.integers(0, 2**63 - 1))
    return bytes(raw) + body, max(0, min(size, 2**63 - 1))


@given(st.lists(heads() | st.tuples(st.binary(max_size=120), st.integers(0, 2**40)),
                min_size=1, max_size=12), st.sampled_from(ENGINE_CHOICES))  # fmt: skip
@settings(max_examples=600, deadline=None)
def test_bulk_and_single_agree_on_any_bytes(items: list[tuple[bytes, int]], engine: str) -> None:
    """classify and read_header give the same verdict and fields, and both
    the oracle's layout, for headers of every layout and junk alike."""
    raws, sizes = [r for r, _ in items], [s for _, s in items]
    many = bulk(raws, sizes, engine)
    for raw, size, got in zip(raws, sizes, many, strict=True):
        one = single(raw, size, engine)
        assert got == one, (engine, raw[:80].hex(), size)
        h = read_header(raw[:4096], size, engine=engine)
        layout = h.layout_name if isinstance(h, Header) else h.why
        assert layout == spec_layout(raw[:4096], size, engine)


def test_seeded_fuzz_of_mutated_fixture_heads() -> None:
    """20,000 mutants of the real fixture heads (every layout), in batches:
    bulk and single verdicts and fields are identical under every engine."""
    root = Path(__file__).resolve().parents[1] / "fixtures"
    pool = [p.read_bytes()[:4096] for p in sorted(root.glob("**/*.kv*")) if p.is_file()]
    rng = random.Random(14)
    for _batch in range(40):
        raws, sizes = [], []
        for _ in range(500):
            b = bytearray(rng.choice(pool))
            for _ in range(rng.randint(1, 3)):
                if not b:
                    break
                at = rng.randrange(min(len(b), 80))
                if rng.random() < 0.5:
                    b[at] ^= 1 << rng.randrange(8)
                else:
                    width = rng.choice((1, 4, 8))
                    value = rng.choice((0, 1, 2, 3, 255, 2**31, 2**32 - 1, 2**63, 2**64 - 1))
                    b[at : at + width] = (value % (1 << (8 * width))).to_bytes(width, "little")
            raws.append(bytes(b))
            sizes.append(max(0, len(b) + rng.choice((0, 0, -1, 5, rng.randrange(1 << 30)))))
        engine = rng.choice(ENGINE_CHOICES)
        for raw, size, got in zip(raws, sizes, bulk(raws, sizes, engine), strict=True):
            assert got == single(raw, size, engine), (engine, raw[:80].hex(), size)


# -- the u64 that wrapped -------------------------------------------------------------


@pytest.mark.parametrize("payload", [2**63, 2**63 + 100, 2**64 - 1])
@pytest.mark.parametrize("layout", [lay.name for lay in LAYOUTS])
def test_a_payload_of_2_63_or_more_is_truncated_on_every_path(tmp_path: Path, payload: int,
                                                              layout: str) -> None:  # fmt: skip
    """payload_bytes >= 2^63 once read as a negative int64 in the bulk path
    (valid there, truncated here, and then evicted): now both paths, for
    every layout, say truncated, and neither indexes the file."""
    lay = next(x for x in LAYOUTS if x.name == layout)
    abi = {"legacy": 0, "gb10": 4, "codec-at-7": 255}.get(layout, 2)
    h = Header(quant_bits=2, reason=Reason.COLD, ext_flags=0, model_id=0, tokens=100, hits=0,
               ctx_size=32768, abi=abi, created_at=1, last_used=1, payload_bytes=payload,
               text_bytes=10, layout=lay.code)  # fmt: skip
    raw = h.encode() + b"0123456789" + b"DSV4" + bytes(100)
    got = read_header(raw, len(raw), engine=layout if layout in ENGINES else DETECT)
    assert got == Unparsable("truncated", f"{len(raw)} bytes, header needs "
                                          f"{lay.prefix + 10 + payload}")  # fmt: skip
    name = "ab" * 20 + ".kv"
    (tmp_path / name).write_bytes(raw)
    with PinnedDir.at(tmp_path) as directory:
        for engine in ENGINE_CHOICES:
            reading = Reading(engine, other_layouts=True)
            got = read_snapshot(directory, SnapshotName(name, name[:40]), reading=reading)
            assert isinstance(got, Invalid) and got.why == "truncated"
            loaded = read_many(directory, [name], reading=reading)
            assert len(loaded.rows) == 0
            assert [(b.why, b.detail) for b in loaded.invalid] == [(got.why, got.detail)]


def test_other_u64_fields_keep_every_value(tmp_path: Path) -> None:
    """created_at and last_used of 2^63 and more are kept exactly (u64) on
    both paths; the text length u32 at its maximum is just truncated."""
    name = "cd" * 20 + ".kv"
    text = b"x" * 100
    h = Header(quant_bits=2, reason=Reason.EVICT, ext_flags=0, model_id=0, tokens=100, hits=0,
               ctx_size=32768, abi=2, created_at=2**64 - 1, last_used=2**63, payload_bytes=50,
               text_bytes=len(text))  # fmt: skip
    (tmp_path / name).write_bytes(h.encode() + text + b"DSV4" + bytes(46))
    directory = PinnedDir.at(tmp_path)
    one = read_snapshot(directory, SnapshotName(name, name[:40]))
    many = read_many(directory, [name])
    assert not isinstance(one, Invalid) and one is not None
    assert (one.header.created_at, one.header.last_used) == (2**64 - 1, 2**63)
    assert (int(many.rows[0]["created_at"]), int(many.rows[0]["last_used"])) == (2**64 - 1, 2**63)
    raw = bytearray(h.encode() + text)
    struct.pack_into("<I", raw, 48, 2**32 - 1)
    (tmp_path / name).write_bytes(bytes(raw))
    one = read_snapshot(directory, SnapshotName(name, name[:40]))
    assert isinstance(one, Invalid) and one.why == "truncated"
    assert [b.why for b in read_many(directory, [name]).invalid] == ["truncated"]
    directory.unpin()


# -- the 72-byte header's fingerprint, file to index row ----------------------------


@given(st.lists(st.sampled_from(FINGERPRINTS) | U64, min_size=5, max_size=5))
@settings(max_examples=40, deadline=None)
def test_the_fingerprint_survives_both_readers_into_the_index(fps: list[int]) -> None:
    """The real nazerim files with bytes 56..63 set: read_many's row and
    read_snapshot's Snapshot carry the same fingerprint, and so does what
    the index rebuilds from either (a lost one would read as 0: "loaded by
    every engine", which supersedes wrongly)."""
    sources = sorted((LAYOUT_FIXTURES / "nazerim-v2-72-byte-header").glob("*.kv"))
    reading = Reading("header-72")
    with tempfile.TemporaryDirectory() as tmp:
        for src, fp in zip(sources, fps, strict=True):
            raw = bytearray(src.read_bytes())
            raw[56:64] = fp.to_bytes(8, "little")
            (Path(tmp) / src.name).write_bytes(bytes(raw))
        names = [p.name for p in sources]
        with PinnedDir.at(Path(tmp)) as directory:
            bulk = read_many(directory, names, reading=reading)
            singles = [read_snapshot(directory, SnapshotName(n, n[:40]), reading=reading)
                       for n in names]  # fmt: skip
    assert not bulk.invalid and [n.decode() for n in bulk.names.tolist()] == names
    index = Index()
    index.put_many(bulk.rows, bulk.names)
    for row, one, fp in zip(bulk.rows, singles, fps, strict=True):
        assert isinstance(one, Snapshot) and one.header.model_fp == fp
        assert int(row["model_fp"]) == fp
        assert snapshot_of(one.name, row) == index.get(one.name) == _as_row(one)


def _as_row(s: Snapshot) -> Snapshot:
    """`s` as the index gives it back after put (its header's `extra`, which
    the index does not keep, dropped; text keys as read)."""
    index = Index()
    index.put(s)
    got = index.get(s.name)
    assert got is not None
    return got
