"""An emulator of ds4-server's disk KV cache (spec section 3), for tests and benchmarks.

`Engine` writes, touches, rewrites and removes snapshot files in a directory
the way the engine's `ds4_kvstore.c` does: temp file then `rename()`, header
first, 48-byte in-place touch, consume-on-load, and its own budget eviction
(`variant="current"` for engines since 2026-05-26, `"legacy"` before). It runs
in the caller's thread, as the engine's store path runs in the engine's, so a
daemon under test sees the same race: the engine acts first.

`Server` drives an `Engine` the way ds4-server's request flow does (cold
anchors, continued frontiers, evict and shutdown saves), `Conversation`
renders deterministic chat texts, `populate()` fills a directory fast for
benchmarks, and `python -m kvgroomd.testing.engine` runs a seeded workload.

Every action is appended to an optional JSON-lines journal, so a test can tell
what the engine removed from what the daemon removed.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import errno
import functools
import json
import os
import random
import shutil
import stat
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kvgroomd.format.header import (
    ABI_CURRENT,
    ABI_LEGACY,
    EXT_TOOL_MAP,
    PREFIX_BYTES,
    TOUCH_BYTES,
    Header,
    Reason,
    check_size,
    sha1_hex,
)
from kvgroomd.format.names import SnapshotName, classify

Variant = Literal["current", "legacy"]
Clock = Callable[[], float]

MiB = 1024 * 1024
KiB = 1024
HIT_HALF_LIFE_SECONDS = 6 * 3600  # DS4_KVSTORE_HIT_HALF_LIFE_SECONDS
MIN_EFFECTIVE_HITS = 0.01  # KV_CACHE_MIN_EFFECTIVE_HITS: below this, hits count as 0
ANCHOR_FACTOR = 2.0  # current engines: cold/evict/shutdown score x2
SUPERSEDED_MIN_FACTOR = 0.05  # current engines: continued prefix of the incoming file
SUPERSEDED_HIT_FACTOR = 0.45
DEFAULT_BUDGET_BYTES = 4096 * MiB
MIN_TOKENS = 512
COLD_MAX_TOKENS = 30000
CONTINUED_STEP = 10240  # 10000 rounded up to the 2048 alignment
BOUNDARY_TRIM = 32
BOUNDARY_ALIGN = 2048
PAYLOAD_MAGIC = b"DSV4"
_ANCHORS = (Reason.COLD, Reason.EVICT, Reason.SHUTDOWN)
_FILLER = b"ds4peer-payload\n"  # the fixtures' payload filler, for sparse=False


def size_model(tokens: int) -> int:
    """File size of a DeepSeek V4 Flash snapshot of `tokens` tokens (spec section 6)."""
    return int(22.9 * MiB + 13.45 * KiB * tokens)


def store_len(tokens: int) -> int:
    """The engine's cold length: trimmed by 32 tokens, aligned down to 2048."""
    if tokens > MIN_TOKENS + BOUNDARY_TRIM:
        stable = tokens - BOUNDARY_TRIM
        stable -= stable % BOUNDARY_ALIGN
        if stable >= MIN_TOKENS:
            return stable
    return tokens


def effective_hits(header: Header, now: int) -> float:
    """`hits * 2^(-(now - last_used) / 6h)`, 0 below 0.01, as the engine decays them."""
    used_at = header.last_used or header.created_at
    if used_at == 0:
        return 0.0
    h = float(header.hits)
    # Like the engine, only a past use decays (and only then is h clamped).
    if now > used_at:
        h *= 2.0 ** (-(now - used_at) / HIT_HALF_LIFE_SECONDS)
        if h < MIN_EFFECTIVE_HITS:
            h = 0.0
    return h


def eviction_score(
    header: Header,
    file_size: int,
    now: int,
    *,
    variant: Variant = "current",
    superseded: bool = False,
) -> float:
    """The engine's eviction score: the lowest goes first (spec section 3).

    `superseded` is whether the incoming file's text strictly extends this
    `continued` entry's text (only current engines look at it).
    """
    if file_size == 0:
        return 0.0
    h = effective_hits(header, now)
    score = (h + 1.0) * header.tokens / file_size
    if variant == "current":
        if header.reason in _ANCHORS:
            score *= ANCHOR_FACTOR
        if superseded:
            score *= SUPERSEDED_MIN_FACTOR + SUPERSEDED_HIT_FACTOR * (h / (h + 1.0))
    return score


class StoreSkippedError(Exception):
    """The engine refused to store: the file plus 1% slack exceeds the budget."""


@dataclass(frozen=True, slots=True)
class Entry:
    """A file the engine counts as a cache entry (valid under its variant)."""

    name: str
    sha: str  # lower-case, from the name
    path: Path
    header: Header
    size: int
    ino: int


@dataclass(frozen=True, slots=True)
class Incoming:
    """What current engines know about the file about to be stored."""

    text: bytes
    model_id: int = 0
    quant_bits: int = 2
    ctx_size: int = 32768


@dataclass(frozen=True, slots=True)
class Hit:
    """A lookup that loaded a snapshot."""

    name: str
    path: Path
    header: Header  # as read before the touch
    consumed: bool  # unlinked after loading (tokens > cold_max_tokens)

    @property
    def tokens(self) -> int:
        """Tokens the live session now holds."""
        return self.header.tokens


class Engine:
    """The snapshot store of one ds4-server process over `directory`."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        budget_bytes: int | None = None,
        variant: Variant = "current",
        clock: Clock = time.time,
        pid: int | None = None,
        sparse: bool = True,
        cold_max_tokens: int = COLD_MAX_TOKENS,
        min_tokens: int = MIN_TOKENS,
        reject_different_quant: bool = False,
        fsync: bool = False,
        journal: str | os.PathLike[str] | None = None,
        write_delay: float = 0.0,
        track_prefixes: bool | None = None,
    ) -> None:
        if variant not in ("current", "legacy"):
            raise ValueError(f"variant must be 'current' or 'legacy', not {variant!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)  # the engine's kv_mkdir_p
        self.budget_bytes = budget_bytes
        self.variant: Variant = variant
        self.clock = clock
        self.pid = os.getpid() if pid is None else pid
        self.sparse = sparse
        self.cold_max_tokens = cold_max_tokens
        self.min_tokens = min_tokens
        self.reject_different_quant = reject_different_quant
        self.fsync = fsync
        self.journal_path = Path(journal) if journal is not None else None
        self.write_delay = write_delay  # pause mid-write so in-flight temps are observable
        self.records: list[dict[str, Any]] = []  # the journal, also kept in memory
        # Texts of recent stores (and of the files found at start), so each
        # store record can say which known texts it strictly extends or is a
        # strict prefix of: a checker can then verify a supersession claim
        # without the texts. On by default when journaling to a file.
        tracking = self.journal_path is not None if track_prefixes is None else track_prefixes
        self.track_prefixes = tracking
        self._texts: collections.OrderedDict[str, bytes] = collections.OrderedDict()
        self.written: set[str] = set()  # names this engine stored: texts it can render
        self._text_bytes = 0
        if self.track_prefixes:
            for name in sorted(os.listdir(self.directory)):
                kind = classify(name)
                if not isinstance(kind, SnapshotName):
                    continue
                if (t := self.read_text(self.directory / name)) and sha1_hex(t) == kind.sha:
                    self._remember(kind.sha, t)

    # -- time and journal ---------------------------------------------------

    def now(self) -> int:
        """The engine's `time(NULL)`: whole seconds."""
        return int(self.clock())

    def _journal(self, op: str, name: str, **fields: Any) -> None:
        record: dict[str, Any] = {"op": op, "name": name, "time": self.clock()}
        record.update(fields)
        self.records.append(record)
        if self.journal_path is not None:
            # One append per line: several engines (or processes) may share a journal.
            with open(self.journal_path, "a", encoding="utf-8") as fp:
                fp.write(json.dumps(record, sort_keys=True) + "\n")

    def _journal_file(self, op: str, path: Path, header: Header,
                      st: os.stat_result | None = None, **fields: Any) -> None:  # fmt: skip
        """One record about a file; `st` is its fstat when the caller holds it
        open (a stat by path may already see the daemon's work)."""
        if st is None:
            try:
                st = path.stat()
            except FileNotFoundError:  # the daemon may already have removed it
                st = None
        self._journal(
            op, path.name, inode=st.st_ino if st else None, size=st.st_size if st else None,
            reason=header.reason.label, tokens=header.tokens, hits=header.hits, **fields,
        )  # fmt: skip

    # -- prefix relations (for checkers) ------------------------------------

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

    def _journal_store(self, path: Path, header: Header, text: bytes, st: os.stat_result,
                       *, over: int | None, at: float, tmp: str) -> None:  # fmt: skip
        """The store record: the new inode (fstat before the rename), the inode
        the rename replaced (None: the name was free), the time just before
        the rename, the header facts compatibility depends on, and the prefix
        relations with other known texts."""
        rel = self._relations(path.name[:40], text) if self.track_prefixes else {}
        self._journal_file(
            "store", path, header, st, tmp=tmp, over=over, at=at,
            text_bytes=header.text_bytes, ctx_size=header.ctx_size, model_id=header.model_id,
            quant_bits=header.quant_bits, abi=header.abi, **rel,
        )  # fmt: skip

    def _rename_into_place(self, tmp: Path, path: Path) -> tuple[int | None, float]:
        """rename(tmp, path); returns the inode the name held just before, and when."""
        try:
            over: int | None = os.lstat(path).st_ino
        except FileNotFoundError:
            over = None
        at = self.clock()
        os.rename(tmp, path)  # replaces any older file of that name
        return over, at

    # -- reading the directory the way the engine does ----------------------

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

    def read_header(self, path: Path) -> Header | None:
        """The header as this engine generation reads it, or None if it ignores the file."""
        raw = self._read_regular(path)
        return None if raw is None else self.parse_header(raw)

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

    def entry(self, name: str) -> Entry | None:
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
        """Every entry the engine counts, in name order.

        The engine scans in readdir order; name order makes ties reproducible.
        """
        found = []
        for name in sorted(os.listdir(self.directory)):
            if (e := self.entry(name)) is not None:
                found.append(e)
        return found

    def total_bytes(self) -> int:
        """What the engine believes the cache occupies: sizes of entries it counts."""
        return sum(e.size for e in self.entries())

    def read_text(self, path: Path) -> bytes | None:
        """The rendered text stored in a snapshot, or None when unreadable."""
        raw = self._read_regular(path, text=True)
        if raw is None or len(raw) < PREFIX_BYTES:
            return None
        (text_bytes,) = struct.unpack_from("<I", raw, 48)
        text = raw[PREFIX_BYTES:]
        return text if len(text) == text_bytes else None

    # -- eviction -----------------------------------------------------------

    def _supersedes(self, e: Entry, incoming: Incoming | None) -> bool:
        # kv_cache_incoming_supersedes_continued: spec section 3, current engines.
        if incoming is None or e.header.reason != Reason.CONTINUED:
            return False
        if not 0 < e.header.text_bytes < len(incoming.text):
            return False
        if e.header.model_id != incoming.model_id:
            return False
        if self.reject_different_quant and e.header.quant_bits != incoming.quant_bits:
            return False
        if incoming.ctx_size > e.header.ctx_size:
            return False
        return sha1_hex(incoming.text[: e.header.text_bytes]) == e.sha

    def score(self, e: Entry, now: int | None = None, incoming: Incoming | None = None) -> float:
        """`e`'s eviction score under this engine's variant."""
        now = self.now() if now is None else now
        return eviction_score(
            e.header, e.size, now, variant=self.variant,
            superseded=self.variant == "current" and self._supersedes(e, incoming),
        )  # fmt: skip

    def evict_to(
        self,
        budget: int,
        *,
        incoming: Incoming | None = None,
        protect: str | None = None,
        cause: str = "evict",
    ) -> list[str]:
        """ds4_kvstore_evict: unlink lowest-score entries until they total <= budget.

        Re-reads every header; invalid, temp and (current) other-ABI files are
        neither counted nor removed. `protect` is the legacy engines' just-stored
        name, spared unless it alone exceeds `budget`. Returns the names unlinked.
        """
        entries = self.entries()
        now = self.now()
        total = sum(e.size for e in entries)
        if protect is not None:
            mine = next((e for e in entries if e.name == protect), None)
            if mine is not None and mine.size > budget:
                protect = None
        scored = [
            (float("inf") if e.name == protect else self.score(e, now, incoming), e)
            for e in entries
        ]
        removed: list[str] = []
        while total > budget and scored:
            victim = 0
            for i in range(1, len(scored)):
                s, e = scored[i]
                vs, ve = scored[victim]
                # Ties go to the older raw last_used, as the engine compares it.
                if s < vs or (s == vs and e.header.last_used < ve.header.last_used):
                    victim = i
            s, e = scored.pop(victim)
            try:
                os.unlink(e.path)
            except FileNotFoundError:
                # The engine stops its pass when an unlink fails (total = 0).
                self._journal("evict_failed", e.name, reason=e.header.reason.label,
                              tokens=e.header.tokens, cause=cause)  # fmt: skip
                break
            total -= e.size
            removed.append(e.name)
            self._journal(
                "unlink", e.name, inode=e.ino, size=e.size, reason=e.header.reason.label,
                tokens=e.header.tokens, hits=e.header.hits, cause=cause, score=s,
            )  # fmt: skip
        return removed

    def startup(self) -> list[str]:
        """The eviction pass the engine runs when it opens the cache directory."""
        if self.budget_bytes is None:
            return []
        return self.evict_to(self.budget_bytes, cause="startup")

    # -- writing ------------------------------------------------------------

    def _header(
        self, text: bytes, tokens: int, reason: Reason, *, model_id: int,
        quant_bits: int, ctx_size: int, payload_bytes: int, ext_flags: int, now: int,
    ) -> Header:  # fmt: skip
        legacy = self.variant == "legacy"
        return Header(
            quant_bits=quant_bits, reason=reason, ext_flags=ext_flags,
            model_id=0 if legacy else model_id,  # older engines never wrote byte 7
            tokens=tokens, hits=0, ctx_size=ctx_size,
            abi=ABI_LEGACY if legacy else ABI_CURRENT,
            created_at=now, last_used=now, payload_bytes=payload_bytes,
            text_bytes=len(text),
        )  # fmt: skip

    def _payload_bytes(self, text: bytes, tokens: int, payload_bytes: int | None) -> int:
        if payload_bytes is not None:
            return payload_bytes
        if self.sparse:
            return max(size_model(tokens) - PREFIX_BYTES - len(text), 64)
        return 4096 + 8 * tokens  # the fixtures' small payload shape

    def _payload_head(self, header: Header) -> bytes:
        # 13 u32 like the fixtures' payload header: magic, payload version, shape.
        version = 1 if header.legacy else 2
        head = PAYLOAD_MAGIC + struct.pack(
            "<12I", version, header.tokens, header.ctx_size, header.quant_bits,
            header.model_id, 0, 0, 0, 0, 0, 0, 0,
        )  # fmt: skip
        return head[: header.payload_bytes]

    def _write_body(self, fd: int, header: Header, text: bytes, trailer: bytes,
                    *, stop_at: int | None = None) -> None:  # fmt: skip
        """Write header, text, payload and trailer to `fd`; stop early at `stop_at` bytes."""
        head = header.pack() + text + self._payload_head(header)
        end_payload = header.min_file_size
        final = end_payload + len(trailer)
        limit = final if stop_at is None else min(stop_at, final)
        # The header is the first thing written (spec section 3).
        os.pwrite(fd, head[:limit], 0)
        if self.write_delay:
            time.sleep(self.write_delay)
        if limit <= len(head):
            return
        if self.sparse:
            # A hole instead of 600 MiB of model state: same size, no disk.
            os.ftruncate(fd, min(limit, end_payload))
        else:
            pos = len(head)
            chunk = _FILLER * (1 << 12)
            while pos < min(limit, end_payload):
                n = min(len(chunk), min(limit, end_payload) - pos)
                os.pwrite(fd, chunk[:n], pos)
                pos += n
        if limit > end_payload:
            os.pwrite(fd, trailer[: limit - end_payload], end_payload)

    def _temp_path(self, sha: str, pid: int | None = None) -> Path:
        return self.directory / f"{sha}.kv.tmp.{self.pid if pid is None else pid}"

    def _existing_compatible(self, path: Path, text: bytes, *, model_id: int,
                             quant_bits: int, ctx_size: int) -> bool:  # fmt: skip
        """kv_cache_existing_compatible: reuse a matching file, unlink a mismatching one."""
        e = self.entry(path.name)
        if e is None:
            return False  # absent or invisible: the rename will replace it
        h = e.header
        compatible = (
            (self.variant == "legacy" or h.model_id == model_id)
            and (not self.reject_different_quant or h.quant_bits == quant_bits)
            and h.ctx_size <= ctx_size
            and self.read_text(path) == text
        )
        if not compatible:
            self._unlink(path, h, cause="replace")
        return compatible

    def _unlink(self, path: Path, header: Header, *, cause: str) -> bool:
        try:
            st = path.stat()
            os.unlink(path)
        except FileNotFoundError:
            return False
        self._journal(
            "unlink", path.name, inode=st.st_ino, size=st.st_size,
            reason=header.reason.label, tokens=header.tokens, hits=header.hits, cause=cause,
        )  # fmt: skip
        return True

    def _fits(self, file_bytes: int) -> bool:
        # ds4_kvstore_file_size_fits: the file plus 1% slack must fit the budget.
        if self.budget_bytes is None:
            return True
        slack = -(-file_bytes // 100)
        return file_bytes + slack <= self.budget_bytes

    def _write_new(
        self, text: bytes, tokens: int, reason: Reason, *, model_id: int,
        quant_bits: int, ctx_size: int, payload_bytes: int | None, trailer: bytes,
        ext_flags: int,
    ) -> Path:  # fmt: skip
        sha = sha1_hex(text)
        path = self.directory / f"{sha}.kv"
        payload = self._payload_bytes(text, tokens, payload_bytes)
        flags = ext_flags | (EXT_TOOL_MAP if trailer else 0)
        file_bytes = PREFIX_BYTES + len(text) + payload + len(trailer)
        if not self._fits(file_bytes):
            self._journal("skip", path.name, size=file_bytes, reason=reason.label, tokens=tokens)
            raise StoreSkippedError(f"{file_bytes} bytes (+1%) exceed budget {self.budget_bytes}")
        if self.variant == "current" and self.budget_bytes is not None:
            # Current engines make room *before* writing, knowing what comes.
            incoming = Incoming(text, model_id, quant_bits, ctx_size)
            self.evict_to(self.budget_bytes - file_bytes, incoming=incoming)
        header = self._header(
            text, tokens, reason, model_id=model_id, quant_bits=quant_bits,
            ctx_size=ctx_size, payload_bytes=payload, ext_flags=flags, now=self.now(),
        )  # fmt: skip
        tmp = self._temp_path(sha)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)  # fopen "wb"
        try:
            self._write_body(fd, header, text, trailer)
            if self.fsync:
                os.fsync(fd)
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)  # the engine removes its temp on a failed write
            raise
        os.close(fd)
        over, at = self._rename_into_place(tmp, path)
        self.written.add(path.name)
        self._journal_store(path, header, text, st, over=over, at=at, tmp=tmp.name)
        if self.variant == "legacy" and self.budget_bytes is not None:
            # Older engines evict after the rename, sparing the new file.
            self.evict_to(self.budget_bytes, protect=path.name)
        return path

    def store(
        self,
        text: bytes,
        tokens: int,
        reason: Reason,
        *,
        model_id: int = 0,
        quant_bits: int = 2,
        ctx_size: int = 32768,
        payload_bytes: int | None = None,
        trailer: bytes = b"",
        ext_flags: int = 0,
    ) -> Path:
        """Store a snapshot of `text` as the engine does; return its final path.

        An existing compatible file of that name is kept (only its trailer is
        rewritten when `trailer` is given, without eviction); an incompatible
        one is unlinked and rewritten. Raises StoreSkippedError when the file cannot
        fit the budget at all.
        """
        path = self.directory / f"{sha1_hex(text)}.kv"
        if self._existing_compatible(
            path, text, model_id=model_id, quant_bits=quant_bits, ctx_size=ctx_size
        ):
            if trailer:
                self.rewrite_trailer(path.name, trailer)
            else:
                self._journal("reuse", path.name, reason=reason.label, tokens=tokens)
            return path
        return self._write_new(
            text, tokens, reason, model_id=model_id, quant_bits=quant_bits,
            ctx_size=ctx_size, payload_bytes=payload_bytes, trailer=trailer,
            ext_flags=ext_flags,
        )  # fmt: skip

    @contextlib.contextmanager
    def in_flight(
        self, text: bytes, tokens: int, reason: Reason, *, payload_bytes: int | None = None,
        model_id: int = 0, quant_bits: int = 2, ctx_size: int = 32768,
    ) -> Iterator[Path]:  # fmt: skip
        """A store paused inside its payload write: yields the live temp path, renames on exit.

        No eviction runs; use it to test that a live writer's temp file is left alone.
        """
        sha = sha1_hex(text)
        payload = self._payload_bytes(text, tokens, payload_bytes)
        header = self._header(
            text, tokens, reason, model_id=model_id, quant_bits=quant_bits,
            ctx_size=ctx_size, payload_bytes=payload, ext_flags=0, now=self.now(),
        )  # fmt: skip
        tmp = self._temp_path(sha)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            self._write_body(fd, header, text, b"", stop_at=header.min_file_size // 2)
            yield tmp
            self._write_body(fd, header, text, b"")
            st = os.fstat(fd)
        finally:
            os.close(fd)
        path = self.directory / f"{sha}.kv"
        over, at = self._rename_into_place(tmp, path)
        self.written.add(path.name)
        self._journal_store(path, header, text, st, over=over, at=at, tmp=tmp.name)

    def crash(
        self,
        text: bytes,
        tokens: int,
        reason: Reason,
        *,
        pid: int | None = None,
        fraction: float = 0.5,
        payload_bytes: int | None = None,
        model_id: int = 0,
        quant_bits: int = 2,
        ctx_size: int = 32768,
    ) -> Path:
        """A store whose process died mid-write: leaves `<sha>.kv.tmp.<pid>` behind.

        `pid` names the dead writer (default: this engine's pid; see `dead_pid()`).
        Current engines had already run their eviction before the write began.
        """
        sha = sha1_hex(text)
        payload = self._payload_bytes(text, tokens, payload_bytes)
        file_bytes = PREFIX_BYTES + len(text) + payload
        if self.variant == "current" and self.budget_bytes is not None and self._fits(file_bytes):
            self.evict_to(self.budget_bytes - file_bytes,
                          incoming=Incoming(text, model_id, quant_bits, ctx_size))  # fmt: skip
        header = self._header(
            text, tokens, reason, model_id=model_id, quant_bits=quant_bits,
            ctx_size=ctx_size, payload_bytes=payload, ext_flags=0, now=self.now(),
        )  # fmt: skip
        tmp = self._temp_path(sha, pid)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            stop = max(PREFIX_BYTES, int(file_bytes * fraction))
            self._write_body(fd, header, text, b"", stop_at=stop)
        finally:
            os.close(fd)
        self._journal_file("crash", tmp, header)
        return tmp

    def replace(
        self,
        name: str,
        *,
        via: Literal["unlink", "rename"] = "unlink",
        reason: Reason | None = None,
        tokens: int | None = None,
        model_id: int | None = None,
        quant_bits: int | None = None,
        ctx_size: int | None = None,
        payload_bytes: int | None = None,
        trailer: bytes = b"",
    ) -> Path:
        """Rewrite `name` with the same text under a new inode.

        `via="unlink"` is the engine replacing an incompatible entry (unlink,
        then temp + rename); `via="rename"` renames the new file over the old
        one, as happens when the old file is invisible to the engine.
        Unspecified header fields are kept from the old file.
        """
        path = self.directory / name
        text = self.read_text(path)
        with open(path, "rb") as fp:
            old = Header.parse(fp.read(PREFIX_BYTES))
        if text is None or not isinstance(old, Header):
            raise ValueError(f"{name}: not a readable snapshot")
        if via == "unlink":
            self._unlink(path, old, cause="replace")
        return self._write_new(
            text,
            old.tokens if tokens is None else tokens,
            old.reason if reason is None else reason,
            model_id=old.model_id if model_id is None else model_id,
            quant_bits=old.quant_bits if quant_bits is None else quant_bits,
            ctx_size=old.ctx_size if ctx_size is None else ctx_size,
            payload_bytes=payload_bytes, trailer=trailer,
            ext_flags=old.ext_flags & ~EXT_TOOL_MAP,
        )  # fmt: skip

    # -- in-place updates ---------------------------------------------------

    def _rewrite_header(self, fd: int, header: Header) -> None:
        if self.variant == "legacy":
            # The 05-21 fill_header wrote zeros at bytes 7 and 20.
            header = dataclasses.replace(header, model_id=0, abi=ABI_LEGACY)
        os.pwrite(fd, header.pack()[:TOUCH_BYTES], 0)

    def touch(self, name: str) -> Header | None:
        """A disk hit: rewrite the first 48 bytes in place (hits + 1, last_used = now).

        Opens like fopen("r+b"): read-write, no truncation, same inode. Returns
        the header written, or None when the file is gone or not an entry.
        """
        path = self.directory / name
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            old = self.parse_header(os.pread(fd, PREFIX_BYTES, 0))
            if old is None:
                return None
            new = old.touched(self.now())
            self._rewrite_header(fd, new)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        self._journal_file("touch", path, new, st)
        return new

    def rewrite_trailer(self, name: str, trailer: bytes) -> Header | None:
        """Truncate after the payload, append `trailer`, then rewrite the header.

        As the engine does when a stored prefix already exists: ext bit 0 set,
        last_used = now, hits kept, inode unchanged.
        """
        path = self.directory / name
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            old = self.parse_header(os.pread(fd, PREFIX_BYTES, 0))
            if old is None:
                return None
            end = old.min_file_size
            os.ftruncate(fd, end)
            if not trailer:
                return old  # the engine rewrites the header only after a trailer
            os.pwrite(fd, trailer, end)
            new = dataclasses.replace(
                old, ext_flags=old.ext_flags | EXT_TOOL_MAP, last_used=self.now()
            )
            self._rewrite_header(fd, new)
            st = os.fstat(fd)
        finally:
            os.close(fd)
        self._journal_file("trailer", path, new, st, trailer_bytes=len(trailer))
        return new

    # -- lookups ------------------------------------------------------------

    def find(
        self, prompt: bytes, *, model_id: int = 0, quant_bits: int = 2, ctx_size: int = 32768
    ) -> Entry | None:
        """ds4_kvstore_find_text_prefix: the longest entry whose name is sha1 of a prompt prefix."""
        best: Entry | None = None
        for e in self.entries():
            h = e.header
            if h.text_bytes > len(prompt) or h.tokens < self.min_tokens:
                continue
            if h.ctx_size > ctx_size:
                continue
            if self.reject_different_quant and h.quant_bits != quant_bits:
                continue
            if self.variant == "current" and h.model_id != model_id:
                continue
            if best is not None:
                b = best.header
                if h.text_bytes < b.text_bytes:
                    continue
                if h.text_bytes == b.text_bytes and h.tokens <= b.tokens:
                    continue
            if sha1_hex(prompt[: h.text_bytes]) == e.sha:
                best = e
        return best

    def lookup(
        self, prompt: bytes, *, model_id: int = 0, quant_bits: int = 2, ctx_size: int = 32768
    ) -> Hit | None:
        """Serve `prompt` from disk: load the best prefix, then touch or consume it.

        The stored text is re-read and checked against its SHA-1 and the
        prompt; on a mismatch the load fails (no fallback), as in the engine.
        """
        e = self.find(prompt, model_id=model_id, quant_bits=quant_bits, ctx_size=ctx_size)
        if e is None:
            self._journal("miss", "", prompt_bytes=len(prompt))
            return None
        text = self.read_text(e.path)
        if text is None or sha1_hex(text) != e.sha or not prompt.startswith(text):
            self._journal("load_failed", e.name, reason=e.header.reason.label)
            return None
        self._journal("hit", e.name, inode=e.ino, size=e.size,
                      reason=e.header.reason.label, tokens=e.header.tokens)  # fmt: skip
        if self.cold_max_tokens > 0 and e.header.tokens > self.cold_max_tokens:
            # The live session now owns that state; the engine does not touch it first.
            self._unlink(e.path, e.header, cause="consume")
            return Hit(e.name, e.path, e.header, consumed=True)
        self.touch(e.name)
        return Hit(e.name, e.path, e.header, consumed=False)


# -- journal helpers ----------------------------------------------------------


def read_journal(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of a journal file, in order."""
    with open(path, encoding="utf-8") as fp:
        return [json.loads(line) for line in fp if line.strip()]


def engine_unlinked(records: Sequence[dict[str, Any]]) -> set[str]:
    """Names the engine itself unlinked (evicted, consumed or replaced)."""
    return {r["name"] for r in records if r["op"] == "unlink"}


def dead_pid() -> int:
    """The pid of a process that has exited, to name crash-left temp files."""
    exe = shutil.which("true") or sys.executable
    args = [exe] if exe != sys.executable else [exe, "-c", ""]
    proc = subprocess.Popen(args)
    proc.wait()
    return proc.pid


# -- rendered conversations ---------------------------------------------------

BOS = "<｜begin▁of▁sentence｜>".encode()
EOS = "<｜end▁of▁sentence｜>".encode()
USER = "<｜User｜>".encode()
ASSISTANT = "<｜Assistant｜>".encode()
THINK_END = b"</think>"
_DSML = "｜DSML｜"

_WORD_TEXT = (
    "the a to of and in is it for on we that this with as be by at or an if "
    "file cache disk key hit miss text token tokens prompt prefix budget size "
    "read write load store keep drop sort list test tests error fix bug patch "
    "code repo diff line lines path dir name hash sha run runs log logs time "
    "server client model chat turn user reply tool call calls args json data "
    "byte bytes page pages queue lock race free full half slow fast small big "
    "new old next last first each all any not can will should must may via "
    "parse parser header payload trailer python module class def return value"
)
_WORDS = _WORD_TEXT.split()
_TOOLS = ("ls", "read_file", "grep", "run_tests", "apply_patch", "web_search")


_PIECES = [(" " + w).encode() for w in _WORDS]
_CAPITALIZED = [(" " + w.capitalize()).encode() for w in _WORDS]
_MARKS = (b".", b".", b"?", b"!", b".\n\n")


def _word_pieces(rng: random.Random, n: int) -> list[bytes]:
    """`n` tokens of prose, one word or mark per token (about 4-5 bytes a token)."""
    # The hot loop of every workload: `seq[rng._randbelow(len(seq))]` is what
    # rng.choice(seq) does, so the texts are those of the plain version.
    out: list[bytes] = []
    append, rand, below = out.append, rng.random, rng._randbelow  # type: ignore[attr-defined]
    words = len(_WORDS)
    capital = True
    for _ in range(n):
        if not capital and rand() < 0.08:
            append(_MARKS[below(5)])
            capital = True
            continue
        i = below(words)
        append(_CAPITALIZED[i] if capital else _PIECES[i])
        capital = False
    return out


def system_prompt(seed: int = 0, tokens: int = 600) -> list[bytes]:
    """A client's fixed system prompt as token pieces (BOS included)."""
    return list(_system_prompt(seed, tokens))


@functools.lru_cache(maxsize=64)
def _system_prompt(seed: int, tokens: int) -> tuple[bytes, ...]:
    rng = random.Random(f"system-{seed}")
    return (BOS, b"You are a careful coding assistant.", *_word_pieces(rng, tokens - 2))


def _tool_call(rng: random.Random, call_id: str, *, sampled: bool) -> list[bytes]:
    tool = rng.choice(_TOOLS)
    arg = rng.choice(("src/", "src/cache.py", "tests/", "README.md", "kv budget"))
    # The model samples free spacing; the client re-renders canonically.
    sep = b"\n" if not sampled else rng.choice((b"\n", b" ", b"\n\n"))
    return [
        f"<{_DSML}tool_calls>".encode(), sep,
        f'<{_DSML}invoke name="{tool}">'.encode(), sep,
        f'<{_DSML}parameter name="path" string="true">'.encode(), arg.encode(),
        f"</{_DSML}parameter>".encode(), sep, f"</{_DSML}invoke>".encode(), sep,
        f"</{_DSML}tool_calls>".encode(), f"<!-- {call_id} -->".encode(),
    ]  # fmt: skip


class Conversation:
    """A rendered ds4 chat as token pieces (one piece = one token), from a seed.

    `pieces[:n]` joined is the text of an n-token snapshot, so every shorter
    snapshot's text is a byte prefix of a longer one of the same conversation.
    By default all conversations share one 600-token system prompt (the cold
    anchor), so texts of different seeds differ only past those 600 tokens.
    """

    def __init__(
        self,
        seed: int,
        *,
        system: Sequence[bytes] | None = None,
        tools: bool = False,
        prefix: Sequence[bytes] | None = None,
    ) -> None:
        self.rng = random.Random(f"conversation-{seed}")
        self.tools = tools
        base = prefix if prefix is not None else (system or system_prompt())
        self.pieces: list[bytes] = list(base)
        self.prompt_ends: list[int] = []  # token count where turn i's prompt ends
        self.turn_ends: list[int] = []  # token count after turn i's reply
        self.sampled: dict[int, list[bytes]] = {}  # turn -> reply the model sampled

    def __len__(self) -> int:
        return len(self.pieces)

    def text(self, tokens: int | None = None) -> bytes:
        """The rendered text of the first `tokens` tokens (all by default)."""
        return b"".join(self.pieces if tokens is None else self.pieces[:tokens])

    @property
    def anchor(self) -> int:
        """Tokens before the last user marker preceding the first assistant marker."""
        last_user = -1
        for i, p in enumerate(self.pieces):
            if p == ASSISTANT:
                break
            if p == USER:
                last_user = i
        return last_user

    def add_turn(self, user_tokens: int, reply_tokens: int) -> int:
        """Append a user turn and the assistant reply; return the turn index."""
        rng = self.rng
        self.pieces.append(USER)
        self.pieces += _word_pieces(rng, max(user_tokens - 3, 1))
        self.pieces += [ASSISTANT, THINK_END]
        self.prompt_ends.append(len(self.pieces))
        turn = len(self.prompt_ends) - 1
        if self.tools:
            call_id = f"call_{rng.getrandbits(64):016x}"
            prose = _word_pieces(rng, max(reply_tokens - 14, 1))
            canonical = prose + _tool_call(random.Random(call_id), call_id, sampled=False)
            # What the model sampled: same call, other id and spacing; the client
            # never sends these bytes back, so its evict save never matches.
            sampled_id = f"call_{rng.getrandbits(64):016x}"
            self.sampled[turn] = prose + _tool_call(
                random.Random(call_id), sampled_id, sampled=True
            )
            self.pieces += canonical
        else:
            self.pieces += _word_pieces(rng, max(reply_tokens - 1, 1))
        self.pieces.append(EOS)
        self.turn_ends.append(len(self.pieces))
        return turn

    def grow_to(self, tokens: int, *, turn_tokens: int = 4000) -> None:
        """Add turns until the conversation has at least `tokens` tokens."""
        while len(self.pieces) < tokens:
            need = tokens - len(self.pieces)
            user = max(min(turn_tokens, need // 2), 4)
            self.add_turn(user, max(need - user, 4))

    def prompt(self, turn: int) -> list[bytes]:
        """The pieces the client sends for `turn` (history + new user message)."""
        return self.pieces[: self.prompt_ends[turn]]

    def reply(self, turn: int) -> list[bytes]:
        """The reply pieces as the model generated them for `turn`."""
        if turn in self.sampled:
            return self.sampled[turn]
        return self.pieces[self.prompt_ends[turn] : self.turn_ends[turn]]

    def fork(self, seed: int, at: int) -> Conversation:
        """A new conversation sharing this one's first `at` tokens, then diverging."""
        return Conversation(seed, tools=self.tools, prefix=self.pieces[:at])


def conversation(seed: int, tokens: int, *, system: Sequence[bytes] | None = None,
                 tools: bool = False) -> Conversation:  # fmt: skip
    """A conversation of at least `tokens` tokens, deterministic from `seed`."""
    conv = Conversation(seed, system=system, tools=tools)
    conv.grow_to(tokens)
    return conv


def ladder(
    engine: Engine,
    total_tokens: int = 49022,
    step: int = CONTINUED_STEP,
    *,
    seed: int = 0,
    **store_kw: Any,
) -> list[Path]:
    """Spec section 4's example: continued at every `step`, then an evict of the whole.

    With the defaults: continued 10240, 20480, 30720, 40960, evict 49022; each
    text a strict byte prefix of the next. Returns the paths in store order.
    """
    conv = conversation(seed, total_tokens)
    paths = []
    for k in range(step, total_tokens, step):
        paths.append(engine.store(conv.text(k), k, Reason.CONTINUED, **store_kw))
    paths.append(engine.store(conv.text(total_tokens), total_tokens, Reason.EVICT, **store_kw))
    return paths


def ktm_trailer(rng: random.Random, entries: int = 2) -> bytes:
    """A tool-id map trailer shaped like the fixtures' (`KTM`, version, count, pairs)."""
    body = b""
    for _ in range(entries):
        call_id = f"call_{rng.getrandbits(64):016x}".encode()
        dsml = _tool_call(rng, call_id.decode(), sampled=False)
        block = b"".join(dsml[:-1])
        body += struct.pack("<II", len(call_id), len(block)) + call_id + block
    return b"KTM\x01" + struct.pack("<I", entries) + body


# -- the server's request flow ------------------------------------------------


class Server:
    """ds4-server's use of the store: one live session, saves at the spec's moments."""

    def __init__(self, engine: Engine, *, ctx_size: int = 32768, quant_bits: int = 2) -> None:
        self.engine = engine
        self.live: list[bytes] | None = None  # token pieces of the live session
        self.continued_last = 0  # continued_last_store_tokens
        self.stats: Counter[str] = Counter()
        # The server's --ctx and quantization: they may change across restarts.
        self.ctx_size = ctx_size
        self.quant_bits = quant_bits

    def _store(self, pieces: Sequence[bytes], tokens: int, reason: Reason, **kw: Any) -> None:
        kw.setdefault("ctx_size", self.ctx_size)
        kw.setdefault("quant_bits", self.quant_bits)
        try:
            self.engine.store(b"".join(pieces[:tokens]), tokens, reason, **kw)
            self.stats[f"store_{reason.label}"] += 1
        except StoreSkippedError:
            self.stats["skipped"] += 1

    def _frontiers(self, pieces: Sequence[bytes], start: int, end: int) -> None:
        # Continued checkpoints at every 10240 from absolute 0, past the last store.
        first = (max(start, self.continued_last) // CONTINUED_STEP + 1) * CONTINUED_STEP
        for f in range(first, end + 1, CONTINUED_STEP):
            self._store(pieces, f, Reason.CONTINUED)
            self.continued_last = f

    def save_live(self, reason: Reason) -> None:
        """Save the whole live session (`evict` or `shutdown`), if long enough."""
        if self.live is not None and len(self.live) >= self.engine.min_tokens:
            self._store(self.live, len(self.live), reason)
        self.live = None
        self.continued_last = 0

    def request(self, conv: Conversation, turn: int) -> Hit | None:
        """Serve `conv`'s turn: reuse the live session or disk, prefill, generate."""
        prompt = conv.prompt(turn)
        n = len(prompt)
        hit: Hit | None = None
        if self.live is not None and prompt[: len(self.live)] == self.live:
            reused = len(self.live)  # continues in memory, no disk lookup
        else:
            self.save_live(Reason.EVICT)  # an unrelated request replaces the live session
            hit = self.engine.lookup(b"".join(prompt), ctx_size=self.ctx_size,
                                     quant_bits=self.quant_bits)  # fmt: skip
            reused = hit.tokens if hit else 0
            self.continued_last = reused
            self.stats["hit" if hit else "miss"] += 1
            if hit and hit.consumed:
                self.stats["consumed"] += 1
            if hit is None and self.engine.min_tokens <= n <= self.engine.cold_max_tokens:
                # Cold: at the chat anchor when it is long enough, else trimmed + aligned.
                anchor = conv.anchor
                cold_at = anchor if anchor >= self.engine.min_tokens else store_len(n)
                self._frontiers(prompt, 0, cold_at - 1)  # prefill passes those first
                self._store(prompt, cold_at, Reason.COLD)
        self._frontiers(prompt, reused, n)
        live = list(prompt) + conv.reply(turn)
        self._frontiers(live, n, len(live))
        self.live = live
        return hit


# -- a directory of many snapshots, fast -------------------------------------


def populate(
    directory: str | os.PathLike[str],
    n: int,
    seed: int = 0,
    *,
    now: int | None = None,
    abi: int = ABI_CURRENT,
    model_id: int = 0,
    max_text_bytes: int = 2048,
    chain_fraction: float = 0.4,
    span_seconds: int = 7 * 86400,
    legacy_fraction: float = 0.0,
) -> list[Path]:
    """Write `n` sparse snapshots straight into `directory` (no temp, no rename).

    Varied reasons, tokens (512..120k, sized by `size_model`), hits and times;
    about `chain_fraction` of them in prefix chains of `continued` rungs ended
    by an evict/cold/continued. Texts are capped at `max_text_bytes` (so text and
    tokens do not correspond, as with responses-visible keys) to keep 100,000
    files cheap. `legacy_fraction` of them get ABI 0. mtime = last_used.
    """
    rng = random.Random(f"populate-{seed}")
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    now = int(time.time()) if now is None else now
    # One ASCII corpus to slice from: texts cost a slice, not a generator run.
    corpus = b"".join(_word_pieces(random.Random(f"corpus-{seed}"), 16 * max_text_bytes))
    system = b"".join(system_prompt(seed, 64))
    paths: list[Path] = []
    group = 0
    while len(paths) < n:
        group += 1
        rungs = 1
        if rng.random() < chain_fraction:
            rungs = min(rng.randint(2, 5), n - len(paths))
        lead = system + USER + f" ticket {seed}-{group}:".encode()
        body = corpus[rng.randrange(len(corpus) // 2) :]
        if rungs > 1:
            top = rungs * CONTINUED_STEP + rng.randrange(CONTINUED_STEP)
            counts = [k * CONTINUED_STEP for k in range(1, rungs)] + [top]
            reasons = [Reason.CONTINUED] * (rungs - 1) + [
                rng.choice((Reason.EVICT, Reason.EVICT, Reason.CONTINUED, Reason.SHUTDOWN))
            ]
        else:
            counts = [int(min(120_000, MIN_TOKENS + rng.expovariate(1 / 12_000)))]
            reasons = [rng.choices(
                (Reason.COLD, Reason.CONTINUED, Reason.EVICT, Reason.SHUTDOWN, Reason.UNKNOWN),
                weights=(30, 30, 30, 6, 1),
            )[0]]  # fmt: skip
        room = max(max_text_bytes - len(lead), 64)
        for rank, (tokens, reason) in enumerate(zip(counts, reasons, strict=True)):
            # Longer rungs get strictly longer texts: each a prefix of the next.
            frac = tokens / 120_000
            length = len(lead) + min(room - rungs + rank, int(room * frac) + rank + 16)
            text = lead + body[: length - len(lead)]
            created = now - rng.randrange(span_seconds)
            hits = 0 if rng.random() < 0.6 else min(int(rng.expovariate(1 / 4)) + 1, 200)
            last_used = created + rng.randrange(max(now - created, 1)) if hits else created
            file_abi = ABI_LEGACY if rng.random() < legacy_fraction else abi
            file_size = size_model(tokens)
            header = Header(
                quant_bits=2, reason=reason, ext_flags=0,
                model_id=0 if file_abi == ABI_LEGACY else model_id, tokens=tokens,
                hits=hits, ctx_size=rng.choice((32768, 65536, 131072)), abi=file_abi,
                created_at=created, last_used=last_used,
                payload_bytes=file_size - PREFIX_BYTES - len(text), text_bytes=len(text),
            )  # fmt: skip
            path = out_dir / f"{sha1_hex(text)}.kv"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, header.pack() + text + PAYLOAD_MAGIC + struct.pack("<I", 2))
                os.ftruncate(fd, file_size)
            finally:
                os.close(fd)
            os.utime(path, (last_used, last_used))
            paths.append(path)
    return paths


# -- a seeded random workload (the CLI) ---------------------------------------

_OPS = {
    "new": 3.0,  # an unrelated conversation (evicts the live one)
    "continue": 4.0,  # the live conversation's next turn
    "resume": 2.0,  # an older conversation's next turn: disk hit, maybe consume
    "repeat": 2.0,  # the same prompt again (regenerate): a touch
    "branch": 1.5,  # shares a prefix with an older conversation, then diverges
    "tool": 1.5,  # a tool-calling session: its evict saves never match
    "ladder": 0.7,  # a huge paste: nested continued rungs
    "trailer": 0.5,  # a stored prefix again, with a fresh tool-id map
    "replace": 0.5,  # same-name replacement, new inode
    "crash": 0.3,  # a store cut short by a crash, then a restart
    "shutdown": 0.3,  # a clean exit saving the live session, then a restart
}


class Workload:
    """A seeded mix of realistic ds4 request shapes, driven through a `Server`."""

    def __init__(self, engine: Engine, seed: int) -> None:
        self.engine = engine
        self.seed = seed
        self.rng = random.Random(f"workload-{seed}")
        self.server = Server(engine)
        # A few clients, each with its own fixed system prompt (cold anchors).
        self.systems = [system_prompt(seed * 10 + i, t) for i, t in enumerate((700, 1400, 5343))]
        self.convs: list[tuple[Conversation, int]] = []  # (conversation, turns served)
        self.live_idx: int | None = None
        self.counts: Counter[str] = Counter()
        self._dead_pid: int | None = None
        self._step = 0

    def run(self, ops: int, *, seconds: float | None = None, delay: float = 0.0) -> Counter[str]:
        """At most `ops` operations and at most `seconds`; returns what was done."""
        deadline = None if seconds is None else time.monotonic() + seconds
        names = list(_OPS)
        weights = [_OPS[k] for k in names]
        for _ in range(ops):
            if deadline is not None and time.monotonic() >= deadline:
                break
            self.step(self.rng.choices(names, weights)[0])
            if delay:
                time.sleep(delay)
        counts = self.counts + self.server.stats
        counts["ops"] = sum(self.counts[k] for k in _OPS)
        return counts

    def step(self, op: str) -> None:
        """Run one operation named in `_OPS` (`new` when it needs history and there is none)."""
        if op not in ("new", "ladder", "tool", "crash", "shutdown") and not self.convs:
            op = "new"
        self.counts[op] += 1
        self._step += 1
        getattr(self, f"op_{op}")()

    def _conv(self, *, tools: bool = False) -> Conversation:
        cseed = self.seed * 1_000_003 + self._step
        return Conversation(cseed, system=self.rng.choice(self.systems), tools=tools)

    def _start(self, conv: Conversation, user_tokens: int) -> None:
        conv.add_turn(user_tokens, self.rng.randint(50, 2500))
        self.server.request(conv, 0)
        self.convs.append((conv, 1))
        self.live_idx = len(self.convs) - 1

    def _next_turn(self, idx: int) -> None:
        conv, served = self.convs[idx]
        if served >= len(conv.prompt_ends):
            conv.add_turn(self.rng.randint(20, 3000), self.rng.randint(50, 2500))
        self.server.request(conv, served)
        self.convs[idx] = (conv, served + 1)
        self.live_idx = idx

    def op_new(self) -> None:
        """An unrelated conversation: the live one is saved as `evict`."""
        self._start(self._conv(), self.rng.randint(100, 6000))

    def op_ladder(self) -> None:
        """A huge first message: nested continued rungs every 10240 tokens."""
        self._start(self._conv(), self.rng.randint(20_000, 60_000))

    def op_tool(self) -> None:
        """A tool-calling session: sampled replies never come back byte-exact."""
        self._start(self._conv(tools=True), self.rng.randint(300, 4000))

    def op_continue(self) -> None:
        """The live conversation's next turn (in memory, new frontiers)."""
        idx = self.live_idx if self.live_idx is not None else self.rng.randrange(len(self.convs))
        self._next_turn(idx)

    def op_resume(self) -> None:
        """An older conversation's next turn: a disk hit, consumed when > 30000 tokens."""
        self._next_turn(self.rng.randrange(len(self.convs)))

    def op_repeat(self) -> None:
        """The same prompt again (a regenerate): a hit, so a touch."""
        idx = self.rng.randrange(len(self.convs))
        conv, served = self.convs[idx]
        self.server.request(conv, served - 1)
        self.live_idx = idx

    def op_branch(self) -> None:
        """A new conversation sharing an older one's first turns, then diverging."""
        conv, served = self.rng.choice(self.convs)
        at = conv.turn_ends[self.rng.randrange(served)]
        self._start(conv.fork(self.seed * 1_000_003 + self._step, at), self.rng.randint(100, 4000))

    def op_trailer(self) -> None:
        """A stored prefix stored again with a fresh tool-id map trailer."""
        conv, served = self.rng.choice(self.convs)
        prompt = conv.prompt(served - 1)
        n = store_len(len(prompt))
        if n >= self.engine.min_tokens:
            try:
                self.engine.store(b"".join(prompt[:n]), n, Reason.CONTINUED,
                                  trailer=ktm_trailer(self.rng))  # fmt: skip
            except StoreSkippedError:
                self.counts["skipped"] += 1

    def op_replace(self) -> None:
        """Same-name replacement: new inode (other ctx_size), by unlink or rename.

        Only of a file this server stored: it can only render its own texts
        again (another tool's file of a valid format is never replaced)."""
        existing = [e for e in self.engine.entries() if e.name in self.engine.written]
        if existing:
            victim = self.rng.choice(existing)
            # The file may vanish under us (the daemon, or our own eviction).
            with contextlib.suppress(FileNotFoundError, ValueError, StoreSkippedError):
                self.engine.replace(victim.name, via=self.rng.choice(("unlink", "rename")),
                                    ctx_size=self.rng.choice((16384, 32768)))  # fmt: skip

    def op_crash(self) -> None:
        """A store cut short by a crash (temp file left), then a restart."""
        if self._dead_pid is None:
            self._dead_pid = dead_pid()
        conv = self._conv()
        conv.add_turn(self.rng.randint(600, 8000), 100)
        n = len(conv.prompt(0))
        self.engine.crash(conv.text(n), n, Reason.COLD, pid=self._dead_pid,
                          fraction=self.rng.random())  # fmt: skip
        self.server.live, self.server.continued_last = None, 0  # the live state died
        self._restart()

    def op_shutdown(self) -> None:
        """A clean exit saving the live session as `shutdown`, then a restart."""
        self.server.save_live(Reason.SHUTDOWN)
        self._restart()

    def _restart(self) -> None:
        """The server comes back, maybe with another context size or quantization
        (so older files may be ones the new files cannot stand in for)."""
        self.server.ctx_size = self.rng.choice((16384, 32768, 32768, 65536))
        self.server.quant_bits = self.rng.choice((2, 2, 4))
        self.engine.startup()


def run_workload(
    engine: Engine,
    seed: int,
    ops: int,
    *,
    seconds: float | None = None,
    delay: float = 0.0,
) -> Counter[str]:
    """Run at most `ops` random operations (and at most `seconds`); return counts."""
    return Workload(engine, seed).run(ops, seconds=seconds, delay=delay)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m kvgroomd.testing.engine`: a seeded, bounded ds4 workload on a directory."""
    p = argparse.ArgumentParser(
        prog="python -m kvgroomd.testing.engine",
        description="Emulate ds4-server writing its disk KV cache into DIR.",
    )
    p.add_argument("--dir", required=True, type=Path, help="the cache directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ops", type=int, required=True, help="stop after this many operations")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")
    p.add_argument("--budget", type=int, default=None, help="engine budget in bytes")
    p.add_argument("--variant", choices=("current", "legacy"), default="current")
    p.add_argument("--journal", type=Path, default=None, help="append JSON lines here")
    p.add_argument("--delay-ms", type=float, default=0.0, help="pause between operations")
    p.add_argument("--write-delay-ms", type=float, default=0.0,
                   help="pause inside each file write (in-flight temp files)")  # fmt: skip
    p.add_argument("--dense", action="store_true", help="write real payload bytes (small)")
    args = p.parse_args(argv)
    engine = Engine(
        args.dir, budget_bytes=args.budget, variant=args.variant, sparse=not args.dense,
        journal=args.journal, write_delay=args.write_delay_ms / 1000.0,
    )  # fmt: skip
    engine.startup()
    try:
        counts = run_workload(
            engine, args.seed, args.ops, seconds=args.seconds, delay=args.delay_ms / 1000.0
        )
    except OSError as exc:  # e.g. the disk filled up: report, do not hang
        print(f"engine emulator: {exc}", file=sys.stderr)
        return 1 if exc.errno != errno.ENOSPC else 2
    print(json.dumps(dict(sorted(counts.items()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
