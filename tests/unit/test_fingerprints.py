"""The 72-byte header's weights fingerprint in supersession, on the real
nazerim/ds4 files with their bytes 56..63 set, through the pure decision
core (no filesystem: the files' bytes are held in memory).

The engine loads a file whose fingerprint is x when x is 0 or its own. Its
files carry its fingerprint whenever its model path exists, so two files of
one engine share one; kvgroomd must let them supersede each other, and must
never let a file one engine loads stand in for a file another (or every)
engine loads. The landing of the longer file and a start-up sweep decide
alike. tests/integration/test_layouts.py runs the same cases through the
daemon.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kvgroomd.core.decision import Fingerprint
from kvgroomd.core.groomer import Groomer, Rules
from kvgroomd.core.index import Index, Snapshot, snapshot_of
from kvgroomd.format.header import Header, read_header
from kvgroomd.format.layouts import HEADER_72
from kvgroomd.format.prefix import FIRST_READ, tail_of, text_keys
from kvgroomd.sim.groom import SimTexts
from tests.unit.builders import MemDisk, indexed, snapshot

FOLDER = Path(__file__).resolve().parents[1] / "fixtures" / "layouts" / "nazerim-v2-72-byte-header"
COLD_1024 = "21af118bc5834d7738a6e70ea8ff82ec6d41b90c.kv"  # chain A's cold anchor
CONTINUED_2048 = "0497dde05c7a91f863063e493153070c35b03d48.kv"  # a strict prefix of 4096's
CONTINUED_4096 = "841bf2c5596e339d3b3e1592d03742c444a54d2a.kv"
F, G = 0x9E37_79B9_7F4A_7C15, 2**64 - 1  # two engines' fingerprints (G: a u64 at its top)
# (fingerprint of the cold 1024, of the 2048 (O), of the 4096 (N)), is O superseded?
CASES = [
    pytest.param((F, F, F), True, id="one-engine"),
    pytest.param((G, G, F), False, id="two-engines"),
    pytest.param((G, G, 0), True, id="N-loaded-by-every-engine"),
    pytest.param((0, 0, F), False, id="O-loaded-by-every-engine"),
    pytest.param((0, 0, 0), True, id="no-fingerprints"),
]


def fingerprinted(name: str, fp: int) -> bytes:
    """The fixture `name` as an engine whose fingerprint is `fp` writes it."""
    raw = bytearray((FOLDER / name).read_bytes())
    raw[56:64] = fp.to_bytes(8, "little")
    return bytes(raw)


def held(name: str, fp: int, ino: int) -> tuple[Snapshot, bytes]:
    """The Snapshot the daemon's reader builds of that file, and its text."""
    raw = fingerprinted(name, fp)
    h = read_header(raw, len(raw), engine="header-72")
    assert isinstance(h, Header) and h.model_fp == fp
    text = raw[h.text_at : h.text_at + h.text_bytes]
    head, bkey, _probes = text_keys(text[: FIRST_READ - h.text_at], len(text))
    return Snapshot(name, name[:40], h, Fingerprint(1, ino, len(raw), 0), head,
                    tail=tail_of(text, len(text)), bkey=bkey), text  # fmt: skip


def directory(fps: tuple[int, int, int]) -> tuple[list[Snapshot], dict[str, bytes]]:
    """Every file of the folder; the chain's three with `fps`, the others with F."""
    chain = dict(zip((COLD_1024, CONTINUED_2048, CONTINUED_4096), fps, strict=True))
    files = [held(p.name, chain.get(p.name, F), ino)
             for ino, p in enumerate(sorted(FOLDER.glob("*.kv")), 100)]  # fmt: skip
    return [s for s, _ in files], {s.name: t for s, t in files}


def after(core: Groomer) -> float:
    """A `now` an hour after every file was written (no clock skew)."""
    return float(core.index.columns()["created_at"].max()) + 3600


@pytest.mark.parametrize(("fps", "gone"), CASES)
def test_a_start_up_sweep(fps: tuple[int, int, int], gone: bool) -> None:
    """Every file present at start-up: the sweep decides by the rule."""
    snaps, texts = directory(fps)
    core = Groomer(Rules())
    step = indexed(core, MemDisk(snaps, texts), now=2e9)
    assert [d.name for d in step.decisions] == ([CONTINUED_2048] if gone else [])
    if not gone:  # nothing may stand in for it: not even covered
        row = core.index.row_of(CONTINUED_2048)
        assert row is not None and not core.index.columns()["covered"][row]


@pytest.mark.parametrize(("fps", "gone"), CASES)
def test_the_landing_of_the_longer_file(fps: tuple[int, int, int], gone: bool) -> None:
    """The 4096 lands after the rest were indexed (its text read through the
    core's text source, the others' rebuilt from index rows): the same
    verdict as the sweep's."""
    snaps, texts = directory(fps)
    new = next(s for s in snaps if s.name == CONTINUED_4096)
    disk = MemDisk([s for s in snaps if s is not new], texts)
    core = Groomer(Rules())
    assert indexed(core, disk, now=2e9).decisions == []
    disk.index.put(new)
    step = core.landed(new, SimTexts(disk), after(core))
    assert [d.name for d in step.decisions] == ([CONTINUED_2048] if gone else [])
    if gone:
        assert step.decisions[0].fields["superseded_by"] == CONTINUED_4096[:40]


class TestNoPathLosesIt:
    """A fingerprint read as 0 would make N look loadable by every engine."""

    @pytest.mark.parametrize("fp", [1, 2**63 - 1, 2**63, G])
    def test_a_row_keeps_it_both_ways_in(self, fp: int) -> None:
        """put() of a read Snapshot and put_many() of bulk rows keep it; the
        Snapshot and Header rebuilt from the row (get, at, snapshot_of, pop)
        carry it."""
        s = snapshot(b"x" * 100, layout=HEADER_72, model_fp=fp)
        one = Index()
        one.put(s)
        bulk = Index()
        bulk.put_many(one.columns().copy(), one.names)
        for index in (one, bulk):
            assert int(index.columns()["model_fp"][0]) == fp
            assert index.get(s.name) == s
            assert index.at(0).header.model_fp == fp
            assert snapshot_of(s.name, index.columns()[0]).header.model_fp == fp
            assert index.pop(s.name) == s

    def test_an_update_in_place_keeps_it(self) -> None:
        """A hit rewrites the header in place: the row still holds it."""
        s, _text = held(CONTINUED_2048, F, 7)
        index = Index()
        index.put(s)
        index.put(s.__class__(s.name, s.sha, s.header.touched(2_000_000_000), s.seen, s.head,
                              tail=s.tail, bkey=s.bkey))  # fmt: skip
        got = index.get(s.name)
        assert got is not None and (got.header.hits, got.header.model_fp) == (1, F)

    def test_a_header_cannot_hold_two_fingerprints(self) -> None:
        """Its bytes 56..63 (in `extra`) and `model_fp` must agree, and only
        the 72-byte header has one."""
        s, _text = held(CONTINUED_2048, F, 7)
        with pytest.raises(ValueError, match="not model_fp"):
            Header(**{**_fields(s.header), "model_fp": 0})
        with pytest.raises(ValueError, match="only the 72-byte header"):
            Header(**{**_fields(s.header), "layout": 0, "extra": b""})
        assert s.header.encode()[56:64] == F.to_bytes(8, "little")
        rebuilt = Header(**{**_fields(s.header), "extra": b""})  # as from an index row
        assert rebuilt.encode()[56:64] == F.to_bytes(8, "little")


def _fields(h: Header) -> dict[str, object]:
    return {f: getattr(h, f) for f in h.__dataclass_fields__}


def test_the_index_row_column_is_u64() -> None:
    """Every u64 fingerprint fits the column unchanged."""
    from kvgroomd.core.index import ROW  # noqa: PLC0415

    assert ROW["model_fp"] == np.dtype("<u8")
