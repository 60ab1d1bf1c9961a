"""The engine model: ds4-server's disk KV-cache store (spec §3), written once.

Pure (numpy, no I/O): the store path (the 1% fit rule, a same-name file kept
or replaced, eviction before the write in current engines and after the rename,
sparing the new file, in older ones), touches, lookups by the longest
compatible byte prefix, consume over `cold_max_tokens`, and the engine's own
eviction with the one copy of its score (`scoring.engine_scores`). What the
files *are* lives behind `Storage`: an in-memory directory for the simulator
(`kvgroomd.sim.memstore`) or a real one for the emulator process
(`kvgroomd.testing.dirstore`). When the server stores what is in
`kvgroomd.sim.server`.

Every method takes `now` (the engine's `time(NULL)`); nothing reads a clock.
With `log`, the engine's own log lines (spec §5) are produced as it would.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Literal

import numpy as np
import numpy.typing as npt

from kvgroomd.core.scoring import engine_scores
from kvgroomd.format.engine import EngineOptions
from kvgroomd.format.header import (
    ABI_CURRENT,
    ABI_LEGACY,
    EXT_TOOL_MAP,
    PREFIX_BYTES,
    Header,
    Reason,
    sha1_hex,
)
from kvgroomd.sim.storage import KeyText, Listing, Storage

Variant = Literal["current", "legacy"]
MiB = 1 << 20
KiB = 1 << 10


@dataclass(frozen=True, slots=True)
class EngineParams:
    """ds4-server's cache settings (spec §3) and the size and speed model."""

    budget: int = 4096 * MiB  # --kv-disk-space-mb
    min_tokens: int = 512
    cold_max_tokens: int = 30000
    continued_interval: int = 10000
    boundary_trim: int = 32
    boundary_align: int = 2048
    ctx_size: int = 262144
    quant_bits: int = 2
    # Spec §6: ~22.9 MiB + 13.45 KiB per token for DeepSeek V4 Flash.
    size_base: int = int(22.9 * MiB)
    size_per_token: float = 13.45 * KiB
    # A compressing engine (format/engine.py): every snapshot this many times
    # smaller, so the same budget holds that many times more of them.
    compression: bool = False
    compression_ratio: float = 2.5
    # Only for timestamps within a request (when each store lands).
    prefill_tps: float = 350.0
    decode_tps: float = 20.0

    @property
    def options(self) -> EngineOptions:
        """These settings as the engine's options (format/engine.py)."""
        return _options(self)

    @property
    def continued_step(self) -> int:
        """Continued checkpoints land at multiples of this (10240 by default)."""
        return self.options.continued_step

    def store_len(self, tokens: int) -> int:
        """The engine's cold length without an anchor: trimmed, aligned down."""
        return self.options.store_len(tokens)

    def size(self, tokens: int) -> int:
        """Bytes of a snapshot of `tokens` tokens."""
        return self.options.size(tokens)


@functools.lru_cache(maxsize=64)
def _options(p: EngineParams) -> EngineOptions:
    return EngineOptions(
        min_tokens=p.min_tokens, cold_max_tokens=p.cold_max_tokens,
        continued_interval=p.continued_interval, boundary_trim=p.boundary_trim,
        boundary_align=p.boundary_align, snapshot_overhead=p.size_base,
        token_bytes=p.size_per_token, compression=p.compression,
        compression_ratio=p.compression_ratio,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Incoming:
    """What current engines know about the file about to be stored."""

    text: KeyText
    model_id: int = 0
    quant_bits: int = 2
    ctx_size: int = 32768


class Stored(Enum):
    """What `EngineModel.store` did."""

    WRITTEN = "written"
    REUSED = "reused"  # a compatible file of that name exists (trailer maybe rewritten)
    SKIPPED = "skipped"  # the file plus 1% exceeds the budget, or under min_tokens


@dataclass(frozen=True, slots=True)
class Hit:
    """A lookup that loaded a snapshot."""

    name: str
    header: Header  # as read before the touch
    consumed: bool  # unlinked after loading (tokens > cold_max_tokens)

    @property
    def tokens(self) -> int:
        """Tokens the live session now holds."""
        return self.header.tokens


@dataclass
class EngineModel:
    """One engine's store over `storage` (spec §3)."""

    storage: Storage
    params: EngineParams = field(default_factory=EngineParams)
    budget: int | None = None  # bytes; None: no budget (no eviction, every store fits)
    variant: Variant = "current"
    reject_different_quant: bool = False
    on_store: Callable[[str, bytes, float], None] | None = None  # (name, text, now) after a write
    log: Callable[[str], None] | None = None  # the engine's log lines (spec §5)
    directory: str = ""  # named in the log lines' file= fields

    def __post_init__(self) -> None:
        if self.variant not in ("current", "legacy"):
            raise ValueError(f"variant must be 'current' or 'legacy', not {self.variant!r}")

    @property
    def current(self) -> bool:
        """An engine since 2026-05-26 (evicts before writing, x2 anchors, demotes)."""
        return self.variant == "current"

    # -- the engine's eviction -------------------------------------------------

    def fits(self, file_bytes: int) -> bool:
        """ds4_kvstore_file_size_fits: the file plus 1% slack must fit the budget."""
        return self.budget is None or file_bytes + -(-file_bytes // 100) <= self.budget

    def supersedes(self, listing: Listing, i: int, incoming: Incoming) -> bool:
        """The incoming file strictly extends `continued` entry `i`, which it can
        stand in for (kv_cache_incoming_supersedes_continued)."""
        return (
            int(listing.reason[i]) == Reason.CONTINUED
            and 0 < int(listing.text_bytes[i]) < incoming.text.nbytes
            and int(listing.model_id[i]) == incoming.model_id
            and (not self.reject_different_quant
                 or int(listing.quant_bits[i]) == incoming.quant_bits)
            and incoming.ctx_size <= int(listing.ctx_size[i])
            and self.storage.extends(listing.names[i], incoming.text)
        )  # fmt: skip

    def scores(self, listing: Listing, now: float, incoming: Incoming | None = None,
               protect: str | None = None) -> npt.NDArray[np.float64]:  # fmt: skip
        """Every entry's eviction score (+inf for the protected new file)."""
        superseded = None
        if self.current and incoming is not None:
            superseded = np.zeros(len(listing.names), dtype=bool)
            for i in np.flatnonzero(listing.reason == int(Reason.CONTINUED)):
                superseded[i] = self.supersedes(listing, int(i), incoming)
        score = engine_scores(listing.hits, listing.last_used, listing.created_at,
                              listing.tokens, listing.size, listing.reason, now,
                              current=self.current, superseded=superseded)  # fmt: skip
        if protect is not None and protect in listing.names:
            score[listing.names.index(protect)] = np.inf
        return score

    def evict_to(self, target: int, now: float, *, incoming: Incoming | None = None,
                 protect: str | None = None, cause: str = "evict") -> list[str]:  # fmt: skip
        """ds4_kvstore_evict: unlink the lowest scores until the entries total
        at most `target`. Ties go to the older raw last_used, then scan order.
        `protect` (older engines: the file just stored) is spared unless it
        alone exceeds `target`. A failed unlink ends the pass. Returns the
        names unlinked."""
        listing = self.storage.listing()
        total = listing.total
        if total <= target or not listing.names:
            return []
        if (protect is not None and protect in listing.names
                and int(listing.size[listing.names.index(protect)]) > target):
            protect = None  # a file that alone exceeds the target loses its protection
        score = self.scores(listing, now, incoming, protect)
        order = np.lexsort((np.arange(len(score)), listing.last_used, score))
        removed: list[str] = []
        for i in order:
            if total <= target:
                break
            name = listing.names[int(i)]
            if not self.storage.delete(name, cause, now, score=float(score[int(i)])):
                self.storage.note("evict_failed", name, now, cause=cause)
                break
            total -= int(listing.size[int(i)])
            removed.append(name)
            self._log(f"kv cache evicted reason=disk-cache-full tokens={listing.tokens[i]} "
                      f"hits={listing.hits[i]} size={listing.size[i] / MiB:.2f} MiB "
                      f"file={self._path(name)}")  # fmt: skip
        return removed

    def startup(self, now: float) -> list[str]:
        """The eviction pass when the engine opens the directory."""
        return [] if self.budget is None else self.evict_to(self.budget, now, cause="startup")

    # -- storing ----------------------------------------------------------------

    def header(self, text: KeyText, tokens: int, reason: Reason, now: float, *,
               model_id: int = 0, quant_bits: int | None = None, ctx_size: int | None = None,
               payload_bytes: int | None = None, ext_flags: int = 0) -> Header:  # fmt: skip
        """The header this engine writes for a new snapshot."""
        legacy = not self.current
        payload = (max(self.params.size(tokens) - PREFIX_BYTES - text.nbytes, 64)
                   if payload_bytes is None else payload_bytes)  # fmt: skip
        return Header(
            quant_bits=self.params.quant_bits if quant_bits is None else quant_bits,
            reason=reason, ext_flags=ext_flags,
            model_id=0 if legacy else model_id,  # older engines never wrote byte 7
            tokens=tokens, hits=0,
            ctx_size=self.params.ctx_size if ctx_size is None else ctx_size,
            abi=ABI_LEGACY if legacy else ABI_CURRENT,
            created_at=int(now), last_used=int(now), payload_bytes=payload,
            text_bytes=text.nbytes,
        )  # fmt: skip

    def _compatible(self, name: str, text: KeyText, h: Header) -> bool:
        """kv_cache_existing_compatible for the file already under `name`."""
        found = self.storage.entry(name)
        if found is None:
            return False  # absent or invisible: the rename will replace it
        old = found[0]
        return (
            (not self.current or old.model_id == h.model_id)
            and (not self.reject_different_quant or old.quant_bits == h.quant_bits)
            and old.ctx_size <= h.ctx_size
            and self.storage.same_text(name, text)
        )

    def store(self, text: KeyText, tokens: int, reason: Reason, now: float, *,
              trailer: bytes = b"", trimmed: int = 0,
              **header: int | None) -> tuple[Stored, str]:  # fmt: skip
        """Store a snapshot of `text` (`tokens` tokens); returns what happened
        and the file's name. `header` overrides model_id, quant_bits,
        ctx_size, payload_bytes, ext_flags."""
        h = self.header(text, tokens, reason, now, **header)  # type: ignore[arg-type]
        if trailer:
            h = replace(h, ext_flags=h.ext_flags | EXT_TOOL_MAP)
        name = sha1_hex(text.render()) + ".kv"
        file_bytes = h.min_file_size + len(trailer)
        # Older engines check the fit first; current ones after the same-name check.
        if not self.current and not self._fits_or_note(file_bytes, name, reason, tokens, now):
            return Stored.SKIPPED, name
        if self.storage.entry(name) is not None:
            if self._compatible(name, text, h):
                old = self.storage.entry(name)
                if trailer and old is not None:
                    new = replace(old[0], ext_flags=old[0].ext_flags | EXT_TOOL_MAP,
                                  last_used=int(now))
                    self.storage.rewrite_trailer(name, self.rewritten(new), trailer, now)
                else:
                    self.storage.note("reuse", name, now, reason=reason.label, tokens=tokens)
                return Stored.REUSED, name
            if self.storage.delete(name, "replace", now):
                self._log(f"kv cache replaced incompatible file {self._path(name)}")
        return self._write(text, h, trailer, tokens, trimmed, now)

    def write_new(self, text: KeyText, tokens: int, reason: Reason, now: float, *,
                  trailer: bytes = b"", trimmed: int = 0,
                  **header: int | None) -> tuple[Stored, str]:  # fmt: skip
        """The write path of `store` without its same-name check (a file the
        engine cannot see, or has just unlinked, is renamed over)."""
        h = self.header(text, tokens, reason, now, **header)  # type: ignore[arg-type]
        if trailer:
            h = replace(h, ext_flags=h.ext_flags | EXT_TOOL_MAP)
        return self._write(text, h, trailer, tokens, trimmed, now)

    def _write(self, text: KeyText, h: Header, trailer: bytes, tokens: int, trimmed: int,  # noqa: PLR0917
               now: float) -> tuple[Stored, str]:  # fmt: skip
        name = sha1_hex(text.render()) + ".kv"
        file_bytes = h.min_file_size + len(trailer)
        reason = h.reason
        if not self._fits_or_note(file_bytes, name, reason, tokens, now):
            return Stored.SKIPPED, name
        if self.current and self.budget is not None:
            incoming = Incoming(text, h.model_id, h.quant_bits, h.ctx_size)
            self.evict_to(self.budget - file_bytes, now, incoming=incoming)
        self.storage.write(name, h, text, trailer, now)
        self._log(f"kv cache stored tokens={tokens} trimmed={trimmed} reason={reason.label} "
                  f"key=token-text size={file_bytes / MiB:.2f} MiB save=0.0 ms")  # fmt: skip
        if not self.current and self.budget is not None:
            self.evict_to(self.budget, now, protect=name)
        if self.on_store is not None:
            self.on_store(name, text.render(), now)
        return Stored.WRITTEN, name

    def _fits_or_note(self, file_bytes: int, name: str, reason: Reason, tokens: int,
                      now: float) -> bool:  # fmt: skip
        if self.fits(file_bytes):
            return True
        self.storage.note("skip", name, now, size=file_bytes, reason=reason.label, tokens=tokens)
        return False

    # -- lookups ----------------------------------------------------------------

    def find(self, prompt: KeyText, *, model_id: int = 0, quant_bits: int | None = None,
             ctx_size: int | None = None) -> str | None:  # fmt: skip
        """ds4_kvstore_find_text_prefix: the entry with the longest text that is
        a byte prefix of `prompt` (more tokens, then scan order, break ties)."""
        p = self.params
        quant = p.quant_bits if quant_bits is None else quant_bits
        ctx = p.ctx_size if ctx_size is None else ctx_size
        listing = self.storage.listing()
        ok = ((listing.text_bytes <= prompt.nbytes) & (listing.tokens >= p.min_tokens)
              & (listing.ctx_size <= ctx))  # fmt: skip
        if self.reject_different_quant:
            ok &= listing.quant_bits == quant
        if self.current:
            ok &= listing.model_id == model_id
        rows = np.flatnonzero(ok)
        order = rows[np.lexsort((rows, -listing.tokens[rows], -listing.text_bytes[rows]))]
        for i in order:
            if self.storage.extends(listing.names[int(i)], prompt):
                return listing.names[int(i)]
        return None

    def lookup(self, prompt: KeyText, now: float, *, model_id: int = 0,
               quant_bits: int | None = None,
               ctx_size: int | None = None) -> Hit | None:  # fmt: skip
        """Serve `prompt` from disk: load the best prefix, then touch it, or
        unlink it when it holds more than cold_max_tokens (consumed)."""
        name = self.find(prompt, model_id=model_id, quant_bits=quant_bits, ctx_size=ctx_size)
        found = None if name is None else self.storage.entry(name)
        if name is None or found is None:
            self.storage.note("miss", "", now, prompt_bytes=prompt.nbytes)
            return None
        h = found[0]
        if not self.storage.load(name, prompt):
            self.storage.note("load_failed", name, now, reason=h.reason.label)
            return None
        self.storage.note("hit", name, now, reason=h.reason.label, tokens=h.tokens, size=found[1])
        cold_max = self.params.cold_max_tokens
        consumed = cold_max > 0 and h.tokens > cold_max
        self._log(f"kv cache hit text tokens={h.tokens} text={h.text_bytes} "
                  f"quant={h.quant_bits} key=token-text load=0.0 ms "
                  f"{'consumed ' if consumed else ''}file={self._path(name)}")  # fmt: skip
        if consumed:  # the live session now owns that state; no touch first
            self.storage.delete(name, "consume", now)
        else:
            self.storage.touch(name, self.rewritten(h.touched(int(now))), now)
        return Hit(name, h, consumed)

    def rewritten(self, h: Header) -> Header:
        """A header as this engine rewrites it in place (older engines' header
        writer put zeros at bytes 7 and 20)."""
        return h if self.current else replace(h, model_id=0, abi=ABI_LEGACY)

    def _path(self, name: str) -> str:
        return f"{self.directory}/{name}" if self.directory else name

    def _log(self, line: str) -> None:
        if self.log is not None:
            self.log(f"ds4-server: {line}")

