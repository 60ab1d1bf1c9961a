"""The engine model's `Storage` over a real directory: the emulator's files.

Writes, touches, rewrites and removes snapshot files the way the engine's
`ds4_kvstore.c` does: header first, temp file `<sha>.kv.tmp.<pid>` then
`rename()`, the 48-byte in-place touch, trailer rewrites, and every header
re-read per listing (what the engine does before each store). Payloads are
sparse holes by default (real sizes, almost no disk). Every action is
appended to an optional JSON-lines journal, so a test can tell what the
engine removed from what the daemon removed, and each store record says which
known texts it strictly extends or is a strict prefix of.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import stat
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kvgroomd.format.header import (
    ABI_CURRENT,
    ABI_LEGACY,
    PREFIX_BYTES,
    TOUCH_BYTES,
    Header,
    check_size,
    sha1_hex,
)
from kvgroomd.format.names import SnapshotName, classify
from kvgroomd.sim.engine import MiB, Variant
from kvgroomd.sim.storage import KeyText, Listing

PAYLOAD_MAGIC = b"DSV4"
_FILLER = b"ds4peer-payload\n"  # the fixtures' payload filler, for sparse=False


@dataclass(frozen=True, slots=True)
class Entry:
    """A file the engine counts as a cache entry (valid under its variant)."""

    name: str
    sha: str  # lower-case, from the name
    path: Path
    header: Header
    size: int
    ino: int


class DirStore:
    """Snapshot files in `directory`, as one engine generation sees them."""

    def __init__(self, directory: str | os.PathLike[str], *, variant: Variant = "current",
                 clock: Callable[[], float] = time.time, pid: int | None = None,
                 sparse: bool = True, fsync: bool = False,
                 journal: str | os.PathLike[str] | None = None, write_delay: float = 0.0,
                 track_prefixes: bool | None = None) -> None:  # fmt: skip
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)  # the engine's kv_mkdir_p
        self.variant = variant
        self.clock = clock
        self.pid = os.getpid() if pid is None else pid
        self.sparse = sparse
        self.fsync = fsync
        self.journal_path = Path(journal) if journal is not None else None
        self.write_delay = write_delay  # pause mid-write so in-flight temps are observable
        self.records: list[dict[str, Any]] = []  # the journal, also kept in memory
        self.keep_records = True
        self.written: set[str] = set()  # names this engine stored: texts it can render
        # Texts of recent stores (and of the files found at start), so each
        # store record can say which known texts it strictly extends or is a
        # strict prefix of. On by default when journaling to a file.
        self.track_prefixes = self.journal_path is not None if track_prefixes is None else (
            track_prefixes)  # fmt: skip
        self._texts: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self._text_bytes = 0
        if self.track_prefixes:
            for name in sorted(os.listdir(self.directory)):
                kind = classify(name)
                if not isinstance(kind, SnapshotName):
                    continue
                if (t := self.read_text(self.directory / name)) and sha1_hex(t) == kind.sha:
                    self._remember(kind.sha, t)

    # -- the journal -------------------------------------------------------------

    def journal(self, op: str, name: str, **fields: Any) -> None:
        """Append one record (one write per line: several engines may share a journal)."""
        record: dict[str, Any] = {"op": op, "name": name, "time": self.clock()}
        record.update(fields)
        if self.keep_records:
            self.records.append(record)
        if self.journal_path is not None:
            with open(self.journal_path, "a", encoding="utf-8") as fp:
                fp.write(json.dumps(record, sort_keys=True) + "\n")

    def journal_file(self, op: str, path: Path, header: Header,
                     st: os.stat_result | None = None, **fields: Any) -> None:  # fmt: skip
        """One record about a file; `st` is its fstat when the caller holds it
        open (a stat by path may already see the daemon's work)."""
        if st is None:
            try:
                st = path.stat()
            except FileNotFoundError:  # the daemon may already have removed it
                st = None
        self.journal(
            op, path.name, inode=st.st_ino if st else None, size=st.st_size if st else None,
            reason=header.reason.label, tokens=header.tokens, hits=header.hits, **fields,
        )  # fmt: skip

    _TEXT_CAP = 32 * MiB  # recent texts kept; the cache holds far fewer bytes of text

    def _remember(self, sha: str, text: bytes) -> None:
        if sha in self._texts:
            self._texts.move_to_end(sha)
            return
        self._texts[sha] = text
        self._text_bytes += len(text)
        while self._text_bytes > self._TEXT_CAP and len(self._texts) > 1:
            _, old = self._texts.popitem(last=False)
            self._text_bytes -= len(old)

    def _relations(self, sha: str, text: bytes) -> dict[str, list[str]]:
        """Known texts that `text` strictly extends, and that strictly extend it."""
        extends, extended_by = [], []
        for other, t in self._texts.items():
            if len(t) < len(text) and text.startswith(t):
                extends.append(other)
            elif len(t) > len(text) and t.startswith(text):
                extended_by.append(other)
        self._remember(sha, text)
        return {"extends": sorted(extends), "extended_by": sorted(extended_by)}

    # -- reading the directory the way the engine does ---------------------------

    @staticmethod
    def _read_regular(path: Path, text: bool = False) -> bytes | None:
        """The first 52 bytes (and the text after them, with `text`) of a
        regular file, following symlinks as fopen does; None for anything
        else (a FIFO named like a snapshot must not block the emulator)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            return None
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            raw = os.pread(fd, PREFIX_BYTES, 0)
            if not text or len(raw) < PREFIX_BYTES:
                return raw
            (text_bytes,) = struct.unpack_from("<I", raw, 48)
            return raw + os.pread(fd, text_bytes, PREFIX_BYTES)
        finally:
            os.close(fd)

    def parse_header(self, raw: bytes) -> Header | None:
        """`raw` (the first 52 bytes) as this engine generation reads it, or None."""
        header = Header.parse(raw)
        # Older engines never looked at byte 20: any ABI value is theirs.
        foreign_abi = len(raw) == PREFIX_BYTES and raw[20] != ABI_LEGACY
        if self.variant == "legacy" and not isinstance(header, Header) and foreign_abi:
            header = Header.parse(raw[:20] + bytes([ABI_LEGACY]) + raw[21:])
        if not isinstance(header, Header):
            return None
        if self.variant == "current" and header.abi != ABI_CURRENT:
            return None  # files of older engines are invisible to current ones
        return header

    def read_header(self, path: Path) -> Header | None:
        """The header as this engine generation reads it, or None if it ignores the file."""
        raw = self._read_regular(path)
        return None if raw is None else self.parse_header(raw)

    def read_text(self, path: Path) -> bytes | None:
        """The rendered text stored in a snapshot, or None when unreadable."""
        raw = self._read_regular(path, text=True)
        if raw is None or len(raw) < PREFIX_BYTES:
            return None
        (text_bytes,) = struct.unpack_from("<I", raw, 48)
        text = raw[PREFIX_BYTES:]
        return text if len(text) == text_bytes else None

    def get(self, name: str) -> Entry | None:
        """`name` as a cache entry, or None when the engine would not count it."""
        kind = classify(name)
        if not isinstance(kind, SnapshotName):
            return None
        path = self.directory / name
        header = self.read_header(path)
        if header is None:
            return None
        try:
            st = path.stat()
        except FileNotFoundError:
            return None
        if check_size(header, st.st_size) is not None:
            return None
        return Entry(name, kind.sha, path, header, st.st_size, st.st_ino)

    def entries(self) -> list[Entry]:
        """Every entry the engine counts, in name order (the engine scans in
        readdir order; name order makes ties reproducible)."""
        return [e for name in sorted(os.listdir(self.directory)) if (e := self.get(name))]

    # -- Storage --------------------------------------------------------------------

    def listing(self) -> Listing:
        """Every entry, re-read."""
        return Listing.of([(e.name, e.header, e.size) for e in self.entries()])

    def entry(self, name: str) -> tuple[Header, int] | None:
        """`name`'s header and size if the engine counts it."""
        e = self.get(name)
        return None if e is None else (e.header, e.size)

    def extends(self, name: str, text: KeyText) -> bool:
        """SHA-1 of `text`'s first text_bytes bytes is `name` (the engine's test)."""
        e = self.get(name)
        if e is None or e.header.text_bytes > text.nbytes:
            return False
        return sha1_hex(text.render()[: e.header.text_bytes]) == e.sha

    def same_text(self, name: str, text: KeyText) -> bool:
        """The stored text hashes to the name and equals `text`."""
        stored = self.read_text(self.directory / name)
        return stored is not None and sha1_hex(stored) == name[:40] and stored == text.render()

    def load(self, name: str, prompt: KeyText) -> bool:
        """Re-read the text: it must hash to the name and prefix the prompt."""
        stored = self.read_text(self.directory / name)
        return (stored is not None and sha1_hex(stored) == name[:40]
                and prompt.render().startswith(stored))  # fmt: skip

    def _payload_head(self, header: Header) -> bytes:
        # 13 u32 like the fixtures' payload header: magic, payload version, shape.
        version = 1 if header.legacy else 2
        head = PAYLOAD_MAGIC + struct.pack(
            "<12I", version, header.tokens, header.ctx_size, header.quant_bits,
            header.model_id, 0, 0, 0, 0, 0, 0, 0,
        )  # fmt: skip
        return head[: header.payload_bytes]

    def write_body(self, fd: int, header: Header, text: bytes, trailer: bytes,
                   *, stop_at: int | None = None) -> None:  # fmt: skip
        """Write header, text, payload and trailer to `fd`; stop early at `stop_at` bytes."""
        head = header.pack() + text + self._payload_head(header)
        end_payload = header.min_file_size
        final = end_payload + len(trailer)
        limit = final if stop_at is None else min(stop_at, final)
        os.pwrite(fd, head[:limit], 0)  # the header is the first thing written
        if self.write_delay:
            time.sleep(self.write_delay)
        if limit <= len(head):
            return
        if self.sparse:
            os.ftruncate(fd, min(limit, end_payload))  # a hole instead of 600 MiB of state
        else:
            pos = len(head)
            chunk = _FILLER * (1 << 12)
            while pos < min(limit, end_payload):
                n = min(len(chunk), min(limit, end_payload) - pos)
                os.pwrite(fd, chunk[:n], pos)
                pos += n
        if limit > end_payload:
            os.pwrite(fd, trailer[: limit - end_payload], end_payload)

    def temp_path(self, sha: str, pid: int | None = None) -> Path:
        """`<sha>.kv.tmp.<pid>`."""
        return self.directory / f"{sha}.kv.tmp.{self.pid if pid is None else pid}"

    def _finish(self, tmp: Path, path: Path, header: Header, text: bytes,
                st: os.stat_result) -> None:  # fmt: skip
        """rename(tmp, path), journaled with the inode it replaced and when."""
        try:
            over: int | None = os.lstat(path).st_ino
        except FileNotFoundError:
            over = None
        at = self.clock()
        os.rename(tmp, path)  # replaces any older file of that name
        self.written.add(path.name)
        rel = self._relations(path.name[:40], text) if self.track_prefixes else {}
        self.journal_file(
            "store", path, header, st, tmp=tmp.name, over=over, at=at,
            text_bytes=header.text_bytes, ctx_size=header.ctx_size, model_id=header.model_id,
            quant_bits=header.quant_bits, abi=header.abi, **rel,
        )  # fmt: skip

    def write(self, name: str, header: Header, text: KeyText, trailer: bytes,
              now: float) -> None:  # fmt: skip
        """A whole store: temp file, flush, close, rename."""
        raw = text.render()
        tmp = self.temp_path(name[:40])
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)  # fopen "wb"
        try:
            self.write_body(fd, header, raw, trailer)
            if self.fsync:
                os.fsync(fd)
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)  # the engine removes its temp on a failed write
            raise
        os.close(fd)
        self._finish(tmp, self.directory / name, header, raw, st)

    @contextlib.contextmanager
    def in_flight(self, header: Header, text: bytes) -> Iterator[Path]:
        """A store paused inside its payload write: yields the temp path, renames on exit."""
        sha = sha1_hex(text)
        tmp = self.temp_path(sha)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self.write_body(fd, header, text, b"", stop_at=header.min_file_size // 2)
            yield tmp
            self.write_body(fd, header, text, b"")
            st = os.fstat(fd)
        finally:
            os.close(fd)
        self._finish(tmp, self.directory / f"{sha}.kv", header, text, st)

    def crash(self, header: Header, text: bytes, pid: int | None, fraction: float) -> Path:
        """A write cut short by the writer's death: the temp file stays."""
        tmp = self.temp_path(sha1_hex(text), pid)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            stop = max(PREFIX_BYTES, int(header.min_file_size * fraction))
            self.write_body(fd, header, text, b"", stop_at=stop)
        finally:
            os.close(fd)
        self.journal_file("crash", tmp, header)
        return tmp

    def _in_place(self, op: str, name: str, header: Header, trailer: bytes | None) -> None:
        """fopen("r+b"): with `trailer`, truncate after the payload and append
        it; then rewrite the first 48 bytes. Same inode; journaled as `op`."""
        path = self.directory / name
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return
        try:
            if trailer is not None:
                os.ftruncate(fd, header.min_file_size)
                os.pwrite(fd, trailer, header.min_file_size)
            os.pwrite(fd, header.pack()[:TOUCH_BYTES], 0)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        extra = {} if trailer is None else {"trailer_bytes": len(trailer)}
        self.journal_file(op, path, header, st, **extra)

    def touch(self, name: str, header: Header, now: float) -> None:
        """Rewrite the first 48 bytes in place (a hit)."""
        self._in_place("touch", name, header, None)

    def rewrite_trailer(self, name: str, header: Header, trailer: bytes, now: float) -> None:
        """Truncate after the payload, append `trailer`, then rewrite the header."""
        self._in_place("trailer", name, header, trailer)

    def delete(self, name: str, cause: str, now: float, **fields: Any) -> bool:
        """unlink(); journaled with the inode and header it removed."""
        path = self.directory / name
        e = self.get(name)
        try:
            st = path.stat()
            os.unlink(path)
        except FileNotFoundError:
            return False
        header = e.header if e is not None else None
        self.journal(
            "unlink", name, inode=st.st_ino, size=st.st_size,
            reason=header.reason.label if header else None,
            tokens=header.tokens if header else None, hits=header.hits if header else None,
            cause=cause, **fields,
        )  # fmt: skip
        return True

    def note(self, op: str, name: str, now: float, **fields: object) -> None:
        """A journal record that changes no file (hit, miss, reuse, skip, ...)."""
        if op == "hit":
            with contextlib.suppress(FileNotFoundError):
                fields = {"inode": (self.directory / name).stat().st_ino, **fields}
        self.journal(op, name, **fields)


def read_journal(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a journal file, in order."""
    with open(path, encoding="utf-8") as fp:
        return [json.loads(line) for line in fp if line.strip()]


def engine_unlinked(records: Sequence[dict[str, Any]]) -> set[str]:
    """Names the engine itself unlinked (evicted, consumed or replaced)."""
    return {r["name"] for r in records if r["op"] == "unlink"}
