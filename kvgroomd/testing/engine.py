"""An emulator of ds4-server's disk KV cache (spec section 3), for tests and benchmarks.

The engine model (`kvgroomd.sim.engine`, the one the simulator runs) over a
real directory (`kvgroomd.testing.dirstore`): temp file then `rename()`,
header first, 48-byte in-place touch, consume-on-load, and its own budget
eviction (`variant="current"` for engines since 2026-05-26, `"legacy"`
before). It runs in the caller's thread, as the engine's store path runs in
the engine's, so a daemon under test sees the same race: the engine acts
first.

`Engine` is the store with a byte-text API for tests; `testing.server.Server`
drives it the way ds4-server's request flow does (`kvgroomd.sim.server`, again
the simulator's) with the chats of `kvgroomd.testing.chat`; `populate()` fills
a directory fast for benchmarks; `python -m kvgroomd.testing.engine` runs a
seeded workload (`kvgroomd.testing.ops`) and `python -m kvgroomd.testing.live`
replays a simulator workload at a pace.

Every action is appended to an optional JSON-lines journal, so a test can tell
what the engine removed from what the daemon removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from kvgroomd.core.scoring import engine_scores
from kvgroomd.format.header import EXT_TOOL_MAP, PREFIX_BYTES, Header, Reason
from kvgroomd.sim import engine as model
from kvgroomd.sim.engine import EngineModel, EngineParams, MiB, Stored, Variant
from kvgroomd.sim.storage import ByteText, Listing
from kvgroomd.testing.chat import Conversation, conversation, ktm_trailer, system_prompt
from kvgroomd.testing.dirstore import DirStore, Entry, engine_unlinked, read_journal
from kvgroomd.testing.populate import populate

Clock = Callable[[], float]
KiB = 1024
DEFAULT_BUDGET_BYTES = 4096 * MiB
EMULATOR = EngineParams(ctx_size=32768)  # the emulator's default server context
MIN_TOKENS: int = EMULATOR.min_tokens
COLD_MAX_TOKENS: int = EMULATOR.cold_max_tokens
CONTINUED_STEP: int = EMULATOR.continued_step  # 10000 rounded up to the 2048 alignment


def size_model(tokens: int) -> int:
    """File size of a DeepSeek V4 Flash snapshot of `tokens` tokens (spec section 6)."""
    return EMULATOR.size(tokens)


def store_len(tokens: int) -> int:
    """The engine's cold length: trimmed by 32 tokens, aligned down to 2048."""
    return EMULATOR.store_len(tokens)


def eviction_score(header: Header, file_size: int, now: int, *, variant: Variant = "current",
                   superseded: bool = False) -> float:  # fmt: skip
    """The engine's eviction score of one entry (`scoring.engine_scores`);
    `superseded`: the incoming file strictly extends this `continued` entry."""
    cols = Listing.of([("x", header, file_size)])
    return float(engine_scores(cols.hits, cols.last_used, cols.created_at, cols.tokens,
                               cols.size, cols.reason, now, current=variant == "current",
                               superseded=cols.reason == (int(Reason.CONTINUED) if superseded
                                                          else -1))[0])  # fmt: skip


class StoreSkippedError(Exception):
    """The engine refused to store: the file plus 1% slack exceeds the budget."""


@dataclass(frozen=True, slots=True)
class Incoming:
    """What current engines know about the file about to be stored."""

    text: bytes
    model_id: int = 0
    quant_bits: int = 2
    ctx_size: int = 32768

    def model(self) -> model.Incoming:
        """As the engine model takes it."""
        return model.Incoming(ByteText(self.text), self.model_id, self.quant_bits, self.ctx_size)


@dataclass(frozen=True, slots=True)
class Hit(model.Hit):
    """A lookup that loaded a snapshot, and where it was."""

    path: Path


class Engine:
    """The snapshot store of one ds4-server process over `directory`."""

    def __init__(self, directory: str | os.PathLike[str], *, budget_bytes: int | None = None,
                 variant: Variant = "current", clock: Clock = time.time, pid: int | None = None,
                 sparse: bool = True, cold_max_tokens: int = COLD_MAX_TOKENS,
                 min_tokens: int = MIN_TOKENS, reject_different_quant: bool = False,
                 fsync: bool = False, journal: str | os.PathLike[str] | None = None,
                 write_delay: float = 0.0, track_prefixes: bool | None = None,
                 params: EngineParams | None = None,
                 log: Callable[[str], None] | None = None) -> None:  # fmt: skip
        self.clock = clock
        self.files = DirStore(directory, variant=variant, clock=clock, pid=pid, sparse=sparse,
                              fsync=fsync, journal=journal, write_delay=write_delay,
                              track_prefixes=track_prefixes)  # fmt: skip
        p = dataclasses.replace(params or EMULATOR, cold_max_tokens=cold_max_tokens,
                                min_tokens=min_tokens)  # fmt: skip
        self.model = EngineModel(self.files, p, budget=budget_bytes, variant=variant,
                                 reject_different_quant=reject_different_quant,
                                 log=log)  # fmt: skip

    # -- settings and what the files say ------------------------------------------

    @property
    def directory(self) -> Path:
        """The cache directory."""
        return self.files.directory

    @property
    def records(self) -> list[dict[str, Any]]:
        """The journal, kept in memory too."""
        return self.files.records

    @property
    def written(self) -> set[str]:
        """Names this engine stored (texts it can render again)."""
        return self.files.written

    @property
    def sparse(self) -> bool:
        """Payloads are holes."""
        return self.files.sparse

    @property
    def variant(self) -> Variant:
        """current or legacy."""
        return self.model.variant

    @property
    def min_tokens(self) -> int:
        """--kv-cache-min-tokens."""
        return self.model.params.min_tokens

    @property
    def cold_max_tokens(self) -> int:
        """--kv-cache-cold-max-tokens."""
        return self.model.params.cold_max_tokens

    @property
    def budget_bytes(self) -> int | None:
        """The engine's --kv-disk-space-mb in bytes (None: no budget)."""
        return self.model.budget

    @budget_bytes.setter
    def budget_bytes(self, value: int | None) -> None:
        self.model.budget = value

    def now(self) -> int:
        """The engine's `time(NULL)`: whole seconds."""
        return int(self.clock())

    def read_header(self, path: Path) -> Header | None:
        """The header as this engine generation reads it, or None if it ignores the file."""
        return self.files.read_header(path)

    def parse_header(self, raw: bytes) -> Header | None:
        """`raw` (the first 52 bytes) as this engine generation reads it, or None."""
        return self.files.parse_header(raw)

    def read_text(self, path: Path) -> bytes | None:
        """The rendered text stored in a snapshot, or None when unreadable."""
        return self.files.read_text(path)

    def entry(self, name: str) -> Entry | None:
        """`name` as a cache entry, or None when the engine would not count it."""
        return self.files.get(name)

    def entries(self) -> list[Entry]:
        """Every entry the engine counts, in name order."""
        return self.files.entries()

    def total_bytes(self) -> int:
        """What the engine believes the cache occupies: sizes of entries it counts."""
        return sum(e.size for e in self.entries())

    # -- eviction ---------------------------------------------------------------------

    def score(self, e: Entry, now: int | None = None, incoming: Incoming | None = None) -> float:
        """`e`'s eviction score under this engine's variant."""
        listing = Listing.of([(e.name, e.header, e.size)])
        inc = incoming.model() if incoming is not None else None
        return float(self.model.scores(listing, self.now() if now is None else now, inc)[0])

    def evict_to(self, budget: int, *, incoming: Incoming | None = None,
                 protect: str | None = None, cause: str = "evict") -> list[str]:  # fmt: skip
        """ds4_kvstore_evict: unlink lowest-score entries until they total <= budget."""
        inc = incoming.model() if incoming is not None else None
        return self.model.evict_to(budget, self.now(), incoming=inc, protect=protect,
                                   cause=cause)  # fmt: skip

    def startup(self) -> list[str]:
        """The eviction pass the engine runs when it opens the cache directory."""
        return self.model.startup(self.now())

    # -- writing ------------------------------------------------------------------------

    def _payload(self, tokens: int, payload_bytes: int | None) -> int | None:
        if payload_bytes is not None or self.sparse:
            return payload_bytes
        return 4096 + 8 * tokens  # the fixtures' small payload shape

    def store(self, text: bytes, tokens: int, reason: Reason, *, model_id: int = 0,
              quant_bits: int = 2, ctx_size: int = 32768, payload_bytes: int | None = None,
              trailer: bytes = b"", ext_flags: int = 0) -> Path:  # fmt: skip
        """Store a snapshot of `text` as the engine does; return its final path.

        An existing compatible file of that name is kept (only its trailer is
        rewritten when `trailer` is given, without eviction); an incompatible
        one is unlinked and rewritten. Raises StoreSkippedError when the file
        cannot fit the budget at all.
        """
        what, name = self.model.store(
            ByteText(text), tokens, reason, self.clock(), trailer=trailer, model_id=model_id,
            quant_bits=quant_bits, ctx_size=ctx_size,
            payload_bytes=self._payload(tokens, payload_bytes), ext_flags=ext_flags,
        )  # fmt: skip
        if what is Stored.SKIPPED:
            raise StoreSkippedError(f"{name}: exceeds budget {self.budget_bytes} with 1% slack")
        return self.directory / name

    def _header(self, text: bytes, tokens: int, reason: Reason, **kw: Any) -> Header:
        kw["payload_bytes"] = self._payload(tokens, kw.get("payload_bytes"))
        return self.model.header(ByteText(text), tokens, reason, self.clock(), **kw)

    @contextlib.contextmanager
    def in_flight(self, text: bytes, tokens: int, reason: Reason, *,
                  payload_bytes: int | None = None, model_id: int = 0, quant_bits: int = 2,
                  ctx_size: int = 32768) -> Iterator[Path]:  # fmt: skip
        """A store paused inside its payload write: yields the live temp path,
        renames on exit. No eviction runs."""
        header = self._header(text, tokens, reason, payload_bytes=payload_bytes,
                              model_id=model_id, quant_bits=quant_bits,
                              ctx_size=ctx_size)  # fmt: skip
        with self.files.in_flight(header, text) as tmp:
            yield tmp

    def crash(self, text: bytes, tokens: int, reason: Reason, *, pid: int | None = None,
              fraction: float = 0.5, payload_bytes: int | None = None, model_id: int = 0,
              quant_bits: int = 2, ctx_size: int = 32768) -> Path:  # fmt: skip
        """A store whose process died mid-write: leaves `<sha>.kv.tmp.<pid>` behind.

        `pid` names the dead writer (default: this engine's; see `dead_pid()`).
        Current engines had already run their eviction before the write began.
        """
        header = self._header(text, tokens, reason, payload_bytes=payload_bytes,
                              model_id=model_id, quant_bits=quant_bits,
                              ctx_size=ctx_size)  # fmt: skip
        budget = self.budget_bytes
        if self.model.current and budget is not None and self.model.fits(header.min_file_size):
            self.evict_to(budget - header.min_file_size,
                          incoming=Incoming(text, model_id, quant_bits, ctx_size))  # fmt: skip
        return self.files.crash(header, text, pid, fraction)

    def replace(self, name: str, *, via: Literal["unlink", "rename"] = "unlink",
                reason: Reason | None = None, tokens: int | None = None,
                model_id: int | None = None, quant_bits: int | None = None,
                ctx_size: int | None = None, payload_bytes: int | None = None,
                trailer: bytes = b"") -> Path:  # fmt: skip
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
            self.files.delete(name, "replace", self.clock())
        tokens = old.tokens if tokens is None else tokens
        what, new = self.model.write_new(
            ByteText(text), tokens, old.reason if reason is None else reason, self.clock(),
            trailer=trailer, model_id=old.model_id if model_id is None else model_id,
            quant_bits=old.quant_bits if quant_bits is None else quant_bits,
            ctx_size=old.ctx_size if ctx_size is None else ctx_size,
            payload_bytes=self._payload(tokens, payload_bytes),
            ext_flags=old.ext_flags & ~EXT_TOOL_MAP,
        )  # fmt: skip
        if what is Stored.SKIPPED:
            raise StoreSkippedError(f"{name}: exceeds budget {self.budget_bytes} with 1% slack")
        return self.directory / new

    # -- in-place updates ------------------------------------------------------------

    def touch(self, name: str) -> Header | None:
        """A disk hit: rewrite the first 48 bytes in place (hits + 1, last_used = now).
        Returns the header written, or None when the file is gone or not an entry."""
        old = self.read_header(self.directory / name)
        if old is None:
            return None
        new = self.model.rewritten(old.touched(self.now()))
        self.files.touch(name, new, self.clock())
        return new

    def rewrite_trailer(self, name: str, trailer: bytes) -> Header | None:
        """Truncate after the payload, append `trailer`, then rewrite the header:
        ext bit 0 set, last_used = now, hits kept, inode unchanged."""
        old = self.read_header(self.directory / name)
        if old is None:
            return None
        if not trailer:
            return old  # the engine rewrites nothing without a trailer
        new = dataclasses.replace(old, ext_flags=old.ext_flags | EXT_TOOL_MAP,
                                  last_used=self.now())  # fmt: skip
        self.files.rewrite_trailer(name, self.model.rewritten(new), trailer, self.clock())
        return new

    # -- lookups ------------------------------------------------------------------------

    def find(self, prompt: bytes, *, model_id: int = 0, quant_bits: int = 2,
             ctx_size: int = 32768) -> Entry | None:  # fmt: skip
        """ds4_kvstore_find_text_prefix: the longest entry whose name is sha1 of a prompt prefix."""
        name = self.model.find(ByteText(prompt), model_id=model_id, quant_bits=quant_bits,
                               ctx_size=ctx_size)  # fmt: skip
        return None if name is None else self.entry(name)

    def lookup(self, prompt: bytes, *, model_id: int = 0, quant_bits: int = 2,
               ctx_size: int = 32768) -> Hit | None:  # fmt: skip
        """Serve `prompt` from disk: load the best prefix, then touch or consume it."""
        hit = self.model.lookup(ByteText(prompt), self.clock(), model_id=model_id,
                                quant_bits=quant_bits, ctx_size=ctx_size)  # fmt: skip
        if hit is None:
            return None
        return Hit(hit.name, hit.header, hit.consumed, self.directory / hit.name)


def ladder(engine: Engine, total_tokens: int = 49022, step: int = CONTINUED_STEP, *,
           seed: int = 0, **store_kw: Any) -> list[Path]:  # fmt: skip
    """Spec section 4's example: continued at every `step`, then an evict of the whole.

    With the defaults: continued 10240, 20480, 30720, 40960, evict 49022; each
    text a strict byte prefix of the next. Returns the paths in store order.
    """
    conv = conversation(seed, total_tokens)
    paths = [engine.store(conv.text(k), k, Reason.CONTINUED, **store_kw)
             for k in range(step, total_tokens, step)]  # fmt: skip
    paths.append(engine.store(conv.text(total_tokens), total_tokens, Reason.EVICT, **store_kw))
    return paths


__all__ = [
    "COLD_MAX_TOKENS",
    "CONTINUED_STEP",
    "DEFAULT_BUDGET_BYTES",
    "MIN_TOKENS",
    "Conversation",
    "Engine",
    "Entry",
    "Hit",
    "Incoming",
    "KiB",
    "MiB",
    "StoreSkippedError",
    "conversation",
    "engine_unlinked",
    "eviction_score",
    "ktm_trailer",
    "ladder",
    "populate",
    "read_journal",
    "size_model",
    "store_len",
    "system_prompt",
]  # fmt: skip

if __name__ == "__main__":
    from kvgroomd.testing.ops import main

    sys.exit(main())
