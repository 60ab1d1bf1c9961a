"""A bounded, seeded mutation fuzz of the header parser and the groomer behind it.

Seeds are the fixtures' real snapshot heads, of every layout (tests/fixtures/
engine and tests/fixtures/layouts); each mutant (bit flips, interesting
values in the header fields, truncation, growth, splices) is written to a file
that the real groomer, told one engine layout or none, then reads and judges
with a budget of one byte. Every verdict must be the spec's
(tests/property/spec.py), the bulk reader's must be the single-file reader's,
nothing may raise, and a file may go only if the spec calls it a valid
snapshot of the engine the policy may evict. KVGROOMD_FUZZ_RUNS (default
3000) sets the number of mutants.
"""

from __future__ import annotations

import os
import random
import struct
import time
from collections import Counter
from pathlib import Path

import structlog
from structlog.testing import capture_logs

from kvgroomd.config import Config
from kvgroomd.core.facts import Invalid
from kvgroomd.core.index import snapshot_of
from kvgroomd.daemon.groom import DiskGroomer
from kvgroomd.daemon.pinned import PinnedDir
from kvgroomd.daemon.read import read_many, read_snapshot
from kvgroomd.format.engine import EngineOptions
from kvgroomd.format.header import Header, Unparsable
from kvgroomd.format.layouts import DETECT, ENGINES
from kvgroomd.format.names import SnapshotName
from tests.property.spec import spec_verdict

RUNS = int(os.environ.get("KVGROOMD_FUZZ_RUNS", "3000"))
NAME = "cd" * 20 + ".kv"
NOW = 1_800_000_000.0
# (offset, size) of every integer field of every layout's header
FIELDS = [(3, 1), (4, 1), (5, 1), (6, 1), (7, 1), (8, 4), (12, 4), (16, 4), (20, 1),
          (20, 4), (21, 1), (22, 1), (23, 1), (21, 3), (24, 8), (32, 8), (40, 8), (48, 4),
          (56, 8), (68, 1), (69, 1), (70, 2), (72, 4)]  # fmt: skip
LAYOUTS_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "layouts"
INTERESTING = [0, 1, 2, 3, 4, 6, 7, 0x7F, 0x80, 0xFF, 2**31 - 1, 2**31, 2**32 - 1, 2**63, 2**64 - 1]


def seeds(fixtures: Path) -> list[bytes]:
    out = []
    for p in [*sorted(fixtures.iterdir()), *sorted(LAYOUTS_DIR.glob("*/*.kv"))]:
        if p.name.endswith(".kv"):
            with open(p, "rb") as fp:
                out.append(fp.read(4096))
    return out


def mutate(rng: random.Random, data: bytes, pool: list[bytes]) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and b:  # flip a bit, mostly in the header
            i = rng.randrange(min(len(b), 64) if rng.random() < 0.8 else len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and len(b) >= 52:  # an interesting value in one field
            off, size = rng.choice([f for f in FIELDS if f[0] + f[1] <= len(b)])
            v = rng.choice(INTERESTING) % (1 << (8 * size))
            b[off : off + size] = v.to_bytes(size, "little")
        elif op == 2:  # truncate
            del b[rng.randrange(len(b) + 1) :]
        elif op == 3:  # grow with junk
            b += rng.randbytes(rng.randrange(64))
        elif op == 4 and len(b) >= 76:  # a text/payload length near the file's own size
            off = rng.choice((40, 48, 72))
            size = 8 if off == 40 else 4
            v = max(0, len(b) - 52 + rng.randint(-3, 3)) % (1 << (8 * size))
            b[off : off + size] = v.to_bytes(size, "little")
        else:  # splice another seed's tail
            other = rng.choice(pool)
            cut = rng.randrange(len(b) + 1)
            b[cut:] = other[rng.randrange(len(other) + 1) :]
    return bytes(b)


def test_fuzzed_headers_get_the_spec_verdict_and_only_valid_files_go(fixtures_dir, tmp_path):
    """Thousands of mutated headers of every layout, under every engine
    layout: the parser's verdict is the spec's and the bulk reader's is the
    single-file reader's, nothing raises, and the groomer deletes a file only
    if it is a valid snapshot of its engine."""
    rng = random.Random(20260526)
    pool = seeds(fixtures_dir)
    cache = tmp_path / "kv"
    cache.mkdir()
    groomers = {
        engine: DiskGroomer(Config(cache_dir=cache, budget=1, protect_new=0, supersede=False,
                               engine=EngineOptions(layout=engine)),
                        structlog.get_logger())
        for engine in (DETECT, *ENGINES)
    }  # fmt: skip
    path = cache / NAME
    name = SnapshotName(NAME, NAME[:40])
    pinned = PinnedDir.at(cache)
    seen: Counter[str] = Counter()
    deadline = time.monotonic() + max(60.0, RUNS / 30)
    for run in range(RUNS):
        assert time.monotonic() < deadline, f"fuzz run too slow at {run}"
        engine = rng.choice(list(groomers))
        groomer = groomers[engine]
        reading = groomer.config.reading
        data = mutate(rng, rng.choice(pool), pool)
        sparse = rng.choice((0, 0, rng.randrange(1 << 20)))
        path.write_bytes(data)
        if sparse:
            os.truncate(path, len(data) + sparse)
        size = len(data) + sparse
        verdict = spec_verdict((data + bytes(min(sparse, 4096)))[:4096], size, engine)
        parsed = Header.parse(data)
        assert isinstance(parsed, Header | Unparsable)
        if isinstance(parsed, Header) and parsed.layout == 0:
            assert parsed.pack() == data[:21] + b"\0\0\0" + data[24:52]
        elif isinstance(parsed, Header):
            assert parsed.pack() == data[: len(parsed.pack())]
        got = read_snapshot(pinned, name, reading=reading)
        assert (got.why if isinstance(got, Invalid) else "valid") == verdict, (engine, data[:80])
        # The bulk reader, on the same file: the same verdict and fields.
        bulk = read_many(pinned, [NAME], reading=reading)
        if isinstance(got, Invalid):
            assert (len(bulk.rows), [(b.why, b.detail) for b in bulk.invalid]) == (
                0, [(got.why, got.detail)])  # fmt: skip
        else:
            assert len(bulk.rows) == 1 and not bulk.invalid
            assert snapshot_of(NAME, bulk.rows[0]) == snapshot_of(NAME, _row_of(got))
        with capture_logs():
            groomer.landed(NAME, NOW)
        if path.exists():
            seen[verdict] += 1
            assert groomer.index.total_bytes == (size if NAME in groomer.index else 0)
        else:
            seen["deleted"] += 1
            assert verdict == "valid"
            assert struct.unpack_from("<B", data, 5)[0] in (1, 2, 3, 4)  # not agent/unknown
        groomer.gone(NAME)
    assert seen["deleted"] and seen["valid"] and seen["other_layout"] and len(seen) >= 7, seen


def _row_of(snap):
    """The index row of one snapshot, as the groomer would store it."""
    from kvgroomd.core.index import Index  # noqa: PLC0415

    index = Index()
    index.put(snap)
    return index.columns()[0]
