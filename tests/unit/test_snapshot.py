"""The snapshot format (spec §2): header parse/pack, validity, text digests."""

from __future__ import annotations

import hashlib
import struct
from types import SimpleNamespace
from typing import Any

import pytest

from kvgroomd.format import header as snapshot_mod
from kvgroomd.format.header import (
    PREFIX_BYTES,
    TOUCH_BYTES,
    Header,
    Reason,
    Unparsable,
    check_size,
    prefix_digests,
    sha1_hex,
)
from tests.unit.builders import T0, chat_text, header


def raw_header(**over: Any) -> bytes:
    """52 header bytes laid out by hand at the spec's offsets (not via _LAYOUT)."""
    f = {
        "magic": b"KVC", "version": 1, "quant": 2, "reason": 2, "ext": 0, "model": 0,
        "tokens": 1000, "hits": 3, "ctx": 32768, "abi": 2, "reserved": b"\0\0\0",
        "created": T0 - 100, "last_used": T0 - 10, "payload": 12096, "text": 1000,
    }  # fmt: skip
    f.update(over)
    out = bytearray(52)
    out[0:3] = f["magic"]
    out[3] = f["version"]
    out[4] = f["quant"]
    out[5] = f["reason"]
    out[6] = f["ext"]
    out[7] = f["model"]
    struct.pack_into("<I", out, 8, f["tokens"])
    struct.pack_into("<I", out, 12, f["hits"])
    struct.pack_into("<I", out, 16, f["ctx"])
    out[20] = f["abi"]
    out[21:24] = f["reserved"]
    struct.pack_into("<Q", out, 24, f["created"])
    struct.pack_into("<Q", out, 32, f["last_used"])
    struct.pack_into("<Q", out, 40, f["payload"])
    struct.pack_into("<I", out, 48, f["text"])
    return bytes(out)


def parsed(raw: bytes) -> Header:
    h = Header.parse(raw)
    assert isinstance(h, Header), h
    return h


class TestLayout:
    def test_prefix_is_52_bytes_and_touch_rewrites_48(self) -> None:
        """The header plus text length is 52 bytes; a hit rewrites the first 48."""
        assert PREFIX_BYTES == 52
        assert TOUCH_BYTES == 48

    def test_fields_are_read_at_the_spec_offsets(self) -> None:
        """Every field is read little-endian from the offset spec §2 gives it."""
        h = parsed(raw_header(
            quant=4, reason=3, ext=0b101, model=1, tokens=0x01020304, hits=0x0A0B0C0D,
            ctx=0x00100000, abi=0, created=0x0102030405060708, last_used=0x1112131415161718,
            payload=0x2122232425262728, text=0x31323334,
        ))  # fmt: skip
        assert (h.quant_bits, h.reason, h.ext_flags, h.model_id) == (4, Reason.EVICT, 5, 1)
        assert (h.tokens, h.hits, h.ctx_size, h.abi) == (0x01020304, 0x0A0B0C0D, 0x00100000, 0)
        assert h.created_at == 0x0102030405060708
        assert h.last_used == 0x1112131415161718
        assert h.payload_bytes == 0x2122232425262728
        assert h.text_bytes == 0x31323334

    def test_pack_writes_the_hand_laid_bytes(self) -> None:
        """pack() produces exactly the bytes laid out by hand at the spec offsets."""
        raw = raw_header(reason=6, ext=2, model=1, hits=7, abi=2)
        assert parsed(raw).pack() == raw

    def test_reserved_bytes_are_ignored_and_packed_as_zero(self) -> None:
        """Bytes 21-23 are reserved: a parse ignores them and pack writes zeros."""
        h = parsed(raw_header(reserved=b"\xff\xfe\xfd"))
        assert h == parsed(raw_header())
        assert h.pack()[21:24] == b"\0\0\0"

    def test_text_and_payload_after_the_header_do_not_matter(self) -> None:
        """Header.parse reads only the first 52 bytes of a longer buffer."""
        raw = raw_header()
        assert parsed(raw + b"text and payload" * 100) == parsed(raw)


class TestRoundTrip:
    @pytest.mark.parametrize("reason", list(Reason))
    def test_parse_of_pack_is_identity_for_every_reason(self, reason: Reason) -> None:
        """parse(pack(h)) == h for a header of every known reason."""
        h = header(reason=reason, tokens=4321, hits=9, quant_bits=4, model_id=1,
                   ext_flags=3, abi=0, last_used=T0)  # fmt: skip
        raw = h.pack()
        assert len(raw) == PREFIX_BYTES
        assert Header.parse(raw) == h

    def test_pack_of_parse_is_identity(self) -> None:
        """pack(parse(raw)) reproduces the raw 52 bytes of a valid header."""
        raw = raw_header(quant=4, reason=1, hits=0, abi=2)
        assert parsed(raw).pack() == raw

    def test_extreme_integer_values_round_trip(self) -> None:
        """Maximal u32 and u64 field values survive pack and parse."""
        h = header(tokens=2**32 - 1, hits=2**32 - 1, ctx_size=2**32 - 1, text_bytes=2**32 - 1,
                   created_at=2**64 - 1, last_used=2**64 - 1, payload_bytes=2**64 - 1)  # fmt: skip
        assert Header.parse(h.pack()) == h


class TestReasons:
    @pytest.mark.parametrize(
        ("code", "reason", "label"),
        [(0, Reason.UNKNOWN, "unknown"), (1, Reason.COLD, "cold"),
         (2, Reason.CONTINUED, "continued"), (3, Reason.EVICT, "evict"),
         (4, Reason.SHUTDOWN, "shutdown"), (5, Reason.AGENT_SYSTEM, "agent-system"),
         (6, Reason.AGENT_SESSION, "agent-session")],
    )  # fmt: skip
    def test_known_codes_and_labels(self, code: int, reason: Reason, label: str) -> None:
        """Codes 0-6 read as their reason, labelled with the engine's word for it."""
        h = parsed(raw_header(reason=code))
        assert h.reason is reason
        assert h.reason.label == label
        assert h.reason_code == -1

    @pytest.mark.parametrize("code", [7, 8, 100, 255])
    def test_codes_above_6_read_as_unknown(self, code: int) -> None:
        """A reason byte above 6 reads as UNKNOWN, as the engine reads it."""
        h = parsed(raw_header(reason=code))
        assert h.reason is Reason.UNKNOWN
        assert Reason.from_byte(code) is Reason.UNKNOWN

    @pytest.mark.parametrize("code", [7, 200, 255])
    def test_unknown_codes_pack_back_the_raw_byte(self, code: int) -> None:
        """A header with an unknown reason code packs back the byte it was read from."""
        raw = raw_header(reason=code)
        h = parsed(raw)
        assert h.reason_code == code
        assert h.pack()[5] == code
        assert h.pack() == raw

    def test_touch_keeps_the_raw_reason_byte(self) -> None:
        """A touched unknown-reason header still packs its original reason byte."""
        h = parsed(raw_header(reason=9)).touched(T0)
        assert h.pack()[5] == 9


class TestInvalid:
    @pytest.mark.parametrize("n", [0, 1, 47, 48, 51])
    def test_short_input_is_unparsable_short(self, n: int) -> None:
        """Fewer than 52 bytes give Unparsable('short') naming the count."""
        got = Header.parse(raw_header()[:n])
        assert isinstance(got, Unparsable)
        assert got.why == "short"
        assert f"{n} of 52" in got.detail

    @pytest.mark.parametrize("magic", [b"KVX", b"kvc", b"\0\0\0", b"DSV"])
    def test_wrong_magic(self, magic: bytes) -> None:
        """Any magic other than 'KVC' gives Unparsable('magic')."""
        got = Header.parse(raw_header(magic=magic))
        assert got == Unparsable("magic", f"magic={magic!r}")

    def test_bad_magic_wins_over_a_bad_version(self) -> None:
        """A bad magic is reported as such even when the version is unknown too."""
        got = Header.parse(raw_header(magic=b"KVX", version=2))
        assert isinstance(got, Unparsable)
        assert got.why == "magic"

    @pytest.mark.parametrize("version", [0, 3, 255])
    def test_unknown_version_is_unknown_format(self, version: int) -> None:
        """A header version no known layout has may be a newer engine's: unknown_format."""
        got = Header.parse(raw_header(version=version))
        assert got == Unparsable("unknown_format", f"version={version}")

    def test_version_2_without_the_size_is_in_doubt(self) -> None:
        """A version-1 header stamped version 2 is a raw codec-at-21 header,
        and its first 76 bytes also fit a 72-byte header: without the file's
        size nothing tells them apart, so it is unknown_format."""
        got = Header.parse(raw_header(version=2) + bytes(24))
        assert isinstance(got, Unparsable)
        assert got.why == "unknown_format"
        assert "ambiguous: codec-at-21 or header-72" in got.detail

    @pytest.mark.parametrize("abi", [1, 5, 7, 255])
    def test_unknown_abi_is_unknown_format(self, abi: int) -> None:
        """A payload ABI no known layout has may be a newer engine's: unknown_format."""
        got = Header.parse(raw_header(abi=abi))
        assert got == Unparsable("unknown_format", f"abi={abi}")

    @pytest.mark.parametrize("abi", [3, 4])
    def test_abi_3_and_4_are_the_gb10_layout(self, abi: int) -> None:
        """Version 1 with payload ABI 3 or 4 is redhunt07/ds4-DSpark-GB10's layout."""
        h = parsed(raw_header(abi=abi))
        assert (h.abi, h.layout_name, h.legacy) == (abi, "gb10", False)

    def test_unknown_abi_wins_over_invalid_fields(self) -> None:
        """An unknown ABI is reported as unknown_format even with tokens 0."""
        got = Header.parse(raw_header(abi=7, tokens=0))
        assert isinstance(got, Unparsable)
        assert got.why == "unknown_format"

    @pytest.mark.parametrize("abi", [0, 2])
    def test_known_abis_parse(self, abi: int) -> None:
        """ABI 0 (legacy) and 2 (current) both parse; only 0 is legacy."""
        h = parsed(raw_header(abi=abi))
        assert h.abi == abi
        assert h.legacy is (abi == 0)

    @pytest.mark.parametrize("quant", [0, 1, 3, 8])
    def test_quant_other_than_2_or_4_is_invalid(self, quant: int) -> None:
        """quant_bits outside {2, 4} make the file invalid to the engine."""
        got = Header.parse(raw_header(quant=quant))
        assert isinstance(got, Unparsable)
        assert got.why == "invalid"
        assert f"quant_bits={quant}" in got.detail

    def test_zero_tokens_is_invalid(self) -> None:
        """A header with 0 tokens is invalid to the engine."""
        got = Header.parse(raw_header(tokens=0))
        assert isinstance(got, Unparsable)
        assert got.why == "invalid"
        assert "tokens=0" in got.detail


class TestCheckSize:
    def test_exact_minimum_size_is_complete(self) -> None:
        """A file of exactly 52 + text + payload bytes is complete."""
        h = header(tokens=100, payload_bytes=5000)
        assert h.min_file_size == 52 + 100 + 5000
        assert check_size(h, 5152) is None

    def test_trailers_after_the_payload_are_allowed(self) -> None:
        """A file larger than the minimum (a trailer follows) is complete."""
        assert check_size(header(tokens=100, payload_bytes=5000), 5152 + 419) is None

    def test_one_byte_short_is_truncated(self) -> None:
        """A file one byte shorter than the minimum is truncated."""
        got = check_size(header(tokens=100, payload_bytes=5000), 5151)
        assert got == Unparsable("truncated", "5151 bytes, header needs 5152")


class TestHeaderHelpers:
    def test_touched_counts_a_hit_and_sets_last_used(self) -> None:
        """touched(now) adds one hit and sets last_used, leaving everything else."""
        h = header(hits=4, created_at=T0 - 50, last_used=T0 - 20)
        t = h.touched(T0)
        assert (t.hits, t.last_used) == (5, T0)
        assert t.pack()[TOUCH_BYTES:] == h.pack()[TOUCH_BYTES:]
        assert (t.created_at, t.tokens, t.payload_bytes) == (
            h.created_at,
            h.tokens,
            h.payload_bytes,
        )

    def test_last_active_falls_back_to_created_at(self) -> None:
        """last_active is last_used, or created_at while last_used is 0."""
        assert header(created_at=T0 - 50, last_used=0).last_active == T0 - 50
        assert header(created_at=T0 - 50, last_used=T0 - 5).last_active == T0 - 5


class TestSha1:
    def test_sha1_hex_is_lowercase_sha1_of_the_bytes(self) -> None:
        """sha1_hex is the lowercase hex SHA-1 of its input."""
        text = chat_text(500)
        assert sha1_hex(text) == hashlib.sha1(text).hexdigest()
        assert sha1_hex(text) == sha1_hex(text).lower()
        assert sha1_hex(b"") == "da39a3ee5e6b4b0d3255bfef95601890afd80709"


class _CountingSha1:
    """A sha1 whose updates are counted (bytes fed in, calls made)."""

    fed = 0
    made = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        type(self).made += 1
        self._h = hashlib.sha1(*args, **kwargs)
        type(self).fed += len(args[0]) if args else 0

    def update(self, data: bytes) -> None:
        type(self).fed += len(data)
        self._h.update(data)

    def copy(self) -> Any:
        return self._h.copy()  # copies are only finalised, never fed

    def hexdigest(self) -> str:
        return self._h.hexdigest()


class TestPrefixDigests:
    def test_each_digest_is_sha1_of_that_prefix(self) -> None:
        """prefix_digests maps each length n to sha1(text[:n])."""
        text = chat_text(5000)
        lengths = [1, 64, 999, 1000, 2500, 4999, 5000]
        got = prefix_digests(text, lengths)
        assert got == {n: hashlib.sha1(text[:n]).hexdigest() for n in lengths}

    def test_order_and_duplicates_of_lengths_do_not_matter(self) -> None:
        """Lengths in any order, with repeats, give the same map."""
        text = chat_text(3000)
        assert prefix_digests(text, [3000, 10, 10, 1500]) == prefix_digests(text, [10, 1500, 3000])

    def test_zero_and_full_length_are_included(self) -> None:
        """Length 0 is the empty text's digest and len(text) the whole text's."""
        text = chat_text(700)
        got = prefix_digests(text, [0, 700])
        assert got == {0: sha1_hex(b""), 700: sha1_hex(text)}

    def test_lengths_outside_the_text_are_left_out(self) -> None:
        """Negative lengths and lengths beyond the text have no digest."""
        text = chat_text(100)
        assert set(prefix_digests(text, [-1, 50, 101, 10_000])) == {50}

    def test_generator_of_lengths_is_accepted(self) -> None:
        """Any iterable of lengths works, e.g. a generator."""
        text = chat_text(300)
        got = prefix_digests(text, (n for n in (100, 200)))
        assert got == {100: sha1_hex(text[:100]), 200: sha1_hex(text[:200])}

    def test_text_is_hashed_once_however_many_prefixes(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Asking for 1000 prefixes feeds the text through SHA-1 once, as 1 does."""
        text = chat_text(50_000)
        fake = SimpleNamespace(sha1=_CountingSha1)
        monkeypatch.setattr(snapshot_mod, "hashlib", fake)

        _CountingSha1.fed = _CountingSha1.made = 0
        one = prefix_digests(text, [len(text)])
        fed_one, made_one = _CountingSha1.fed, _CountingSha1.made

        lengths = list(range(50, 50_001, 50))
        assert len(lengths) == 1000
        _CountingSha1.fed = _CountingSha1.made = 0
        many = prefix_digests(text, lengths)
        fed_many, made_many = _CountingSha1.fed, _CountingSha1.made
        monkeypatch.undo()

        assert fed_one == fed_many == len(text)
        assert made_one == made_many == 1
        assert one[len(text)] == many[len(text)] == hashlib.sha1(text).hexdigest()
        assert many[25_000] == hashlib.sha1(text[:25_000]).hexdigest()

    def test_only_the_longest_wanted_prefix_is_read(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """Bytes past the longest requested length are never hashed."""
        text = chat_text(10_000)
        monkeypatch.setattr(snapshot_mod, "hashlib", SimpleNamespace(sha1=_CountingSha1))
        _CountingSha1.fed = 0
        prefix_digests(text, [10, 2000])
        assert _CountingSha1.fed == 2000
