"""Audit a daemon run: did kvgroomd delete anything it should not have?

For the stress tests and the soak benchmark. The ground truth is the engine
emulator's journal (every version of every name it wrote: the inode it
created, the inode its rename replaced, the inodes it unlinked itself, and
which texts strictly extend which), the daemon's JSON log (every unlink, with
the inode it judged) and the directory at the end. A *version* is one inode
written under one name; every version must end exactly one way:

* the engine unlinked it (evicted, consumed, replaced);
* the engine renamed a newer file over it;
* kvgroomd unlinked it, and said so (`snapshot.unlinked`), or dropped its
  held copy because the engine renamed a newer file over the name meanwhile;
* it is still there.

A version that ended no way was lost without a log line; one that ended two
ways (other than the racy "renamed over") means some log line named the wrong
file. Every kvgroomd unlink must name an engine-written version, never a temp,
foreign, invalid, agent or unknown-format file; each must have been justified
when it was made (superseded: a compatible successor whose text strictly
extends the victim's existed; budget: usage above the target, the victim not
an agent or unknown-reason entry). Files the test planted (`bystanders`) must
be byte-for-byte and inode-for-inode where they were.
"""

from __future__ import annotations

import hashlib
import os
import stat
import struct
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from kvgroomd.daemon.apply import QUARANTINE_PREFIX
from kvgroomd.daemon.pinned import PinnedDir
from kvgroomd.daemon.scan import scan_directory
from kvgroomd.format.names import SnapshotName, TempName, classify

Record = dict[str, Any]
Key = tuple[str, int]  # (name, inode): one version of a name
PROTECTED_REASONS = ("agent-system", "agent-session", "unknown")
TRIGGER_REASONS = ("cold", "continued")
ABI_CURRENT = 2


@dataclass(frozen=True, slots=True)
class Seen:
    """One directory entry as the audit compares it: kind, inode, size and content."""

    kind: str  # file | symlink | directory | fifo | other
    ino: int
    size: int
    digest: str  # sha256 of a regular file's bytes (sparse holes read as zeros), a link's target


def _digest(path: Path, st: os.stat_result) -> str:
    if stat.S_ISLNK(st.st_mode):
        return os.readlink(path)
    if not stat.S_ISREG(st.st_mode):
        return ""
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        while chunk := os.read(fd, 1 << 20):
            h.update(chunk)
    finally:
        os.close(fd)
    return h.hexdigest()


def look(path: Path, *, content: bool = True) -> Seen | None:
    """What `path` is now (lstat: a symlink is not followed), or None.
    `content=False` skips hashing a regular file's bytes."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    mode = st.st_mode
    kind = (
        "file" if stat.S_ISREG(mode) else "symlink" if stat.S_ISLNK(mode)
        else "directory" if stat.S_ISDIR(mode) else "fifo" if stat.S_ISFIFO(mode) else "other"
    )  # fmt: skip
    return Seen(kind, st.st_ino, st.st_size, _digest(path, st) if content else "")


def timestamp(record: Record) -> float:
    """A daemon log record's time, Unix seconds."""
    return datetime.fromisoformat(record["timestamp"]).timestamp()


@dataclass
class Report:
    """What the audit found: problems (empty when all is well) and figures."""

    problems: list[str] = field(default_factory=list)
    figures: Counter[str] = field(default_factory=Counter)

    def fail(self, msg: str) -> None:
        """Record one problem (the first 50 are kept in full)."""
        self.figures["problems"] += 1
        if len(self.problems) < 50:
            self.problems.append(msg)


def _name(record: Record) -> str:
    return os.path.basename(str(record.get("path", "")))


@dataclass(frozen=True, slots=True)
class _Store:
    """One version as the engine stored it."""

    at: float  # just before the rename
    reason: str
    ctx_size: int
    model_id: int
    quant_bits: int
    abi: int


@dataclass(frozen=True, slots=True)
class Limits:
    """The daemon settings an unlink is judged against."""

    budget: int | None
    low_watermark: float = 0.9
    protect_new: float = 0.0  # informative: young files are not exempt (core/evict.py)
    strict_quant: bool = False

    @property
    def target(self) -> int | None:
        """Usage a budget pass brings the directory down to."""
        return None if self.budget is None else int(self.budget * self.low_watermark)


class _Audit:
    def __init__(self, journal: Sequence[Record], limits: Limits) -> None:
        self.r = Report()
        self.limits = limits
        self.stores: dict[Key, list[_Store]] = defaultdict(list)
        self.by_sha: dict[str, list[_Store]] = defaultdict(list)
        self.ended: Counter[Key] = Counter()  # by the engine's unlink, or still present
        self.renamed_over: Counter[Key] = Counter()
        self.claims: Counter[Key] = Counter()  # by kvgroomd
        self.extends: set[tuple[str, str]] = set()  # (shorter sha, longer sha)
        self.sizes: dict[Key, set[int]] = defaultdict(set)
        for rec in journal:
            self._journal(rec)
        self.r.figures["engine_stores"] = sum(len(v) for v in self.stores.values())
        self.r.figures["engine_unlinks"] = sum(self.ended.values())

    def _journal(self, rec: Record) -> None:
        op, name = rec["op"], rec["name"]
        if op == "store":
            key = (name, rec["inode"])
            s = _Store(rec["at"], rec["reason"], rec["ctx_size"], rec["model_id"],
                       rec["quant_bits"], rec["abi"])  # fmt: skip
            self.stores[key].append(s)
            self.by_sha[name[:40]].append(s)
            self.sizes[key].add(rec["size"])
            if rec.get("over") is not None:
                self.renamed_over[(name, rec["over"])] += 1
            self.extends.update((short, name[:40]) for short in rec.get("extends", ()))
            self.extends.update((name[:40], long_) for long_ in rec.get("extended_by", ()))
        elif op == "unlink" and rec.get("inode") is not None:
            self.ended[(name, rec["inode"])] += 1
        elif op in ("touch", "trailer") and rec.get("inode") is not None:
            self.sizes[(name, rec["inode"])].add(rec["size"])

    def directory(self, directory: Path) -> set[str]:
        """Count what is present as ended; flag held files left behind."""
        names = set()
        for entry in os.scandir(directory):
            names.add(entry.name)
            if entry.name.startswith(QUARANTINE_PREFIX):
                self.r.fail(f"{entry.name}: a held file was left behind")
            elif isinstance(classify(entry.name), SnapshotName):
                seen = look(Path(entry.path), content=False)
                if seen is not None and seen.kind == "file":
                    self.ended[(entry.name, seen.ino)] += 1
        return names

    def log(self, log: Sequence[Record]) -> None:
        """Judge every unlink kvgroomd logged."""
        for rec in log:
            event = rec.get("event")
            dropped = rec.get("why") == "superseded by a newer file"
            if event == "snapshot.unlink_skipped" and dropped:
                if rec.get("inode") is not None:
                    self.claims[(_name(rec), rec["inode"])] += 1
                    self.r.figures["held_copy_dropped"] += 1
            elif event == "snapshot.unlinked":
                self._unlinked(rec)

    def _unlinked(self, rec: Record) -> None:
        r, name = self.r, _name(rec)
        key = (name, int(rec.get("inode", -1)))
        r.figures[f"unlinked_{rec.get('cause')}"] += 1
        self.claims[key] += 1
        kind = classify(name)
        if not isinstance(kind, SnapshotName):
            what = "temp" if isinstance(kind, TempName) else "foreign"
            r.fail(f"{name}: kvgroomd unlinked a {what} file")
            return
        if key not in self.stores:
            r.fail(f"{name} inode {key[1]}: unlinked, but the engine never wrote it")
            return
        if rec.get("size") not in self.sizes[key]:
            r.fail(f"{name}: unlinked at size {rec.get('size')}, never a size of that version")
        t = timestamp(rec)
        before = [s for s in self.stores[key] if s.at <= t]
        if not before:
            r.fail(f"{name}: unlinked before the engine stored it")
        elif rec.get("cause") == "superseded":
            self._superseded(rec, name, max(before, key=lambda s: s.at), t)
        elif rec.get("cause") == "budget":
            self._budget(rec, name, max(before, key=lambda s: s.at))
        else:
            r.fail(f"{name}: unlinked for cause {rec.get('cause')!r}, which was not enabled")

    def _superseded(self, rec: Record, name: str, victim: _Store, t: float) -> None:
        succ, lim = str(rec.get("superseded_by")), self.limits
        if victim.reason != "continued":
            self.r.fail(f"{name}: superseded, but it is a {victim.reason} snapshot")
        if (name[:40], succ) not in self.extends:
            self.r.fail(f"{name}: superseded by {succ}, whose text does not strictly extend it")
        ok = [
            s for s in self.by_sha.get(succ, ())
            if s.at <= t and s.reason in TRIGGER_REASONS and s.model_id == victim.model_id
            and s.ctx_size <= victim.ctx_size
            and (not lim.strict_quant or s.quant_bits == victim.quant_bits)
            and s.abi in (ABI_CURRENT, victim.abi)
        ]  # fmt: skip
        if not ok:
            self.r.fail(f"{name}: superseded by {succ}, but no compatible cold/continued "
                        "version of it had been stored by then")  # fmt: skip

    def _budget(self, rec: Record, name: str, victim: _Store) -> None:
        target = self.limits.target
        if target is None:
            self.r.fail(f"{name}: evicted for budget without a budget")
            return
        usage = rec["dir_bytes"] + rec["size"]
        if usage <= target:
            self.r.fail(f"{name}: evicted with usage {usage} at or under the target {target}")
        if rec.get("reason") in PROTECTED_REASONS or victim.reason in PROTECTED_REASONS:
            self.r.fail(f"{name}: evicted, but {victim.reason} entries are protected")
        # protect_new only raises a young file's value (core/evict.py): a young
        # file may be evicted when older ones are worth more than twice as much.

    def accounts(self) -> None:
        """Every version ended exactly one way."""
        for key, versions in self.stores.items():
            n = len(versions)
            if self.ended[key] + self.claims[key] + self.renamed_over[key] < n:
                self.r.fail(f"{key[0]} inode {key[1]}: gone, yet neither the engine nor "
                            "kvgroomd says it removed it")  # fmt: skip
            if self.ended[key] + self.claims[key] > n:
                self.r.fail(f"{key[0]} inode {key[1]}: removed more often than written "
                            f"(engine or present {self.ended[key]}, "
                            f"kvgroomd {self.claims[key]}, written {n})")  # fmt: skip
        self.r.figures["versions"] = sum(len(v) for v in self.stores.values())


def audit(
    journal: Sequence[Record],
    log: Sequence[Record],
    directory: Path,
    limits: Limits,
    *,
    bystanders: Mapping[Path, Seen] | None = None,
) -> Report:
    """Check a finished run (see the module docstring); the directory as it is now."""
    a = _Audit(journal, limits)
    present = a.directory(directory)
    a.log(log)
    a.accounts()
    r = a.r
    # Crash-left temp files are never removed (orphan cleanup is off).
    for rec in journal:
        if rec["op"] == "crash" and rec["name"] not in present:
            r.fail(f"{rec['name']}: a crash-left temp file disappeared")
    r.figures["crash_temps"] = sum(1 for n in present if isinstance(classify(n), TempName))
    for path, before in (bystanders or {}).items():
        now = look(path)
        if now != before:
            r.fail(f"{path.name}: a planted {before.kind} changed: {before} -> {now}")
    r.figures["budget_unlinks_under_target"] = _stale_budget_unlinks(journal, log, limits)
    return r


def _stale_budget_unlinks(journal: Sequence[Record], log: Sequence[Record],
                          limits: Limits) -> int:  # fmt: skip
    """Budget unlinks made while the directory, replayed from the journal and
    the log by timestamp, already held no more than the target: the daemon's
    view lagged the engine's own removals. A figure, not a verdict: the two
    processes' timestamps only approximate the order of their actions."""
    if limits.target is None:
        return 0
    timeline: list[tuple[float, int, Record]] = []
    for rec in journal:
        if rec["op"] == "store":
            timeline.append((rec["at"], 0, rec))
        elif rec["op"] in ("unlink", "trailer"):
            timeline.append((rec["time"], 0, rec))
    timeline += [(timestamp(r), 1, r) for r in log if r.get("event") == "snapshot.unlinked"]
    timeline.sort(key=lambda e: (e[0], e[1]))
    files: dict[str, tuple[int, int]] = {}  # name -> (inode, size)
    stale = 0
    for _, from_log, rec in timeline:
        name = _name(rec) if from_log else rec["name"]
        ino, size = rec.get("inode"), rec.get("size")
        if from_log or rec["op"] == "unlink":
            if from_log and rec.get("cause") == "budget":
                stale += sum(s for _, s in files.values()) <= limits.target
            if files.get(name, (None,))[0] == ino:
                del files[name]
        elif (
            ino is not None
            and size is not None
            and (rec["op"] == "store" or files.get(name, (None,))[0] == ino)
        ):
            files[name] = (ino, size)
    return stale


def valid_snapshots(directory: Path) -> tuple[int, int]:
    """(count, bytes) of the snapshots kvgroomd should index in `directory`."""
    with PinnedDir(directory) as pinned:
        pinned.pin()
        found = scan_directory(pinned).snapshots
    return len(found), sum(s.size for s in found)


def vm_rss(pid: int) -> int | None:
    """Resident set size of `pid` in bytes (Linux), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fp:
            for line in fp:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except FileNotFoundError:
        return None
    return None


def _snapshot_bytes(text: bytes, *, reason: int = 1, version: int = 1, abi: int = 2,
                    quant: int = 2, tokens: int = 100_000, payload: int = 2048,
                    magic: bytes = b"KVC", cut: int | None = None) -> bytes:  # fmt: skip
    """A snapshot file's bytes with any header field forced (tokens high and the
    file small, so the engine's own eviction scores it last)."""
    head = struct.pack(
        "<3sBBBBBIIIB3xQQQI", magic, version, quant, reason, 0, 0, tokens, 0, 32768, abi,
        1_780_000_000, 1_780_000_000, payload, len(text),
    )  # fmt: skip
    body = head + text + b"DSV4" + bytes(payload - 4)
    return body if cut is None else body[:cut]


def plant(directory: Path, outside: Path, tag: str) -> dict[Path, Seen]:
    """Plant one of every kind of entry kvgroomd must never remove; return how
    each looked. `outside` receives a symlink target; `tag` makes names unique."""
    outside.mkdir(parents=True, exist_ok=True)

    def text(what: str) -> bytes:
        return f"<｜User｜>planted {what} {tag} ".encode() * 8

    def sha_name(what: str) -> str:
        return hashlib.sha1(text(what), usedforsecurity=False).hexdigest()

    files = {
        "sysprompt.kv": _snapshot_bytes(text("sysprompt"), reason=5),
        f"notes-{tag}.txt": b"not a snapshot\n",
        f"{sha_name('temp')}.kv.tmp.{os.getpid()}": _snapshot_bytes(text("temp"), cut=300),
        f"{sha_name('magic')}.kv": _snapshot_bytes(text("magic"), magic=b"XYZ"),
        f"{sha_name('truncated')}.kv": _snapshot_bytes(text("truncated"), cut=400),
        f"{sha_name('version')}.kv": _snapshot_bytes(text("version"), version=2),
        f"{sha_name('abi')}.kv": _snapshot_bytes(text("abi"), abi=7),
        f"{sha_name('quant')}.kv": _snapshot_bytes(text("quant"), quant=3),
        f"{sha_name('agent-system')}.kv": _snapshot_bytes(text("agent-system"), reason=5),
        f"{sha_name('agent-session')}.kv": _snapshot_bytes(text("agent-session"), reason=6),
        f"{sha_name('unknown')}.kv": _snapshot_bytes(text("unknown"), reason=0),
        f"{sha_name('reason-9')}.kv": _snapshot_bytes(text("reason-9"), reason=9),
    }
    if tag != "start":  # one fixed-name file is enough
        del files["sysprompt.kv"]
    planted: list[Path] = []
    for name, data in files.items():
        (directory / name).write_bytes(data)
        planted.append(directory / name)
    target = outside / f"target-{tag}.kv"
    target.write_bytes(_snapshot_bytes(text("target"), reason=2))
    link = directory / f"{sha_name('target')}.kv"
    link.symlink_to(target)
    fifo = directory / f"{sha_name('fifo')}.kv"
    os.mkfifo(fifo)
    sub = directory / f"{sha_name('directory')}.kv"
    sub.mkdir()
    (sub / "inside.kv").write_bytes(_snapshot_bytes(text("inside"), reason=2))
    planted += [target, link, fifo, sub, sub / "inside.kv"]
    return {p: s for p in planted if (s := look(p)) is not None}
