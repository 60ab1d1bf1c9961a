"""read.read_many (start-up and reconcile) finds exactly what read_snapshot
finds, file by file: the same snapshots with the same keys, the same unusable
files with the same reasons, and nothing for names that are gone."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import numpy as np
import pytest

from kvgroomd.core.index import Index
from kvgroomd.daemon.pinned import PinnedDir
from kvgroomd.daemon.read import Invalid, read_many, read_snapshot
from kvgroomd.format.header import PREFIX_BYTES, Header, Reason, sha1_hex
from kvgroomd.format.names import SnapshotName, classify
from kvgroomd.testing.engine import conversation


def write(directory: Path, text: bytes, *, payload: int = 4096, **fields: int) -> str:
    h = Header(quant_bits=fields.pop("quant_bits", 2), reason=Reason.CONTINUED, ext_flags=0,
               model_id=0, tokens=fields.pop("tokens", len(text) // 4 + 1), hits=0,
               ctx_size=32768, abi=fields.pop("abi", 2), created_at=1_780_000_000,
               last_used=1_780_000_000, payload_bytes=payload, text_bytes=len(text))  # fmt: skip
    name = f"{sha1_hex(text)}.kv"
    (directory / name).write_bytes(h.pack() + text + b"DSV4" + bytes(payload - 4))
    return name


@pytest.fixture
def odd_dir(tmp_path: Path, fixtures_dir: Path) -> Path:
    """The fixture snapshots plus every kind of file read_many must sort out."""
    d = tmp_path / "kv"
    d.mkdir()
    for f in fixtures_dir.iterdir():
        if classify(f.name).__class__ is SnapshotName:
            shutil.copy2(f, d / f.name)
    long_text = conversation(3, 3000).text()  # > 4 KiB: its tail needs a second read
    assert len(long_text) > 4096
    write(d, long_text)
    write(d, long_text[:5000])
    write(d, b"tiny")  # under 8 bytes of text
    write(d, b"")  # no text at all
    upper = write(d, b"upper-case name, same file")
    os.rename(d / upper, d / upper.upper().replace(".KV", ".kv"))
    name = write(d, b"truncated file")
    with open(d / name, "r+b") as fp:
        fp.truncate(PREFIX_BYTES + 5)
    name = write(d, b"bad magic")
    with open(d / name, "r+b") as fp:
        fp.write(b"XYZ")
    name = write(d, b"newer format")
    with open(d / name, "r+b") as fp:
        fp.seek(20)
        fp.write(bytes([7]))  # unknown ABI
    (d / ("0" * 40 + ".kv")).write_bytes(b"short")
    (d / ("1" * 40 + ".kv")).mkdir()
    os.symlink(d / name, d / ("2" * 40 + ".kv"))
    os.mkfifo(d / ("3" * 40 + ".kv"))
    cwd = os.getcwd()
    os.chdir(d)  # a relative name: tmp paths can exceed AF_UNIX's 108 bytes
    try:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind("4" * 40 + ".kv")
    finally:
        os.chdir(cwd)
    return d


def test_read_many_agrees_with_read_snapshot(odd_dir: Path) -> None:
    """Every name gives the same snapshot (keys included) or the same Invalid."""
    names = sorted(os.listdir(odd_dir))
    loaded = read_many(PinnedDir.at(odd_dir), [*names, "5" * 40 + ".kv"], batch=7)  # several batches
    assert loaded.gone == ["5" * 40 + ".kv"]
    index = Index()
    index.put_many(loaded.rows, loaded.names)
    invalid = {bad.name: bad for bad in loaded.invalid}
    assert len(loaded.names) + len(invalid) == len(names)
    for name in names:
        one = read_snapshot(PinnedDir.at(odd_dir), SnapshotName(name, name[:40].lower()))
        if isinstance(one, Invalid):
            assert invalid[name] == one, name
        else:
            got = index.get(name)
            assert got == one, name
            assert got is not None and got.tail is not None and got.bkey is not None
    whys = {bad.why for bad in loaded.invalid}
    assert {"short", "magic", "unknown_format", "truncated", "not_regular"} <= whys


def test_probes_cover_every_true_prefix(odd_dir: Path) -> None:
    """A prefix's bkey is among the probes of each longer chain text it starts."""
    loaded = read_many(PinnedDir.at(odd_dir), sorted(os.listdir(odd_dir)))
    rows, names = loaded.rows, [n.decode() for n in loaded.names.tolist()]
    probes: dict[int, set[int]] = {}
    for r, k in zip(loaded.probe_rows.tolist(), loaded.probe_keys.tolist(), strict=True):
        probes.setdefault(r, set()).add(k)
    lengths = rows["text_bytes"].tolist()
    texts = []
    for i, name in enumerate(names):
        with open(odd_dir / name, "rb") as fp:
            fp.seek(PREFIX_BYTES)
            texts.append(fp.read(lengths[i]))
    chain = {int(r) for r in (Reason.COLD, Reason.CONTINUED, Reason.EVICT, Reason.SHUTDOWN)}
    assert set(probes) == {i for i in range(len(names)) if int(rows["reason"][i]) in chain}
    found = 0
    for o, text_o in enumerate(texts):
        for n, keys in probes.items():
            if lengths[o] < lengths[n] and texts[n].startswith(text_o):
                assert int(rows["bkey"][o]) & 0xFFFFFFFF in keys
                found += 1
    assert found >= 2  # the 5000-byte text in the long one, at least


def test_beside_reads_in_a_helper_what_read_many_reads(odd_dir: Path) -> None:
    """_reader.Beside hands back, from a helper program (fork and exec, the
    pinned directory's descriptor passed on), what read_many finds."""
    from kvgroomd.core.index import NAME  # noqa: PLC0415
    from kvgroomd.daemon._reader import Beside  # noqa: PLC0415

    names = np.array([n.encode() for n in sorted(os.listdir(odd_dir))], dtype=NAME)
    here = read_many(PinnedDir.at(odd_dir), names)
    pinned = PinnedDir.at(odd_dir)
    beside = Beside(pinned, names)
    assert beside
    assert beside.proc is not None
    with open(f"/proc/{beside.proc.pid}/cmdline", "rb") as f:  # a new program, not a fork
        assert b"kvgroomd.daemon._reader" in f.read()
    ticks = []
    got = beside.result(tick=lambda: ticks.append(1))
    beside.cancel()
    assert ticks  # the wait ticked (systemd's watchdog is fed meanwhile)
    assert got is not None
    assert got.rows.tobytes() == here.rows.tobytes()
    assert got.names.tolist() == here.names.tolist()
    assert got.invalid == here.invalid and got.gone == here.gone
    assert (got.probe_rows == here.probe_rows).all()
    assert (got.probe_keys == here.probe_keys).all()


def test_start_up_with_a_child_reader_grooms_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start-up that has a helper read part of the files (large
    directories) indexes, covers and supersedes exactly what a
    single-process one does."""
    from kvgroomd.config import Config  # noqa: PLC0415
    from kvgroomd.daemon import groom  # noqa: PLC0415
    from kvgroomd.testing.engine import populate  # noqa: PLC0415

    class Quiet:
        def __getattr__(self, _name: str) -> object:
            return lambda *a, **kw: None

    populate(tmp_path / "kv", 3000, seed=4)
    results = []
    for fork_at in (10**9, 100):
        monkeypatch.setattr(groom, "_FORK_AT", fork_at)
        g = groom.DiskGroomer(Config(cache_dir=tmp_path / "kv", dry_run=True), Quiet())
        g.reconcile(1_790_000_000.0, startup=True)
        names, covered = g.index.names, g.index.columns()["covered"]
        results.append((sorted(names), sorted(g.core.held),
                        sorted(n for n, c in zip(names, covered, strict=True) if c)))  # fmt: skip
    assert results[0] == results[1]
    assert results[0][1] and results[0][2]  # something superseded and covered


def test_sweep_when_every_text_shares_a_long_system_prompt(tmp_path: Path) -> None:
    """Agent deployments start every text with a system prompt of several KiB,
    longer than the 4 KiB of text the prefix keys cover: every text then has
    every shorter one as a candidate. The start-up sweep must still find
    exactly the true relations: covered = a strict prefix of some compatible
    longer chain text, superseded = a continued one of those, if one of its
    longer texts is cold or continued."""
    from kvgroomd.config import Config  # noqa: PLC0415
    from kvgroomd.daemon.groom import DiskGroomer  # noqa: PLC0415
    from kvgroomd.testing.engine import Conversation, Engine, system_prompt  # noqa: PLC0415

    class Quiet:
        def __getattr__(self, _name: str) -> object:
            return lambda *a, **kw: None

    engine = Engine(tmp_path / "kv", sparse=True)
    prompt = system_prompt(3, 1500)  # ~6.5 KiB
    texts: dict[str, tuple[bytes, Reason]] = {}
    for seed in range(40):
        conv = Conversation(seed, system=prompt)
        conv.grow_to(3000, turn_tokens=400)
        top = (Reason.EVICT, Reason.COLD)[seed % 2]
        for i, (n, reason) in enumerate(((1600, Reason.CONTINUED), (2200, Reason.CONTINUED),
                                         (2900, top))):  # fmt: skip
            if seed % 3 == 0 and i == 2:
                continue  # some chains end on a continued
            path = engine.store(conv.text(n), n, reason, ctx_size=(65536, 32768)[seed % 5 == 0])
            texts[path.name] = (conv.text(n), reason)
    g = DiskGroomer(Config(cache_dir=tmp_path / "kv", dry_run=True), Quiet())
    g.reconcile(1_790_000_000.0, startup=True)

    ctx = {name: engine.entry(name).header.ctx_size for name in texts}  # type: ignore[union-attr]
    covered, superseded = set(), set()
    for o, (to, ro) in texts.items():
        for n, (tn, rn) in texts.items():
            if len(to) < len(tn) and tn.startswith(to) and ctx[n] <= ctx[o]:
                covered.add(o)
                if ro is Reason.CONTINUED and rn in (Reason.COLD, Reason.CONTINUED):
                    superseded.add(o)
    assert set(g.core.held) == superseded
    names, flags = g.index.names, g.index.columns()["covered"]
    assert {n for n, c in zip(names, flags, strict=True) if c} == covered - superseded
    assert len(superseded) > 20 and len(covered - superseded) > 5


def test_the_helper_reads_the_pinned_directory_not_its_path(odd_dir: Path, tmp_path: Path) -> None:
    """The helper gets the pinned descriptor, never the path: after the path
    is swapped for another directory it still reads the pinned one."""
    from kvgroomd.core.index import NAME  # noqa: PLC0415
    from kvgroomd.daemon._reader import Beside  # noqa: PLC0415

    names = np.array([n.encode() for n in sorted(os.listdir(odd_dir))], dtype=NAME)
    pinned = PinnedDir.at(odd_dir)
    here = read_many(pinned, names)
    odd_dir.rename(tmp_path / "moved")
    odd_dir.mkdir()  # same path, empty: a path-based reader would find nothing
    beside = Beside(pinned, names)
    got = beside.result()
    beside.cancel()
    assert got is not None
    assert got.rows.tobytes() == here.rows.tobytes() and len(got.rows)
