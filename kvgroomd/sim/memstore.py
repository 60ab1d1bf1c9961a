"""The simulator's cache directory: the engine model's in-memory `Storage`.

Pure. Files are index rows (header, identity) plus their texts for the
engine's lookups. kvgroomd's side of a replay keeps its own index, as the
daemon does, and hears every change through `watcher`. Deletions are
counted by cause, and bytes of files removed without ever serving a hit are
summed.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import replace
from typing import Any, Protocol

import numpy as np

from kvgroomd.core.decision import Fingerprint
from kvgroomd.core.index import Index, Snapshot, head_key
from kvgroomd.format.header import Header
from kvgroomd.sim.storage import KeyText, Listing


class Watcher(Protocol):
    """Hears the directory's changes (sim/groom.SimGroomer)."""

    def landed(self, name: str, now: float) -> None:
        """A file was renamed into place or rewritten in place."""

    def gone(self, name: str, now: float) -> None:
        """A file left."""

# Deletion causes as reports count them: kvgroomd's own (decision.Cause
# values) and the engine's.
CONSUMED = "consumed"  # a hit over cold_max_tokens
ENGINE_EVICTED = "engine"  # the engine's budget eviction
_CAUSES = {"evict": ENGINE_EVICTED, "startup": ENGINE_EVICTED, "consume": CONSUMED,
           "replace": "replaced"}  # fmt: skip


class MemStore:
    """The cache directory as both the engine and kvgroomd see it."""

    def __init__(self) -> None:
        self.index = Index()
        self.texts: dict[str, KeyText] = {}
        self.by_bucket: dict[int, set[str]] = {}
        self.inodes = itertools.count(1)
        self.bytes_written = 0
        self.bytes_deleted_unhit = 0
        self.deleted: Counter[str] = Counter()
        self.peak = 0
        self._listing: Listing | None = None
        # Optional trace for tests and debugging: (event, name, detail...).
        self.trace: list[tuple[Any, ...]] | None = None
        # Who hears what happens to the directory: kvgroomd, as inotify tells
        # the daemon (a file landed or was rewritten in place, a file left).
        self.watcher: Watcher | None = None

    def __contains__(self, name: str) -> bool:
        return name in self.texts

    def tokens(self, name: str) -> int:
        """Tokens of `name`'s snapshot."""
        snap = self.index.get(name)
        assert snap is not None
        return snap.header.tokens

    # -- Storage -------------------------------------------------------------------

    def listing(self) -> Listing:
        """Every file (the engine counts them all: one format per run)."""
        if self._listing is None:
            cols = self.index.columns()
            names = self.index.names
            order = np.argsort(np.array(names)) if names else np.zeros(0, dtype=np.intp)

            def col(f: str) -> Any:
                return cols[f][order].astype(np.int64)

            self._listing = Listing(
                [names[int(i)] for i in order], col("tokens"), col("hits"), col("size"),
                col("created_at"), col("last_used"), col("reason"), col("text_bytes"),
                col("model_id"), col("quant_bits"), col("ctx_size"),
            )  # fmt: skip
        return self._listing

    def entry(self, name: str) -> tuple[Header, int] | None:
        """`name`'s header and size."""
        snap = self.index.get(name)
        return None if snap is None else (snap.header, snap.size)

    def extends(self, name: str, text: KeyText) -> bool:
        """`name`'s text is a prefix of `text`."""
        mine = self.texts[name]
        return mine.bucket() == text.bucket() and text.startswith(mine)

    def same_text(self, name: str, text: KeyText) -> bool:
        """Same name, same text (SHA-1 names)."""
        return name in self.texts

    def load(self, name: str, prompt: KeyText) -> bool:
        """Loading never fails in memory."""
        return True

    def write(self, name: str, header: Header, text: KeyText, trailer: bytes,
              now: float) -> None:  # fmt: skip
        """The engine renamed a finished file into place."""
        size = header.min_file_size + len(trailer)
        seen = Fingerprint(1, next(self.inodes), size, int(now * 1e9))
        raw = text.render()
        self.index.put(Snapshot(name, name[:40], header, seen, head_key(raw[:64], len(raw))))
        self.texts[name] = text
        self.by_bucket.setdefault(text.bucket(), set()).add(name)
        self.bytes_written += size
        self.peak = max(self.peak, self.index.total_bytes)
        self._listing = None
        if self.trace is not None:
            self.trace.append(("store", name, now, header.reason.label, header.tokens, size))
        if self.watcher is not None:
            self.watcher.landed(name, now)

    def touch(self, name: str, header: Header, now: float) -> None:
        """A disk hit: the engine rewrites hits and last_used in place."""
        snap = self.index.get(name)
        assert snap is not None
        seen = replace(snap.seen, mtime_ns=int(now * 1e9))
        self.index.put(replace(snap, header=header, seen=seen))
        self._listing = None
        if self.watcher is not None:
            self.watcher.landed(name, now)

    def rewrite_trailer(self, name: str, header: Header, trailer: bytes, now: float) -> None:
        """A new trailer: the size changes, the header is rewritten."""
        snap = self.index.get(name)
        assert snap is not None
        seen = replace(snap.seen, size=header.min_file_size + len(trailer),
                       mtime_ns=int(now * 1e9))  # fmt: skip
        self.index.put(replace(snap, header=header, seen=seen))
        self._listing = None
        if self.watcher is not None:
            self.watcher.landed(name, now)

    def delete(self, name: str, cause: str, now: float, **fields: object) -> bool:
        """Remove `name`; `cause` says who did it and why."""
        snap = self.index.pop(name)
        if snap is None:
            return False
        cause = _CAUSES.get(cause, cause)
        text = self.texts.pop(name)
        self.by_bucket[text.bucket()].discard(name)
        self.deleted[cause] += 1
        self._listing = None
        if self.trace is not None:
            h = snap.header
            self.trace.append(("delete", name, cause, h.reason.label, h.tokens, h.hits))
        if snap.header.hits == 0 and cause != CONSUMED:  # consumed: loaded once, not touched
            self.bytes_deleted_unhit += snap.size
        if self.watcher is not None:
            self.watcher.gone(name, now)
        return True

    def raw(self, name: str) -> bytes:
        """The rendered text of `name` (what SHA-1 and prefixes see)."""
        return self.texts[name].render()

    def remove(self, name: str, cause: str, now: float) -> None:
        """kvgroomd unlinks `name` (sim/groom.py's Disk)."""
        self.delete(name, cause, now)

    def note(self, op: str, name: str, now: float, **fields: object) -> None:
        """Hits go to the trace (a consumed file is never touched)."""
        if op == "hit" and self.trace is not None:
            self.trace.append(("hit", name, now, fields["reason"], fields["tokens"]))
