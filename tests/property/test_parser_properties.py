"""Properties of the snapshot parser: any bytes give an entry or a typed error,
and the verdict is the spec's rule (section 2), checked against an oracle
written from the spec alone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvgroomd.core.index import Snapshot
from kvgroomd.daemon.pinned import PinnedDir
from kvgroomd.daemon.read import Invalid, read_snapshot
from kvgroomd.format.header import PREFIX_BYTES, Header, Reason, Unparsable, check_size
from kvgroomd.format.names import SnapshotName
from tests.property.spec import SPEC, spec_layout, spec_verdict

WHYS = {"short", "magic", "unknown_format", "invalid", "truncated"}
# Bytes 20-23 of each version-2 layout and of none (codec-at-21 raw and LZ4,
# codec-at-7 raw and 16 MiB, the 72-byte header's ABI word, junk).
WORD20 = [b"\2\0\0\0", b"\2\1\x18\0", b"\0\0\0\0", b"\0\0\0\1", b"\2\1\x1b\0", b"\3\0\0\0"]
U8, U32, U64 = (st.integers(0, 2**b - 1) for b in (8, 32, 64))
NAME = SnapshotName("ab" * 20 + ".kv", "ab" * 20)


def header_fields() -> st.SearchStrategy[bytes]:
    """52 bytes that often get past the magic, with every field drawn at random."""
    return st.builds(
        SPEC.pack,
        st.sampled_from([b"KVC", b"KVC", b"KVD", b"\0\0\0"]),
        st.one_of(st.just(1), U8), st.one_of(st.sampled_from([2, 4]), U8), U8, U8, U8,
        st.one_of(st.integers(1, 200_000), U32), U32, U32,
        st.one_of(st.sampled_from([0, 2]), U8), st.binary(min_size=3, max_size=3),
        U64, U64, st.one_of(st.integers(0, 10_000), U64), st.one_of(st.integers(0, 500), U32),
    )  # fmt: skip


def version_2(raw: bytes, word: bytes, tail: bytes) -> bytes:
    """`raw` restamped version 2 with `word` at bytes 20-23 (a 72-byte header's
    extra bytes come from `tail`)."""
    return raw[:3] + b"\2" + raw[4:20] + word + raw[24:] + tail


def raw_bytes() -> st.SearchStrategy[bytes]:
    """Any bytes, or a drawn header followed by any bytes, often version 2."""
    return st.one_of(
        st.binary(max_size=120),
        st.tuples(header_fields(), st.binary(max_size=200)).map(b"".join),
        st.builds(version_2, header_fields(), st.sampled_from(WORD20),
                  st.one_of(st.binary(max_size=200), st.just(bytes(30)))),
    )  # fmt: skip


def headers() -> st.SearchStrategy[Header]:
    """Every header the engine can write (and reason bytes it does not know)."""
    reasons = st.one_of(
        st.tuples(st.sampled_from(list(Reason)), st.just(-1)),
        st.tuples(st.just(Reason.UNKNOWN), st.integers(7, 255)),
    )
    return st.builds(
        lambda r, **kw: Header(reason=r[0], reason_code=r[1], **kw),
        reasons, quant_bits=st.sampled_from([2, 4]), ext_flags=U8, model_id=U8,
        tokens=st.integers(1, 2**32 - 1), hits=U32, ctx_size=U32,
        abi=st.sampled_from([0, 2]), created_at=U64, last_used=U64, payload_bytes=U64,
        text_bytes=U32,
    )  # fmt: skip


@given(raw_bytes())
@settings(max_examples=800)
def test_any_bytes_parse_to_a_header_or_a_typed_error(raw):
    """Header.parse returns a Header or an Unparsable with a known reason, never raises."""
    got = Header.parse(raw)
    assert isinstance(got, Header | Unparsable)
    if isinstance(got, Unparsable):
        assert got.why in WHYS - {"truncated"}
        assert got.why == spec_layout(raw, None)
    else:
        assert got.layout_name == spec_layout(raw, None)


@given(headers())
@settings(max_examples=500)
def test_parse_of_pack_is_identity(h):
    """parse(pack(h)) == h for every header the engine can write."""
    raw = h.pack()
    assert len(raw) == PREFIX_BYTES
    assert Header.parse(raw) == h


@given(header_fields())
@settings(max_examples=500)
def test_pack_of_parse_gives_the_bytes_back_but_the_reserved_ones(raw):
    """A parsed header packs to the bytes it came from, reserved bytes 21..23 zeroed."""
    h = Header.parse(raw)
    if isinstance(h, Header) and h.layout == 0:
        assert h.pack() == raw[:21] + b"\0\0\0" + raw[24:52]
    elif isinstance(h, Header):  # another layout: the bytes the index can rebuild
        assert h.pack() == raw[: len(h.pack())]
        assert h.encode() == raw[: h.text_at]


@given(headers(), st.integers(0, 2**70))
def test_completeness_is_header_text_and_payload(h, size):
    """check_size accepts exactly the files holding header, text and payload."""
    assert (check_size(h, size) is None) == (size >= 52 + h.text_bytes + h.payload_bytes)


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("parse")


@given(raw=raw_bytes(), extra=st.integers(0, 4096))
@settings(max_examples=400, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_any_file_reads_as_a_snapshot_or_an_invalid_entry(scratch, raw, extra):
    """read_snapshot on any file gives a Snapshot or a typed Invalid, per spec §2."""
    path: Path = scratch / NAME.name
    path.write_bytes(raw)
    os.truncate(path, len(raw) + extra)  # a sparse tail: the size varies, not the head
    got = read_snapshot(PinnedDir.at(scratch), NAME)
    verdict = spec_verdict((raw + bytes(extra))[:4096], len(raw) + extra)
    if verdict == "valid":
        assert isinstance(got, Snapshot)
        assert got.size == len(raw) + extra and got.sha == NAME.sha
    else:
        assert isinstance(got, Invalid)
        assert got.why == verdict and got.seen is not None and got.seen.size == len(raw) + extra
