"""The layout registry (format/layouts.py): its data, detection that never
guesses, which engine reads what, supersession only within one engine's
files, and the header bytes the deleter re-checks for every layout."""

from __future__ import annotations

import dataclasses
import struct
from pathlib import Path

import numpy as np
import pytest

from kvgroomd.core.decision import Cause
from kvgroomd.core.index import Index, decide, decide_rows
from kvgroomd.core.supersede import can_stand_in
from kvgroomd.daemon.pinned import PinnedDir
from kvgroomd.daemon.read import Invalid, read_many, read_snapshot
from kvgroomd.format.engine import COMPRESSING_LAYOUTS, ENGINE_LAYOUTS
from kvgroomd.format.header import Header, Reason, Unparsable, read_header, sha1_hex
from kvgroomd.format.layouts import (
    BY_NAME,
    CODEC_AT_7,
    CODEC_AT_21,
    DETECT,
    ENGINES,
    HEADER_72,
    LAYOUTS,
    NO_ABI,
    V1,
    Reading,
    counted,
    engine_of,
    entry_of,
    reads,
    same_engine,
    text_at,
)
from kvgroomd.format.names import SnapshotName
from tests.unit.builders import CTX, chat_text, index_of, snapshot

LAYOUT_FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "layouts"
C = chat_text(30_000)


def head(family: int, **kw: object) -> Header:
    """A valid header of `family` (its ABI as its writer stamps it)."""
    abi = {V1: 2, CODEC_AT_21: 2, HEADER_72: 2, CODEC_AT_7: NO_ABI}[family]
    fields: dict[str, object] = {
        "quant_bits": 2, "reason": Reason.CONTINUED, "ext_flags": 0, "model_id": 0,
        "tokens": 1000, "hits": 0, "ctx_size": CTX, "abi": abi, "created_at": 1_780_000_000,
        "last_used": 1_780_000_000, "payload_bytes": 500, "text_bytes": 1000, "layout": family,
    }  # fmt: skip
    fields.update(kw)
    return Header(**fields)  # type: ignore[arg-type]


class TestRegistry:
    def test_names_and_codes(self) -> None:
        """Each layout has one name; the families are the four header structures;
        the engines config may name are the entries that have a reader."""
        names = [lay.name for lay in LAYOUTS]
        assert names == ["upstream", "legacy", "gb10", "codec-at-21", "codec-at-7", "header-72"]
        assert {lay.code for lay in LAYOUTS} == {V1, CODEC_AT_21, CODEC_AT_7, HEADER_72}
        assert ENGINES == ENGINE_LAYOUTS == ("upstream", "gb10", "codec-at-21", "codec-at-7",
                                             "header-72")  # fmt: skip
        assert COMPRESSING_LAYOUTS == ("codec-at-21", "codec-at-7")
        for lay in LAYOUTS:
            assert set(lay.reads) <= set(names)
            assert not lay.is_engine or lay.name in lay.reads
            assert lay.fields[-1].name == "text_bytes"
            assert lay.fields[-1].offset == lay.header_bytes
            assert 20 <= lay.judged_bytes <= lay.prefix

    def test_text_offsets(self) -> None:
        """Texts start after the header and its u32 length: 52, or 76 for the 72-byte one."""
        assert [text_at(c) for c in (V1, CODEC_AT_21, CODEC_AT_7, HEADER_72)] == [52, 52, 52, 76]

    def test_entries_by_layout_byte_and_abi(self) -> None:
        """(layout, abi) names one entry: version 1 splits by payload ABI."""
        assert entry_of(V1, 2) is BY_NAME["upstream"]
        assert entry_of(V1, 0) is BY_NAME["legacy"]
        assert entry_of(V1, 3) is entry_of(V1, 4) is BY_NAME["gb10"]
        assert entry_of(V1, 7) is None
        assert entry_of(CODEC_AT_7, NO_ABI) is BY_NAME["codec-at-7"]
        assert entry_of(HEADER_72, 2) is BY_NAME["header-72"]

    @pytest.mark.parametrize("family", [V1, CODEC_AT_21, CODEC_AT_7, HEADER_72])
    @pytest.mark.parametrize("codec", [0, 1])
    def test_encode_then_read_is_identity(self, family: int, codec: int) -> None:
        """A header written in any layout reads back as itself (with the file's size)."""
        chunk = {CODEC_AT_21: 1 << 24, CODEC_AT_7: 1 << 24}.get(family, 0) if codec else 0
        fp = 0xFEDC_BA98_7654_3210 if family == HEADER_72 else 0
        extra = (struct.pack("<QQIBB2x", 77, fp, 3, 1, 0) if family == HEADER_72 else b"")
        model = codec if family == CODEC_AT_7 else 1
        h = head(family, codec=codec if family in (CODEC_AT_21, CODEC_AT_7) else 0,
                 chunk_size=chunk, extra=extra, model_id=model, model_fp=fp)  # fmt: skip
        raw = h.encode()
        assert len(raw) == h.text_at
        assert read_header(raw, h.min_file_size, engine=h.layout_name) == h
        assert h.pack() == raw[: h.entry.judged_bytes]

    def test_detect_with_the_size_reads_the_one_layout_that_fits(self) -> None:
        """A raw codec-at-21 header is also a header-72 one by its first bytes;
        the file's size rules out the reading whose text would not fit."""
        h = head(CODEC_AT_21, text_bytes=1000, payload_bytes=500)
        raw = h.encode() + C[:1000]
        assert read_header(raw, h.min_file_size) == h


class TestNeverGuesses:
    @staticmethod
    def twin() -> tuple[bytes, int]:
        """A file both a raw codec-at-21 engine and a 72-byte-header engine
        would read: its first text bytes spell a small 72-byte header tail."""
        text = bytearray(C[:200])
        text[17] = 0  # stale (byte 69)
        text[18:20] = b"\0\0"  # reserved (70-71)
        text[20:24] = struct.pack("<I", 100)  # text_bytes of the 72-byte reading (72-75)
        h = head(CODEC_AT_21, text_bytes=len(text), payload_bytes=1000)
        raw = h.encode() + bytes(text)
        return raw, len(raw) + 1000

    def test_two_readings_leave_it_unknown(self) -> None:
        """With nothing named the file is unknown_format, naming both layouts."""
        raw, size = self.twin()
        got = read_header(raw, size)
        assert isinstance(got, Unparsable)
        assert (got.why, got.detail) == (
            "unknown_format", "ambiguous: codec-at-21 or header-72 (engine.layout names the "
            "engine's layout)")  # fmt: skip

    @pytest.mark.parametrize(("engine", "layout"), [("codec-at-21", "codec-at-21"),
                                                    ("header-72", "header-72")])  # fmt: skip
    def test_naming_the_engine_settles_it(self, engine: str, layout: str) -> None:
        """engine.layout names which of the two readings is the engine's."""
        raw, size = self.twin()
        got = read_header(raw, size, engine=engine)
        assert isinstance(got, Header) and got.layout_name == layout

    def test_naming_a_third_engine_settles_nothing(self) -> None:
        """An engine that is neither keeps the doubt."""
        raw, size = self.twin()
        got = read_header(raw, size, engine="upstream")
        assert isinstance(got, Unparsable) and got.why == "unknown_format"

    def test_codec_at_7_with_an_odd_chunk_needs_its_name(self) -> None:
        """A codec-at-7 header whose chunk size does not end in a 0 byte (no
        writer's) is unknown_format until engine.layout names codec-at-7."""
        h = head(CODEC_AT_7, codec=1, model_id=1, chunk_size=(1 << 20) + 5)
        raw = h.encode()
        got = read_header(raw, h.min_file_size)
        assert isinstance(got, Unparsable) and got.why == "unknown_format"
        assert read_header(raw, h.min_file_size, engine="codec-at-7") == h
        assert isinstance(read_header(raw, h.min_file_size, engine="codec-at-21"), Unparsable)

    @pytest.mark.parametrize(("at", "value"), [(21, 2), (23, 1), (22, 5)])
    def test_codec_at_21_bytes_no_writer_stamps_are_unknown(self, at: int, value: int) -> None:
        """A codec byte of 2, a nonzero byte 23 or a chunk log2 on a raw file:
        no codec-at-21 writer does that, so the file is no codec-at-21 file."""
        raw = bytearray(head(CODEC_AT_21).encode())
        raw[at] = value
        got = read_header(bytes(raw), 10**6)
        assert isinstance(got, Unparsable) and got.why == "unknown_format"

    def test_a_chunk_too_large_is_invalid_to_its_engine(self) -> None:
        """Recognised, but its engine refuses it: invalid, with the layout named."""
        raw = bytearray(head(CODEC_AT_21, codec=1, chunk_size=1 << 24).encode())
        raw[22] = 27  # 128 MiB chunks: above the engine's 64 MiB
        got = read_header(bytes(raw), 10**6)
        assert got == Unparsable("invalid", "chunk_log2=27 (codec-at-21)")


class TestWhichEngineReadsWhat:
    CASES = ((V1, 2), (V1, 0), (V1, 3), (V1, 4), (CODEC_AT_21, 2), (CODEC_AT_7, NO_ABI),
             (HEADER_72, 2), (V1, 7))  # fmt: skip

    @pytest.mark.parametrize(
        ("engine", "listed"),
        [("upstream", "10000000"), ("codec-at-21", "10001000"),
         ("codec-at-7", "11111100"), ("header-72", "10000010"), ("gb10", "00110000"),
         (DETECT, "10000000")],
    )  # fmt: skip
    def test_reads(self, engine: str, listed: str) -> None:
        """What each engine lists (its sources; the fixtures' manifest checks
        it on real files). With nothing named, kvgroomd counts as upstream."""
        layouts = np.array([c[0] for c in self.CASES])
        abis = np.array([c[1] for c in self.CASES])
        assert "".join("1" if x else "0" for x in reads(engine, layouts, abis)) == listed
        counts = counted(engine, layouts, abis)
        assert counts.tolist() == [x == "1" or i == 1 for i, x in enumerate(listed)]  # + legacy

    def test_detect_counts_as_upstream(self) -> None:
        assert engine_of(DETECT) is BY_NAME["upstream"]

    def test_reading_keeps_and_refuses(self) -> None:
        """A Reading keeps what its engine counts; with other_layouts every
        known layout; the refusal names the layout and what to set."""
        assert Reading().keeps(V1, 2) and Reading().keeps(V1, 0)
        assert not Reading().keeps(HEADER_72, 2)
        assert Reading(other_layouts=True).keeps(HEADER_72, 2)
        assert not Reading(other_layouts=True).keeps(V1, 7)
        assert Reading("header-72").keeps(HEADER_72, 2)
        why = Reading().refusal(HEADER_72, 2)
        assert why.startswith("header-72, written by nazerim/ds4")
        assert "engine.layout: header-72" in why and "evict_other_layouts" in why
        assert "which does not read it" in Reading("gb10").refusal(V1, 2)
        with pytest.raises(ValueError, match="unknown engine layout"):
            Reading("legacy")


F, G = 0x1234_5678_9ABC_DEF0, 2**64 - 1  # two engines' weights fingerprints


def loads(engine_fp: int, file_fp: int) -> bool:
    """The 72-byte header's engine's load guard (nazerim/ds4 ds4_kvstore.c,
    kv_cache_find_text_prefix_skip): `if (e->model_fp && e->model_fp !=
    kc->model_fp) continue;`."""
    return file_fp in (0, engine_fp)


class TestSameEngine:
    @pytest.mark.parametrize(
        ("n", "o", "ok"),
        [((V1, 2, 0, 0), (V1, 2, 0, 0), True), ((V1, 2, 0, 0), (V1, 0, 0, 0), True),
         ((V1, 0, 0, 0), (V1, 2, 0, 0), False), ((V1, 2, 0, 0), (V1, 4, 0, 0), False),
         ((V1, 4, 0, 0), (V1, 3, 0, 0), False), ((V1, 4, 0, 0), (V1, 4, 0, 0), True),
         ((V1, 2, 0, 0), (V1, 2, 1, 0), False), ((CODEC_AT_21, 2, 0, 0), (V1, 2, 0, 0), False),
         ((CODEC_AT_21, 2, 0, 0), (CODEC_AT_21, 2, 0, 0), True),
         ((CODEC_AT_7, NO_ABI, 1, 0), (CODEC_AT_7, NO_ABI, 0, 0), True),  # byte 7 is its codec
         ((HEADER_72, 2, 0, 0), (HEADER_72, 2, 0, 0), True),
         ((HEADER_72, 2, 0, F), (HEADER_72, 2, 0, F), True),  # one engine's files
         ((HEADER_72, 2, 0, G), (HEADER_72, 2, 0, G), True),
         ((HEADER_72, 2, 0, F), (HEADER_72, 2, 0, G), False),  # two engines'
         ((HEADER_72, 2, 0, 0), (HEADER_72, 2, 0, F), True),  # N: every engine loads it
         ((HEADER_72, 2, 0, F), (HEADER_72, 2, 0, 0), False),  # O: every engine, N: one
         ((HEADER_72, 2, 1, F), (HEADER_72, 2, 0, F), False),  # the model id still counts
         ((HEADER_72, 2, 0, 0), (V1, 2, 0, 0), False)],  # another family
    )  # fmt: skip
    def test_rules(self, n: tuple[int, int, int, int], o: tuple[int, int, int, int],
                   ok: bool) -> None:  # fmt: skip
        """Same family and payload ABI (a current version-1 N also stands in
        for a legacy O), same model where the layout has one, and a
        fingerprint of N's that is 0 or O's."""
        got = same_engine(n_layout=n[0], n_abi=n[1], n_model=n[2], n_fp=n[3], o_layout=o[0],
                          o_abi=o[1], o_model=o[2], o_fp=o[3])  # fmt: skip
        assert bool(got) is ok

    def test_the_fingerprint_rule_is_the_engines_load_guard(self) -> None:
        """N stands in for O exactly when every engine that loads O loads N,
        over engines of every fingerprint (0 included: an engine whose model
        path is missing); and the relation is transitive, which the sweep's
        covered flags rely on."""
        fps = (0, 1, F, G)
        engines = (*fps, 2)  # and one whose fingerprint no file carries
        n, o = np.array(fps * 4, dtype=np.uint64), np.repeat(np.array(fps, dtype=np.uint64), 4)
        got = same_engine(n_layout=HEADER_72, n_abi=2, n_model=0, n_fp=n, o_layout=HEADER_72,
                          o_abi=2, o_model=0, o_fp=o)  # fmt: skip
        for nf, of, ok in zip(n.tolist(), o.tolist(), got.tolist(), strict=True):
            assert ok is all(loads(e, nf) for e in engines if loads(e, of)), (nf, of)
        stands = {(nf, of) for nf, of, ok in zip(n.tolist(), o.tolist(), got.tolist(),
                                                 strict=True) if ok}  # fmt: skip
        for a, b in stands:
            for c in fps:
                assert (b, c) not in stands or (a, c) in stands, (a, b, c)

    def test_supersession_stays_within_a_layout(self) -> None:
        """Of three nested continued files of one text, in three layouts, the
        longest supersedes only the one of its own layout and ABI."""
        old_same = snapshot(C[:10_000], reason=Reason.CONTINUED, layout=HEADER_72)
        old_other = snapshot(C[:12_000], reason=Reason.CONTINUED, layout=CODEC_AT_21)
        old_abi = snapshot(C[:14_000], reason=Reason.CONTINUED, abi=4)
        new = snapshot(C[:20_000], reason=Reason.CONTINUED, layout=HEADER_72)
        index = index_of(old_same, old_other, old_abi, new)
        mask = can_stand_in(index.columns(), new.header, strict_quant=False)
        assert mask.tolist() == [True, False, False, True]


class TestDeleterHeader:
    @pytest.mark.parametrize("folder", sorted(p.name for p in LAYOUT_FIXTURES.iterdir()
                                              if p.is_dir()))  # fmt: skip
    def test_decisions_carry_the_files_own_leading_bytes(self, folder: str) -> None:
        """For every layout the header bytes a decision carries (which the
        deleter compares before it unlinks) are the file's own first bytes,
        whether the decision comes from a read Snapshot or an index row."""
        path = LAYOUT_FIXTURES / folder
        with PinnedDir.at(path) as directory:
            self.check(path, directory)

    @staticmethod
    def check(path: Path, directory: PinnedDir) -> None:
        names = sorted(p.name for p in path.glob("*.kv"))
        loaded = read_many(directory, names, reading=Reading(other_layouts=True))
        assert not loaded.invalid
        index = Index()
        index.put_many(loaded.rows, loaded.names)
        rows = np.arange(len(index))
        for d in decide_rows(index, rows, Cause.BUDGET, 0.0):
            on_disk = (path / d.name).read_bytes()
            assert d.header is not None and on_disk.startswith(d.header), d.name
            one = read_snapshot(directory, SnapshotName(d.name, d.name[:40]),
                                reading=Reading(other_layouts=True))  # fmt: skip
            assert one is not None and not isinstance(one, Invalid)
            assert decide(one, Cause.BUDGET, 0.0).header == d.header


def test_a_touched_upstream_file_changes_layout_under_a_compressing_engine() -> None:
    """A compressing engine rewrites the whole header as version 2 on a hit:
    the same upstream file, under the same name, is then a codec-at-21 one."""
    text = C[:3000]
    up = head(V1, text_bytes=len(text), tokens=len(text))
    touched = dataclasses.replace(up.touched(1_790_000_000), layout=CODEC_AT_21)
    for h in (up, touched):
        raw = h.encode() + text
        got = read_header(raw, h.min_file_size)
        assert isinstance(got, Header)
        assert got.layout_name == ("upstream" if h is up else "codec-at-21")
    assert sha1_hex(text) == sha1_hex(text)  # one name, two layouts in turn
