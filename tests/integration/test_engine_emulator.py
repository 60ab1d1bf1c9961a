"""The ds4 engine emulator behaves as spec section 3 says the engine does."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from watchdog.events import FileMovedEvent, FileSystemEvent, FileSystemEventHandler
from watchdog.observers.inotify import InotifyObserver

from kvgroomd.format.header import PREFIX_BYTES, TOUCH_BYTES, Header, Reason, sha1_hex
from kvgroomd.testing.engine import (
    Engine,
    Incoming,
    MiB,
    StoreSkippedError,
    conversation,
    engine_unlinked,
    eviction_score,
    ladder,
    populate,
    read_journal,
    size_model,
)
from kvgroomd.testing.server import Server, dead_pid

REPO = Path(__file__).resolve().parents[2]
T0 = 1_780_000_000
SIX_HOURS = 6 * 3600
FILE = 10_000  # every file in the hand-computed eviction cases has this size
SNAPSHOT = re.compile(r"[0-9a-f]{40}\.kv")
TEMP = re.compile(r"[0-9a-f]{40}\.kv\.tmp\.[0-9]+")


class Clock:
    """A settable clock for the engine's `time(NULL)`."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def head(path: Path, n: int) -> bytes:
    """The first `n` bytes (sparse snapshots are hundreds of MiB: never read them whole)."""
    with open(path, "rb") as fp:
        return fp.read(n)


def header_of(path: Path) -> Header:
    parsed = Header.parse(head(path, PREFIX_BYTES))
    assert isinstance(parsed, Header), parsed
    return parsed


def text_of(path: Path) -> bytes:
    return head(path, PREFIX_BYTES + header_of(path).text_bytes)[PREFIX_BYTES:]


def assert_valid_snapshot(path: Path) -> Header:
    h = header_of(path)
    assert path.name == sha1_hex(text_of(path)) + ".kv"
    assert path.stat().st_size >= h.min_file_size
    return h


def small(engine: Engine, text: bytes, tokens: int, reason: Reason, **kw: object) -> Path:
    """Store with a payload sized so the whole file is exactly FILE bytes."""
    payload = FILE - PREFIX_BYTES - len(text)
    return engine.store(text, tokens, reason, payload_bytes=payload, **kw)  # type: ignore[arg-type]


def test_store_writes_a_parseable_snapshot_named_by_the_sha1_of_its_text(tmp_path: Path) -> None:
    """A stored file parses as a current header and is named by the SHA-1 of its text."""
    engine = Engine(tmp_path, clock=Clock())
    text = conversation(1, 2000).text(2000)
    path = engine.store(text, 2000, Reason.CONTINUED, model_id=1, quant_bits=4)
    h = assert_valid_snapshot(path)
    assert text_of(path) == text
    assert (h.reason, h.tokens, h.hits, h.abi, h.model_id, h.quant_bits) == (
        Reason.CONTINUED, 2000, 0, 2, 1, 4,
    )  # fmt: skip
    assert h.created_at == h.last_used == T0
    payload = head(path, PREFIX_BYTES + len(text) + 4)[-4:]
    assert payload == b"DSV4"
    assert sorted(os.listdir(tmp_path)) == [path.name]


def test_sparse_store_is_sized_by_the_size_model_without_using_disk(tmp_path: Path) -> None:
    """A sparse snapshot has the size model's size but almost no allocated blocks."""
    engine = Engine(tmp_path)
    text = conversation(2, 10240).text(10240)
    path = engine.store(text, 10240, Reason.CONTINUED)
    st = path.stat()
    assert st.st_size == size_model(10240)
    assert abs(st.st_size / MiB - 157.34) < 0.5  # the spec's logged size
    assert st.st_blocks * 512 < MiB


def test_store_renames_a_pid_temp_file_into_place(tmp_path: Path) -> None:
    """An inotify watch sees the store as a move from `<sha>.kv.tmp.<pid>` to `<sha>.kv`."""
    moved: list[FileMovedEvent] = []
    seen = threading.Event()

    class Handler(FileSystemEventHandler):
        def on_moved(self, event: FileSystemEvent) -> None:
            assert isinstance(event, FileMovedEvent)
            moved.append(event)
            seen.set()

    observer = InotifyObserver()
    observer.schedule(Handler(), str(tmp_path))
    observer.start()
    try:
        engine = Engine(tmp_path, pid=4242)
        text = conversation(3, 1000).text(1000)
        path = engine.store(text, 1000, Reason.COLD)
        assert seen.wait(5)
    finally:
        observer.stop()
        observer.join()
    sha = sha1_hex(text)
    assert Path(str(moved[0].src_path)).name == f"{sha}.kv.tmp.4242"
    assert Path(str(moved[0].dest_path)).name == f"{sha}.kv" == path.name
    assert os.listdir(tmp_path) == [path.name]


def test_touch_rewrites_hits_and_last_used_in_place(tmp_path: Path) -> None:
    """A touch bumps hits and last_used, keeps the inode and changes nothing past byte 48."""
    clock = Clock()
    engine = Engine(tmp_path, clock=clock, sparse=False)
    path = engine.store(conversation(4, 800).text(800), 800, Reason.COLD)
    before, ino = path.read_bytes(), path.stat().st_ino
    clock.now = T0 + 90
    assert engine.touch(path.name) is not None
    after = path.read_bytes()
    h = header_of(path)
    assert (h.hits, h.last_used, h.created_at) == (1, T0 + 90, T0)
    assert path.stat().st_ino == ino
    assert after[TOUCH_BYTES:] == before[TOUCH_BYTES:]
    assert [r["op"] for r in engine.records] == ["store", "touch"]


def test_lookup_touches_the_longest_prefix_and_consumes_entries_over_30000_tokens(
    tmp_path: Path,
) -> None:
    """A hit on the longest prefix is touched when <= 30000 tokens and unlinked when larger."""
    engine = Engine(tmp_path, clock=Clock())
    conv = conversation(5, 30001)
    short = engine.store(conv.text(1200), 1200, Reason.CONTINUED)
    mid = engine.store(conv.text(30000), 30000, Reason.CONTINUED)
    hit = engine.lookup(conv.text(30000) + b" more")
    assert hit is not None and hit.name == mid.name and not hit.consumed
    assert header_of(mid).hits == 1 and header_of(short).hits == 0
    big = engine.store(conv.text(30001), 30001, Reason.EVICT)
    hit = engine.lookup(conv.text(30001) + b" more")
    assert hit is not None and hit.name == big.name and hit.consumed
    assert not big.exists() and mid.exists()
    assert engine.records[-1]["op"] == "unlink" and engine.records[-1]["cause"] == "consume"
    assert engine.lookup(b"unrelated prompt") is None


def test_current_engine_evicts_before_writing_in_spec_score_order(tmp_path: Path) -> None:
    """Current engines free budget - incoming before writing, lowest (h+1)*tokens/size first."""
    clock = Clock()
    engine = Engine(tmp_path, clock=clock, sparse=False)
    chain = conversation(6, 3000)
    a = small(engine, conversation(7, 1000).text(1000), 1000, Reason.CONTINUED)
    b = small(engine, conversation(8, 1000).text(1000), 1000, Reason.COLD)
    c = small(engine, conversation(9, 1000).text(1000), 1000, Reason.CONTINUED)
    d = small(engine, chain.text(1200), 1200, Reason.CONTINUED)  # N's prefix
    for _ in range(4):
        engine.touch(c.name)
    clock.now = T0 + SIX_HOURS  # c's 4 hits decay to h = 2
    incoming = chain.text(2000)
    # Hand-computed: a 0.1, b 0.1 * 2 (cold), c (2+1) * 0.1, d 0.12 * 0.05 (superseded).
    inc = Incoming(incoming)
    scores = {e.name: engine.score(e, incoming=inc) for e in engine.entries()}
    assert scores == pytest.approx({a.name: 0.1, b.name: 0.2, c.name: 0.3, d.name: 0.006})
    engine.budget_bytes = 3 * FILE  # target before the write: 2 * FILE
    n = small(engine, incoming, 2000, Reason.CONTINUED)
    evicted = [r["name"] for r in engine.records if r["op"] == "unlink"]
    assert evicted == [d.name, a.name]
    assert sorted(os.listdir(tmp_path)) == sorted([b.name, c.name, n.name])
    assert engine.total_bytes() == 3 * FILE


def test_legacy_engine_evicts_after_the_rename_and_protects_the_new_file(tmp_path: Path) -> None:
    """Legacy engines write ABI 0 / model 0, evict after the rename, spare the new file, no x2."""
    clock = Clock(T0 - 100)
    engine = Engine(tmp_path, clock=clock, sparse=False, variant="legacy")
    b = small(engine, conversation(10, 1000).text(1000), 1000, Reason.COLD)
    clock.now = T0
    a = small(engine, conversation(11, 1000).text(1000), 1000, Reason.CONTINUED)
    c = small(engine, conversation(12, 1000).text(1000), 1000, Reason.CONTINUED)
    for _ in range(4):
        engine.touch(c.name)  # h = 4: score 0.5
    engine.budget_bytes = 2 * FILE
    # n scores 0.01, the lowest, but is protected; a and b tie at 0.1, b used longer ago.
    n = small(engine, conversation(13, 1000).text(1000), 100, Reason.CONTINUED, model_id=1)
    raw = n.read_bytes()
    assert (raw[7], raw[20]) == (0, 0)
    assert [r["name"] for r in engine.records if r["op"] == "unlink"] == [b.name, a.name]
    assert sorted(os.listdir(tmp_path)) == sorted([c.name, n.name])
    # A file that alone exceeds the budget loses its protection.
    assert engine.evict_to(FILE - 1, protect=n.name) == [n.name, c.name]


def test_superseded_continued_factor_grows_with_decayed_hits() -> None:
    """A superseded continued entry with h = 1 is scored (1+1)*tokens/size*(0.05+0.45/2)."""
    h = Header(
        quant_bits=2, reason=Reason.CONTINUED, ext_flags=0, model_id=0, tokens=1000,
        hits=2, ctx_size=32768, abi=2, created_at=T0, last_used=T0, payload_bytes=1,
        text_bytes=1,
    )  # fmt: skip
    now = T0 + SIX_HOURS
    assert eviction_score(h, FILE, now, superseded=True) == pytest.approx(0.2 * 0.275)
    assert eviction_score(h, FILE, now, variant="legacy", superseded=True) == pytest.approx(0.2)
    stale = eviction_score(h, FILE, T0 + 60 * SIX_HOURS)  # 2 * 2^-60 < 0.01 counts as 0
    assert stale == pytest.approx(0.1)


def test_current_engine_neither_counts_nor_removes_invisible_files(tmp_path: Path) -> None:
    """Eviction skips ABI-0 files, temp files and foreign files; it removes only entries."""
    legacy = Engine(tmp_path, variant="legacy", sparse=False)
    old = legacy.store(conversation(14, 900).text(900), 900, Reason.EVICT)
    engine = Engine(tmp_path, sparse=False)
    temp = engine.crash(conversation(15, 900).text(900), 900, Reason.COLD, pid=dead_pid())
    (tmp_path / "sysprompt.kv").write_bytes(b"agent checkpoint")
    mine = engine.store(conversation(16, 900).text(900), 900, Reason.COLD)
    assert [e.name for e in engine.entries()] == [mine.name]
    assert engine.evict_to(0) == [mine.name]
    assert sorted(os.listdir(tmp_path)) == sorted([old.name, temp.name, "sysprompt.kv"])
    # The legacy engine sees (and would evict) both generations.
    assert {e.name for e in legacy.entries()} == {old.name}


def test_crash_leaves_a_partial_temp_file_and_in_flight_store_finishes_by_rename(
    tmp_path: Path,
) -> None:
    """A crash leaves `<sha>.kv.tmp.<pid>` short of its final size; a live write is renamed."""
    engine = Engine(tmp_path, sparse=False)
    text = conversation(17, 1500).text(1500)
    temp = engine.crash(text, 1500, Reason.CONTINUED, pid=999_999, fraction=0.3)
    assert temp.name == f"{sha1_hex(text)}.kv.tmp.999999"
    h = header_of(temp)
    assert temp.stat().st_size < h.min_file_size
    other = conversation(18, 1500).text(1500)
    with engine.in_flight(other, 1500, Reason.COLD) as live:
        assert TEMP.fullmatch(live.name) and live.exists()
        assert header_of(live).payload_bytes > 0  # the header is already there
    final = tmp_path / f"{sha1_hex(other)}.kv"
    assert not live.exists() and assert_valid_snapshot(final).tokens == 1500


def test_trailer_rewrite_truncates_after_the_payload_and_keeps_the_inode(tmp_path: Path) -> None:
    """A trailer rewrite keeps inode and hits, sets ext bit 0 and ends the file with the trailer."""
    clock = Clock()
    engine = Engine(tmp_path, clock=clock, sparse=False)
    text = conversation(19, 1000).text(1000)
    path = engine.store(text, 1000, Reason.CONTINUED, trailer=b"KTM\x01old-trailer-bytes")
    engine.touch(path.name)
    ino = path.stat().st_ino
    clock.now = T0 + 5
    same = engine.store(text, 1000, Reason.CONTINUED, trailer=b"KTM\x01new")
    h = header_of(path)
    assert same == path and path.stat().st_ino == ino
    assert path.stat().st_size == h.min_file_size + len(b"KTM\x01new")
    assert path.read_bytes().endswith(b"KTM\x01new")
    assert (h.ext_flags & 1, h.hits, h.last_used) == (1, 1, T0 + 5)


def test_replace_by_rename_rewrites_the_same_name_under_another_inode(tmp_path: Path) -> None:
    """Renaming a replacement over a snapshot gives the name another inode and the new header."""
    engine = Engine(tmp_path, sparse=False)
    path = engine.store(conversation(20, 1000).text(1000), 1000, Reason.COLD, ctx_size=65536)
    ino = path.stat().st_ino
    assert engine.replace(path.name, via="rename", ctx_size=16384) == path
    assert path.stat().st_ino != ino
    assert assert_valid_snapshot(path).ctx_size == 16384
    assert [r["op"] for r in engine.records] == ["store", "store"]


def test_replace_by_unlink_may_recycle_the_inode_number(tmp_path: Path) -> None:
    """Unlink-then-rewrite makes a new file whose inode number the filesystem may reuse."""
    engine = Engine(tmp_path, sparse=False)
    path = engine.store(conversation(26, 1000).text(1000), 1000, Reason.COLD, ctx_size=65536)
    old = path.stat()
    engine.replace(path.name, via="unlink", ctx_size=16384)
    new = path.stat()
    assert assert_valid_snapshot(path).ctx_size == 16384
    unlink, store = engine.records[-2:]
    assert (unlink["op"], unlink["cause"], unlink["inode"]) == ("unlink", "replace", old.st_ino)
    assert (store["op"], store["inode"]) == ("store", new.st_ino)
    # ext4 often hands the freed number straight back: (dev, ino, size) can all repeat.
    assert new.st_size == old.st_size


def test_store_refuses_a_file_that_cannot_fit_the_budget(tmp_path: Path) -> None:
    """A snapshot whose size plus 1% exceeds the budget is skipped and nothing is evicted."""
    engine = Engine(tmp_path, sparse=False)
    keep = small(engine, conversation(21, 1000).text(1000), 1000, Reason.COLD)
    engine.budget_bytes = FILE + 99  # needs FILE + 100
    with pytest.raises(StoreSkippedError):
        small(engine, conversation(22, 1000).text(1000), 1000, Reason.COLD)
    assert os.listdir(tmp_path) == [keep.name]


def test_ladder_texts_are_strict_byte_prefixes_in_spec_order(tmp_path: Path) -> None:
    """The ladder stores continued 10240..40960, then evict 49022; each text extends the last."""
    engine = Engine(tmp_path)
    paths = ladder(engine)
    headers = [header_of(p) for p in paths]
    assert [(h.tokens, h.reason) for h in headers] == [
        (10240, Reason.CONTINUED), (20480, Reason.CONTINUED), (30720, Reason.CONTINUED),
        (40960, Reason.CONTINUED), (49022, Reason.EVICT),
    ]  # fmt: skip
    texts = [text_of(p) for p in paths]
    for shorter, longer in itertools.pairwise(texts):
        assert len(shorter) < len(longer) and longer.startswith(shorter)
    assert 3.5 < len(texts[-1]) / 49022 < 5.5  # about 4 bytes a token
    assert abs(paths[-1].stat().st_size / MiB - 666.49) < 3


def test_engine_journal_names_exactly_what_the_engine_removed(tmp_path: Path) -> None:
    """Under a tight budget, the journal's unlinks are exactly the ladder files that vanished."""
    journal = tmp_path / "journal.jsonl"
    cache = tmp_path / "cache"
    engine = Engine(cache, budget_bytes=1200 * MiB, journal=journal)
    paths = ladder(engine)
    gone = {p.name for p in paths if not p.exists()}
    records = read_journal(journal)
    assert gone and engine_unlinked(records) == gone
    assert {"op", "name", "inode", "size", "reason", "tokens", "time"} <= records[0].keys()
    assert engine.total_bytes() <= 1200 * MiB


def test_server_stores_a_cold_anchor_that_a_later_conversation_hits(tmp_path: Path) -> None:
    """A fresh prompt stores `cold` at the system-prompt anchor; the next client prompt hits it."""
    engine = Engine(tmp_path)
    server = Server(engine)
    first = conversation(23, 0)
    first.add_turn(3000, 200)
    server.request(first, 0)
    colds = [e for e in engine.entries() if e.header.reason == Reason.COLD]
    assert [e.header.tokens for e in colds] == [first.anchor]
    second = conversation(24, 0)
    second.add_turn(2000, 200)
    hit = server.request(second, 0)
    assert hit is not None and hit.name == colds[0].name
    assert header_of(colds[0].path).hits == 1
    # The first conversation's live session was saved as `evict` when the second arrived.
    assert any(e.header.reason == Reason.EVICT for e in engine.entries())


def test_tool_session_evict_saves_never_match_the_next_prompt(tmp_path: Path) -> None:
    """A tool session's evict save holds sampled bytes the client's next prompt does not repeat."""
    engine = Engine(tmp_path)
    server = Server(engine)
    conv = conversation(25, 0, tools=True)
    conv.add_turn(1500, 300)
    conv.add_turn(400, 300)
    server.request(conv, 0)
    server.request(conv, 1)  # the prompt re-renders the tool call: not the live session
    evicts = [e for e in engine.entries() if e.header.reason == Reason.EVICT]
    assert len(evicts) == 1
    next_prompt = conv.text(conv.prompt_ends[1])
    assert not next_prompt.startswith(engine.read_text(evicts[0].path) or b"")


def test_populate_writes_valid_sparse_snapshots_with_prefix_chains(tmp_path: Path) -> None:
    """populate() writes n valid, sparse, sha-named snapshots, some of them prefix chains."""
    paths = populate(tmp_path, 300, seed=1, now=T0)
    assert len(paths) == len(os.listdir(tmp_path)) == 300
    texts = {}
    for p in paths:
        h = assert_valid_snapshot(p)
        assert h.abi == 2 and h.last_used <= T0
        texts[p.name] = text_of(p)
    by_len = sorted(texts.values(), key=len)
    chained = sum(1 for i, t in enumerate(by_len) for u in by_len[i + 1 :] if u.startswith(t))
    assert chained > 10


@pytest.mark.parametrize("variant", ["current", "legacy"])
def test_cli_workload_stops_by_itself_and_leaves_only_engine_names(
    tmp_path: Path, variant: str
) -> None:
    """A seeded CLI run ends on its own, leaving valid snapshots and temp files within budget."""
    cache, journal = tmp_path / "cache", tmp_path / "journal.jsonl"
    budget = 6 * 1024 * MiB
    cmd = [
        sys.executable, "-m", "kvgroomd.testing.engine", "--dir", str(cache), "--seed", "7",
        "--ops", "120", "--seconds", "6", "--budget", str(budget), "--variant", variant,
        "--journal", str(journal),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    names = os.listdir(cache)
    assert names and all(SNAPSHOT.fullmatch(n) or TEMP.fullmatch(n) for n in names)
    snapshots = [cache / n for n in names if SNAPSHOT.fullmatch(n)]
    for p in snapshots:
        assert_valid_snapshot(p)
    # Only trailer rewrites grow a file without an eviction pass.
    assert sum(p.stat().st_size for p in snapshots) <= budget + MiB
    ops = {r["op"] for r in read_journal(journal)}
    assert {"store", "unlink", "hit"} <= ops


def test_store_records_name_the_inodes_and_the_prefix_relations(tmp_path: Path) -> None:
    """A journaled store names the inode it created and the one it replaced, and
    which known texts it strictly extends or is a strict prefix of."""
    cache, journal = tmp_path / "cache", tmp_path / "journal.jsonl"
    engine = Engine(cache, journal=journal)
    conv = conversation(31, 3000)
    short, long_ = conv.text(1000), conv.text(2000)
    first = engine.store(long_, 2000, Reason.CONTINUED)
    second = engine.store(short, 1000, Reason.CONTINUED)  # out of order: the shorter lands last
    old_ino = first.stat().st_ino
    again = engine.replace(first.name, via="rename", ctx_size=16384)
    stores = [r for r in read_journal(journal) if r["op"] == "store"]
    assert [r["inode"] for r in stores] == [
        old_ino, second.stat().st_ino, again.stat().st_ino
    ]  # fmt: skip
    assert [r["over"] for r in stores] == [None, None, old_ino]
    assert stores[1]["extended_by"] == [first.name[:40]] and stores[1]["extends"] == []
    assert stores[2]["extends"] == [second.name[:40]] and stores[2]["ctx_size"] == 16384
    assert all(r["at"] <= r["time"] for r in stores)
    # A second engine on the same directory knows the texts already on disk.
    later = Engine(cache, journal=journal).store(conv.text(2500), 2500, Reason.COLD)
    last = read_journal(journal)[-1]
    assert last["name"] == later.name
    assert last["extends"] == sorted([first.name[:40], second.name[:40]])


def test_fifo_and_directory_named_like_snapshots_are_not_entries(tmp_path: Path) -> None:
    """A FIFO or directory named `<sha>.kv` is no entry, and reading it never blocks."""
    os.mkfifo(tmp_path / f"{'a' * 40}.kv")
    (tmp_path / f"{'b' * 40}.kv").mkdir()
    engine = Engine(tmp_path, budget_bytes=10 * MiB, journal=tmp_path / "j.jsonl")
    path = small(engine, b"x" * 600, 600, Reason.COLD)
    assert [e.name for e in engine.entries()] == [path.name]
    assert engine.startup() == []
