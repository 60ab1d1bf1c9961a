"""The layouts fixture set (tests/fixtures/layouts: real files written by the
store code of five ds4 variants), read through the layout registry, agrees
with its manifest field by field, and with every reader's answer.

Each file must be read in its own layout (never another), under detection
and under every named engine; each engine the registry describes must list
exactly the files the real engines listed; the text, payload, trailer, LZ4
framing and prefix relations must be where the layout says. Files are only
read here; tests/integration/test_layouts.py puts them in real directories.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from kvgroomd.daemon.pinned import PinnedDir
from kvgroomd.daemon.read import DETECTING, Invalid, read_many, read_snapshot, read_text
from kvgroomd.format.header import Header, read_header, sha1_hex
from kvgroomd.format.layouts import DETECT, ENGINES, Reading, reads
from kvgroomd.format.names import SnapshotName, classify

ROOT = Path(__file__).resolve().parents[1] / "fixtures" / "layouts"
MANIFEST: dict[str, Any] = json.loads((ROOT / "manifest.json").read_text("utf-8"))
FILES: list[dict[str, Any]] = MANIFEST["files"]
# The manifest's folders, and the registry's name of the layout each holds.
FOLDER_LAYOUT = {
    "pr186-head-v2-codec-at-7": "codec-at-7",
    "pr186-fork-v2-codec-at-21-shuffle-hc": "codec-at-21",
    "pr186-fork-v2-codec-at-21-plain-lz4": "codec-at-21",
    "nazerim-v2-72-byte-header": "header-72",
    "redhunt07-v1-abi4": "gb10",
}
# The manifest's readers, by the registry's name of the layout each engine writes.
READER_ENGINE = {"a7": "codec-at-7", "jt_shuf": "codec-at-21", "jt_plain": "codec-at-21",
                 "nz": "header-72", "rh": "gb10", "up": "upstream"}  # fmt: skip


def raw_of(entry: dict[str, Any]) -> bytes:
    return (ROOT / entry["path"]).read_bytes()


def parsed(entry: dict[str, Any], engine: str = DETECT) -> Header:
    raw = raw_of(entry)
    h = read_header(raw[:4096], len(raw), engine=engine)
    assert isinstance(h, Header), (entry["path"], h)
    return h


@pytest.fixture(params=FILES, ids=[f["path"] for f in FILES])
def entry(request: pytest.FixtureRequest) -> dict[str, Any]:
    return dict(request.param)


class TestManifest:
    def test_every_file_is_listed_once(self) -> None:
        """The folders hold exactly the manifest's files (and every folder is a layout)."""
        on_disk = {str(p.relative_to(ROOT)) for p in ROOT.glob("*/*") if p.is_file()}
        assert sorted(on_disk) == sorted(f["path"] for f in FILES)
        assert {p.name for p in ROOT.iterdir() if p.is_dir()} == set(FOLDER_LAYOUT)

    def test_the_same_names_recur_across_folders(self) -> None:
        """The same texts were stored by every variant: a name is in several folders."""
        names = [Path(f["path"]).name for f in FILES]
        assert len(set(names)) == 6 < len(names)


class TestEachFile:
    def test_read_in_its_own_layout_under_every_engine(self, entry: dict[str, Any]) -> None:
        """Detection and every named engine read the file in its own layout:
        naming another engine never makes a file read as that engine's."""
        layout = FOLDER_LAYOUT[entry["layout"]]
        for engine in (DETECT, *ENGINES):
            assert parsed(entry, engine).layout_name == layout, engine

    def test_header_fields_are_the_manifests(self, entry: dict[str, Any]) -> None:
        """Every header field the manifest records, as the registry reads it."""
        raw = raw_of(entry)
        h = parsed(entry)
        assert len(raw) == entry["file_size"]
        assert raw[:3].decode() == entry["magic"] and raw[3] == entry["version"]
        assert (h.quant_bits, h.ext_flags, h.tokens, h.hits, h.ctx_size) == (
            entry["quant_bits"], entry["ext_flags"], entry["tokens"], entry["hits"],
            entry["ctx_size"])  # fmt: skip
        assert (int(h.reason), h.reason.label) == (entry["reason"], entry["reason_name"])
        assert (h.created_at, h.last_used) == (entry["created_at"], entry["last_used"])
        assert h.payload_bytes == entry["header_u64_at_40"] == entry["payload_bytes"]
        assert h.payload_bytes == entry["payload_on_disk_bytes"]  # compressed: bytes on disk
        assert h.text_bytes == entry["text_bytes"]
        assert h.text_at == entry["header_bytes"] + 4
        assert raw[7] == entry["byte7"] and raw[20:24].hex() == entry["bytes20_23_hex"]
        if entry["model_id"] is None:  # codec-at-7: byte 7 is the codec, no ABI byte
            assert (h.model_id, h.abi) == (entry["byte7"], 255)
        else:
            assert (h.model_id, h.abi) == (entry["model_id"], entry["abi"])
        assert h.codec == (entry["codec"] or 0)
        assert h.chunk_size == (entry["chunk_size"] or 0)
        if entry["chunk_log2"]:
            assert h.chunk_size == 1 << entry["chunk_log2"]
        assert h.encode() == raw[: h.text_at]

    def test_the_72_byte_headers_extra_fields(self, entry: dict[str, Any]) -> None:
        """Lineage id, weights fingerprint, bucket, level, stale, reserved."""
        extra = entry.get("v2_extra")
        h = parsed(entry)
        if extra is None:
            assert h.extra == b""
            return
        conv, fp, bucket, level, stale = struct.unpack_from("<QQIBB", h.extra)
        assert (conv, fp, bucket, level, stale) == (
            extra["conv_id"], extra["model_fp"], extra["bucket"], extra["level"], extra["stale"])
        assert h.extra[22:24].hex() == extra["reserved_70_71_hex"]
        # Written by an engine with no model path: fingerprint 0 (the daemon's
        # cases with one: tests/unit/test_fingerprints.py).
        assert h.model_fp == extra["model_fp"] == 0

    def test_size_rule_text_payload_and_trailer(self, entry: dict[str, Any]) -> None:
        """File size >= header + 4 + text + the u64 at 40; the text there hashes
        to the name; the payload follows (raw DSV4, or the LZ4 framing's u64
        total and u32 chunk count), then the trailer the manifest counts."""
        raw = raw_of(entry)
        h = parsed(entry)
        assert (len(raw) >= h.min_file_size) is entry["size_rule_holds"]
        text = raw[h.text_at : h.text_at + h.text_bytes]
        assert sha1_hex(text) == entry["text_sha1"]
        assert (Path(entry["path"]).name == f"{sha1_hex(text)}.kv") is entry["name_matches_text"]
        payload = raw[h.text_at + h.text_bytes :][: h.payload_bytes]
        assert payload.startswith(b"DSV4") is entry["payload_starts_DSV4"]
        assert len(raw) - h.min_file_size == entry["trailer_bytes"]
        if framing := entry.get("lz4_framing"):
            total, chunks = struct.unpack_from("<QI", payload)
            assert (total, chunks) == (framing["uncompressed_total"], framing["chunk_count"])
            raw0, comp0 = struct.unpack_from("<II", payload, 12)
            assert (raw0, comp0) == (framing["chunk0_raw"], framing["chunk0_comp"])
            assert h.codec == 1

    def test_each_engine_lists_what_the_real_engine_listed(self, entry: dict[str, Any]) -> None:
        """For every reader of the manifest: the registry's engine lists the
        file exactly when the real one did (both codec-at-21 readers list
        both codec-at-21 variants: their headers are identical)."""
        h = parsed(entry)
        for reader, answer in entry["readers"].items():
            engine = READER_ENGINE[reader]
            listed = bool(reads(engine, np.array([h.layout]), np.array([h.abi]))[0])
            assert listed is answer["listed"], reader
            assert Reading(engine).keeps(h.layout, h.abi) is answer["listed"], reader
        assert entry["accepted_by_own_engine"]

    def test_single_and_bulk_readers_agree(self, entry: dict[str, Any]) -> None:
        """read_snapshot and read_many index the file alike (and both find its
        text where its layout puts it), under every engine."""
        name = Path(entry["path"]).name
        with PinnedDir.at(ROOT / Path(entry["path"]).parent) as directory:
            for engine in (DETECT, *ENGINES):
                self.agree(directory, name, Reading(engine), entry)

    @staticmethod
    def agree(directory: PinnedDir, name: str, reading: Reading, entry: dict[str, Any]) -> None:
        """read_snapshot and read_many of one file, under one reading."""
        one = read_snapshot(directory, SnapshotName(name, name[:40]), reading=reading)
        many = read_many(directory, [name], reading=reading)
        if isinstance(one, Invalid):
            assert one.why == "other_layout" and one.layout == FOLDER_LAYOUT[entry["layout"]]
            assert [(b.why, b.detail, b.layout) for b in many.invalid] == [
                (one.why, one.detail, one.layout)]  # fmt: skip
            return
        assert one is not None and len(many.rows) == 1
        assert int(many.rows[0]["layout"]) == one.header.layout
        assert (int(many.rows[0]["head"]), int(many.rows[0]["bkey"])) == (one.head, one.bkey)
        assert int(many.rows[0]["tail"]) == one.tail
        text = read_text(directory, one)
        assert text is not None and sha1_hex(text) == entry["text_sha1"]

    def test_detection_alone_counts_none_of_them(self, entry: dict[str, Any]) -> None:
        """With no engine named kvgroomd counts as the upstream engine, which
        lists none of these files: each is `other_layout`, named by layout."""
        name = Path(entry["path"]).name
        with PinnedDir.at(ROOT / Path(entry["path"]).parent) as directory:
            got = read_snapshot(directory, SnapshotName(name, name[:40]), reading=DETECTING)
        assert isinstance(got, Invalid) and got.why == "other_layout"
        assert got.layout == FOLDER_LAYOUT[entry["layout"]]
        assert "evict_other_layouts" in got.detail
        assert isinstance(classify(name), SnapshotName)


@pytest.mark.parametrize("folder", sorted(FOLDER_LAYOUT))
def test_prefix_relations_are_the_manifests(folder: str) -> None:
    """Within each folder, a text is a strict prefix of exactly the files
    its `prefix_of` lists, read where the layout puts the texts."""
    entries = [f for f in FILES if f["layout"] == folder]
    texts = {}
    for f in entries:
        raw, h = raw_of(f), parsed(f)
        texts[Path(f["path"]).name] = raw[h.text_at : h.text_at + h.text_bytes]
    for f in entries:
        mine = texts[Path(f["path"]).name]
        longer = {n for n, t in texts.items() if len(t) > len(mine) and t.startswith(mine)}
        assert longer == set(f["prefix_of"]), f["path"]
