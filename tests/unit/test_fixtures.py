"""The engine fixture set (tests/fixtures/engine), read through the pure
core, agrees with its manifest.

Every file the manifest lists is checked field by field, for validity (header
parse + size check + name kind), for its text digest and for the prefix
relations between texts. The manifest's `valid` is the upstream engine's
view (antirez/ds4, version 1 and payload ABI 2), so validity is judged as
kvgroomd reads a directory whose engine is upstream's. The files are only
read, never written. The other layouts' fixtures: test_fixtures_layouts.py.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from kvgroomd.format.header import (
    ABI_CURRENT,
    MAGIC,
    PREFIX_BYTES,
    QUANT_BITS,
    VERSION,
    Header,
    Reason,
    Unparsable,
    check_size,
    prefix_digests,
    read_header,
    sha1_hex,
)
from kvgroomd.format.layouts import Reading
from kvgroomd.format.names import ForeignName, SnapshotName, TempName, classify

Entry = dict[str, Any]
OLD_ENGINE = "ds4-2026-05-21"
NEW_ENGINE = "ds4-2026-05-26"
UPSTREAM = Reading("upstream")

# Header fields the manifest gives, and how to read each from the raw bytes
# (offsets of the fixtures README, decoded independently of kvgroomd).
RAW_FIELDS: dict[str, tuple[str, int]] = {
    "version": ("<B", 3), "quant_bits": ("<B", 4), "reason": ("<B", 5),
    "ext_flags": ("<B", 6), "model_id": ("<B", 7), "tokens": ("<I", 8),
    "hits": ("<I", 12), "ctx_size": ("<I", 16), "abi": ("<B", 20),
    "created_at": ("<Q", 24), "last_used": ("<Q", 32), "payload_bytes": ("<Q", 40),
    "text_bytes": ("<I", 48),
}  # fmt: skip
# The same fields as Header attributes (reason is checked separately).
HEADER_FIELDS = [f for f in RAW_FIELDS if f not in ("version", "reason")]


def read(fixtures_dir: Path, entry: Entry) -> bytes:
    return (fixtures_dir / entry["name"]).read_bytes()


def text_of(raw: bytes) -> bytes | None:
    """The text bytes at offset 52, or None when the file is too short for them."""
    if len(raw) < PREFIX_BYTES:
        return None
    n = struct.unpack_from("<I", raw, 48)[0]
    return raw[PREFIX_BYTES : PREFIX_BYTES + n] if len(raw) >= PREFIX_BYTES + n else None


def repaired(raw: bytes) -> bytes:
    """The header with every field the engine rejects set to an acceptable value."""
    out = bytearray(raw[:PREFIX_BYTES])
    out[0:3] = MAGIC
    out[3] = VERSION
    if out[4] not in QUANT_BITS:
        out[4] = 2
    if struct.unpack_from("<I", out, 8)[0] == 0:
        struct.pack_into("<I", out, 8, 1)
    if out[20] not in (0, ABI_CURRENT):
        out[20] = ABI_CURRENT
    return bytes(out)


def expected_failures(invalid_reason: str) -> set[str]:
    """Map the manifest's invalid_reason parts to kvgroomd's verdict kinds."""
    kinds = set()
    for part in invalid_reason.split("; "):
        if part.startswith("bad magic"):
            kinds.add("magic")
        elif part.startswith("unsupported version 2"):
            # A version-2 header the registry knows (a raw codec-at-21 file):
            # another engine's snapshot, which the upstream engine does not read.
            kinds.add("other_layout")
        elif part.startswith(("unsupported version", "unknown payload ABI")):
            kinds.add("unknown_format")
        elif part.startswith(("tokens=0", "quant_bits=")):
            kinds.add("invalid")
        elif part.startswith("truncated"):
            kinds.add("truncated")
        elif part.startswith("name is not"):
            kinds.add("name")
        else:
            pytest.fail(f"invalid_reason part not understood: {part!r}")
    return kinds


def verdict(entry: Entry, raw: bytes) -> tuple[list[str], Header | Unparsable]:
    """Everything kvgroomd finds wrong with a file in an upstream engine's
    directory: header, size, layout and name."""
    failures = []
    got = Header.parse(raw)
    if isinstance(got, Unparsable):
        failures.append(got.why)
    elif (short := check_size(got, len(raw))) is not None:
        failures.append(short.why)
    elif not UPSTREAM.keeps(got.layout, got.abi):
        failures.append("other_layout")
    # One read with the file's size says the same as the two steps above.
    full = read_header(raw, len(raw), engine="upstream")
    once = (full.why if isinstance(full, Unparsable)
            else "valid" if UPSTREAM.keeps(full.layout, full.abi) else "other_layout")  # fmt: skip
    assert once == (failures[0] if failures else "valid")
    if not isinstance(classify(entry["name"]), SnapshotName):
        failures.append("name")
    return failures, got


@pytest.fixture(scope="module")
def manifest(fixtures_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((fixtures_dir / "manifest.json").read_text("utf-8"))
    return data


@pytest.fixture(scope="module")
def texts(fixtures_dir: Path, manifest: dict[str, Any]) -> dict[str, bytes]:
    """Readable texts of all fixture files, by name."""
    out = {}
    for e in manifest["files"]:
        t = text_of(read(fixtures_dir, e))
        if t is not None:
            out[e["name"]] = t
    return out


class TestManifest:
    def test_manifest_lists_exactly_the_files_in_the_folder(
        self, fixtures_dir: Path, manifest: dict[str, Any]
    ) -> None:
        """Every file in the folder but README.md and manifest.json has one entry."""
        on_disk = {p.name for p in fixtures_dir.iterdir()} - {"README.md", "manifest.json"}
        listed = [e["name"] for e in manifest["files"]]
        assert len(listed) == len(set(listed))
        assert set(listed) == on_disk

    def test_set_has_every_kind_the_readme_promises(self, manifest: dict[str, Any]) -> None:
        """The set holds valid and invalid files, both writers and all reasons 1-6."""
        files = manifest["files"]
        assert {e["valid"] for e in files} == {True, False}
        assert {e["writer"] for e in files} == {OLD_ENGINE, NEW_ENGINE}
        assert {e["reason"] for e in files if e["parseable"]} >= {1, 2, 3, 4, 5, 6}
        assert sum(1 for e in files if e["prefix_of"]) >= 4

    def test_chain_c_is_nested(self, manifest: dict[str, Any]) -> None:
        """Chain C's 1152-token continued is a prefix of the four later C files."""
        by_name = {e["name"]: e for e in manifest["files"]}
        first = by_name["f0922bcf3e95efae8b6fe801839d6c6b12b7179d.kv"]
        later = sorted(by_name[n]["text_bytes"] for n in first["prefix_of"])
        assert later == [1920, 2304, 3456, 3622]


class TestEachFixtureFile:
    def test_file_size(self, fixtures_dir: Path, manifest_entry: Entry) -> None:
        """The file's size on disk is the manifest's file_size."""
        assert len(read(fixtures_dir, manifest_entry)) == manifest_entry["file_size"]

    def test_raw_header_bytes_match_the_manifest(
        self, fixtures_dir: Path, manifest_entry: Entry
    ) -> None:
        """Each header field, decoded at the README's offset, equals the manifest's."""
        raw = read(fixtures_dir, manifest_entry)
        assert manifest_entry["parseable"] is (len(raw) >= PREFIX_BYTES)
        if not manifest_entry["parseable"]:
            return
        assert raw[0:3].decode("latin-1") == manifest_entry["magic"]
        for field, (fmt, offset) in RAW_FIELDS.items():
            assert struct.unpack_from(fmt, raw, offset)[0] == manifest_entry[field], field

    def test_header_parse_gives_the_manifest_fields(
        self, fixtures_dir: Path, manifest_entry: Entry
    ) -> None:
        """Header.parse reads every field as the manifest gives it (rejected fields
        repaired first, so the other fields of damaged files are checked too)."""
        raw = read(fixtures_dir, manifest_entry)
        h = Header.parse(raw)
        if not isinstance(h, Header):
            h = Header.parse(repaired(raw))
            assert isinstance(h, Header), h
            if manifest_entry["tokens"] != 0 and manifest_entry["quant_bits"] in QUANT_BITS:
                assert (h.tokens, h.quant_bits) == (
                    manifest_entry["tokens"], manifest_entry["quant_bits"])  # fmt: skip
        else:
            assert h.encode() == raw[: h.text_at]
            assert h.pack() == raw[: len(h.pack())]
            for field in HEADER_FIELDS:
                assert getattr(h, field) == manifest_entry[field], field
        for field in ("ext_flags", "model_id", "hits", "ctx_size", "created_at",
                      "last_used", "payload_bytes", "text_bytes"):  # fmt: skip
            assert getattr(h, field) == manifest_entry[field], field
        assert int(h.reason) == manifest_entry["reason"]
        assert h.reason.label == manifest_entry["reason_name"]
        assert h.legacy is (manifest_entry["abi"] == 0)

    def test_validity_matches_the_manifest(self, fixtures_dir: Path, manifest_entry: Entry) -> None:
        """A valid file parses, is complete and is a SnapshotName; an invalid one
        fails for exactly the reason(s) the manifest gives."""
        raw = read(fixtures_dir, manifest_entry)
        failures, got = verdict(manifest_entry, raw)
        if manifest_entry["valid"]:
            assert failures == []
            assert isinstance(got, Header)
            assert isinstance(classify(manifest_entry["name"]), SnapshotName)
        else:
            assert "invalid_reason" in manifest_entry
            expected = expected_failures(manifest_entry["invalid_reason"])
            assert failures, "an invalid file passed every check"
            assert set(failures) <= expected
            if len(expected) == 1:
                assert set(failures) == expected

    def test_text_sha1(self, fixtures_dir: Path, manifest_entry: Entry) -> None:
        """The SHA-1 of the text bytes at offset 52 is the manifest's text_sha1."""
        text = text_of(read(fixtures_dir, manifest_entry))
        if manifest_entry["text_sha1"] is None:
            assert text is None
            return
        assert text is not None
        assert len(text) == manifest_entry["text_bytes"]
        assert sha1_hex(text) == manifest_entry["text_sha1"]
        assert hashlib.sha1(text).hexdigest() == manifest_entry["text_sha1"]
        assert prefix_digests(text, [len(text)]) == {len(text): manifest_entry["text_sha1"]}

    def test_name_matches_text(self, fixtures_dir: Path, manifest_entry: Entry) -> None:
        """The name is <sha>.kv with sha == sha1(text) exactly when the manifest says so."""
        kind = classify(manifest_entry["name"])
        matches = isinstance(kind, SnapshotName) and kind.sha == manifest_entry["text_sha1"]
        assert matches is manifest_entry["name_matches_text"]

    def test_trailer_bytes(self, fixtures_dir: Path, manifest_entry: Entry) -> None:
        """Bytes after header, text and payload are the manifest's trailer_bytes."""
        raw = read(fixtures_dir, manifest_entry)
        text_bytes, payload = manifest_entry["text_bytes"], manifest_entry["payload_bytes"]
        extra = len(raw) - (PREFIX_BYTES + text_bytes + payload)
        assert manifest_entry["trailer_bytes"] == (extra if extra >= 0 else None)
        if extra > 0:
            assert manifest_entry["ext_flags"] & 1
            assert raw[PREFIX_BYTES + text_bytes + payload :].startswith(b"KTM")

    def test_payload_starts_with_dsv4(self, fixtures_dir: Path, manifest_entry: Entry) -> None:
        """The payload after the text starts with DSV4 and its version, as listed."""
        raw = read(fixtures_dir, manifest_entry)
        start = PREFIX_BYTES + manifest_entry["text_bytes"]
        assert (raw[start : start + 4] == b"DSV4") is manifest_entry["payload_magic_dsv4"]
        assert struct.unpack_from("<I", raw, start + 4)[0] == manifest_entry["payload_version"]

    def test_prefix_of(self, manifest_entry: Entry, texts: dict[str, bytes]) -> None:
        """prefix_digests finds this text as a strict prefix of exactly the
        files listed in prefix_of."""
        mine = texts.get(manifest_entry["name"])
        if mine is None:
            assert manifest_entry["prefix_of"] == []
            return
        n = len(mine)
        extends = {
            other
            for other, text in texts.items()
            if other != manifest_entry["name"]
            and len(text) > n
            and prefix_digests(text, [n])[n] == sha1_hex(mine)
        }
        assert extends == set(manifest_entry["prefix_of"])
        for other in extends:  # the digests did not lie
            assert texts[other].startswith(mine)

    def test_indexed_by(self, fixtures_dir: Path, manifest_entry: Entry) -> None:
        """A valid file is listed by the 05-21 engine, and by the 05-26 engine
        exactly when it is not legacy (abi 0); an invalid file never by 05-26."""
        indexed_by = manifest_entry["indexed_by"]
        if not manifest_entry["valid"]:
            assert NEW_ENGINE not in indexed_by
            return
        h = Header.parse(read(fixtures_dir, manifest_entry))
        assert isinstance(h, Header)
        assert OLD_ENGINE in indexed_by
        assert (NEW_ENGINE in indexed_by) is (not h.legacy)
        assert h.legacy is (manifest_entry["writer"] == OLD_ENGINE)


class TestSpecialFiles:
    def test_temp_file_is_a_temp_name(self, manifest: dict[str, Any]) -> None:
        """The in-flight `<sha>.kv.tmp.12345` copy is a TempName of pid 12345
        whose sha is its text's (the rename would give it that name)."""
        temps = [e for e in manifest["files"] if ".tmp." in e["name"]]
        assert len(temps) == 1
        kind = classify(temps[0]["name"])
        assert isinstance(kind, TempName)
        assert kind.pid == 12345
        assert kind.sha == temps[0]["name"][:40]
        assert kind.sha == temps[0]["text_sha1"]

    def test_sysprompt_is_foreign(self, manifest: dict[str, Any]) -> None:
        """sysprompt.kv is another tool's file, even though its header is a
        valid agent-system snapshot."""
        entry = next(e for e in manifest["files"] if e["name"] == "sysprompt.kv")
        assert classify("sysprompt.kv") == ForeignName("sysprompt.kv")
        assert entry["reason"] == Reason.AGENT_SYSTEM
        assert entry["indexed_by"] == []

    def test_damaged_copies_are_each_rejected_for_their_reason(
        self, fixtures_dir: Path, manifest: dict[str, Any]
    ) -> None:
        """The six damaged copies give magic, unknown_format (the ABI-7 one),
        other_layout (the version-2 one: a raw codec-at-21 header), invalid
        (twice) and truncated."""
        whys = sorted(
            verdict(e, read(fixtures_dir, e))[0][0]
            for e in manifest["files"]
            if not e["valid"] and isinstance(classify(e["name"]), SnapshotName)
        )
        assert whys == ["invalid", "invalid", "magic", "other_layout", "truncated",
                        "unknown_format"]  # fmt: skip
