"""The engine's options that shape its cache directory, as one value.

Pure. ds4-server decides when to store a snapshot, how large it is and what
it loads from flags (`--kv-cache-*`); kvgroomd predicts the engine's next
store (the headroom below `engine_budget`), models it in the simulator and
reads its files by them. `EngineOptions` mirrors those flags; the config's
`engine:` block fills it (config.example.yaml documents each key). The
engine's budget itself (`--kv-disk-space-mb`) is the top-level config key
`engine_budget`, not a field here: the simulator varies it per run.

Defaults are the engine's (antirez/ds4 `ds4_kvstore.c`); sizes follow the
measured model `22.9 MiB + 13.45 KiB per token` (DeepSeek V4 Flash), divided
by the compression ratio when the engine compresses its payloads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from kvgroomd.format.layouts import DETECT, ENGINES, LAYOUTS

KiB = 1024
MiB = 1024 * KiB

# Layouts an engine can be named by (format/layouts.py describes each).
ENGINE_LAYOUTS = ENGINES
# Engines that compress their payloads (LZ4 chunks; antirez/ds4 PR #186 and its fork).
COMPRESSING_LAYOUTS = tuple(lay.name for lay in LAYOUTS if lay.compresses)


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """ds4-server's cache flags that matter to kvgroomd, with its defaults."""

    # The layout the engine writes (format/layouts.py), or "detect".
    layout: str = DETECT
    # --kv-cache-continued-interval-tokens: a `continued` snapshot every this
    # many tokens, rounded up to the alignment (0: none).
    continued_interval: int = 10000
    boundary_align: int = 2048  # --kv-cache-boundary-align-tokens (0: no alignment)
    boundary_trim: int = 32  # --kv-cache-boundary-trim-tokens
    min_tokens: int = 512  # --kv-cache-min-tokens: nothing shorter is stored
    cold_max_tokens: int = 30000  # --kv-cache-cold-max-tokens; also "consumed on load" above it
    # Compressing engines (--kv-cache-compression-threads > 0): snapshots are
    # `compression_ratio` times smaller than raw ones (2.0-2.9 measured on Flash).
    compression: bool = False
    compression_ratio: float = 2.5
    # Size model of a raw snapshot: a fixed part plus a per-token part.
    snapshot_overhead: int = int(22.9 * MiB)
    token_bytes: float = 13.45 * KiB
    # --kv-cache-reject-different-quant: lookups (and so supersession) only
    # between snapshots of the same quant_bits.
    reject_different_quant: bool = False

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(f"{key}: {why}" for key, why in problems))

    def problems(self) -> list[tuple[str, str]]:
        """(field, why) for every value the engine would not run with."""
        out: list[tuple[str, str]] = []
        if self.layout != DETECT and self.layout not in ENGINE_LAYOUTS:
            known = ", ".join((DETECT, *ENGINE_LAYOUTS))
            out.append(("layout", f"unknown layout {self.layout!r} (known: {known})"))
        for key in ("continued_interval", "boundary_align", "boundary_trim", "min_tokens",
                    "cold_max_tokens", "snapshot_overhead"):  # fmt: skip
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                out.append((key, f"expected a whole number >= 0, got {value!r}"))
        ratio, per_token = self.compression_ratio, self.token_bytes
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not (
            math.isfinite(ratio) and ratio >= 1
        ):
            out.append(("compression_ratio", f"expected a number >= 1, got {ratio!r}"))
        if isinstance(per_token, bool) or not isinstance(per_token, int | float) or not (
            math.isfinite(per_token) and per_token > 0
        ):
            out.append(("token_bytes", f"expected a size > 0, got {per_token!r}"))
        if self.compression and self.layout not in (DETECT, *COMPRESSING_LAYOUTS):
            which = ", ".join(COMPRESSING_LAYOUTS)
            out.append(("compression", f"the {self.layout} layout does not compress "
                                       f"(compressing: {which})"))  # fmt: skip
        return out

    @property
    def continued_step(self) -> int:
        """Continued snapshots land at multiples of this (10240 by default:
        10000 rounded up to the 2048 alignment); 0 when there are none."""
        step, align = self.continued_interval, self.boundary_align
        if step <= 0:
            return 0
        return -(-step // align) * align if align > 0 else step

    def store_len(self, tokens: int) -> int:
        """The length the engine stores a cold prompt of `tokens` at (without
        a chat anchor): trimmed, then aligned down, unless that falls below
        min_tokens."""
        if tokens > self.min_tokens + self.boundary_trim:
            stable = tokens - self.boundary_trim
            if self.boundary_align > 0:
                stable -= stable % self.boundary_align
            if stable >= self.min_tokens:
                return stable
        return tokens

    def raw_size(self, tokens: int) -> int:
        """Bytes of an uncompressed snapshot of `tokens` tokens."""
        return self.snapshot_overhead + int(self.token_bytes * tokens)

    def size(self, tokens: int) -> int:
        """Bytes the engine writes for a snapshot of `tokens` tokens: the raw
        size, divided by the compression ratio when it compresses."""
        raw = self.raw_size(tokens)
        return math.ceil(raw / self.compression_ratio) if self.compression else raw

