"""What a trace replay measured, and what the recording itself did.

Pure. `Outcome` is one run's figures (or the recording's, `recorded`), as
`kvgroomd simulate --trace` prints them (`format_table`) and as --json
gives them; `Usage` follows the bytes on disk over time.
"""

from __future__ import annotations

import math
import textwrap
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kvgroomd.sim import trace as fmt

GiB = 1 << 30

# How a replay's estimate errs, by how its budgets compare with the recorded
# ones (`room`): a tag for the table and what it means. The figures are
# bench/trace_fidelity.py's: the engine emulator's chat traffic (6 seeds, 300
# requests) recorded at one budget and replayed at others, against the
# emulator run at those. Each range spans every run so far (the policy and
# the replay changed between them; the latest, 2026-12-03: -3.0% to +5.5%,
# 0.75x -5.2% to +13.9%, 1.5x and 2x -6.6% to +11.0%).
ESTIMATE = {
    "same": ("as recorded", "the recorded budgets: the recording's lookups replayed; "
             "measured from -3.0% to +5.5% of what the engine served (once -6.3%, on a "
             "loaded machine)"),
    "more": ("more room", "a budget above the recorded one: for the engine's, measured from "
             "-6.6% to +11% of what the engine served at 1.5x and 2x, either way; what the "
             "recording never held is not credited (stores its engine skipped as too big, "
             "files gone before kvgroomd read them)"),
    "less": ("less room", "a budget below the recorded one: for the engine's, measured from "
             "-12% to +19% of what the engine served at 0.75x, mostly high (the recording's "
             "pace is kept, where a tighter engine misses and prefills more)"),
    "mixed": ("mixed", "one budget above the recorded one, another below: both of the above"),
}  # fmt: skip
SOURCE = "(measured on emulated chat traffic: bench/trace_fidelity.py)"


def room(budgets: Sequence[int | None], recorded: Sequence[int | None]) -> str:
    """How budgets (the engine's, kvgroomd's; None: none) compare with the
    recorded ones: "same", "more" (some larger, none smaller), "less", "mixed"."""
    signs = set()
    for b, r in zip(budgets, recorded, strict=True):
        if b != r:
            signs.add(1 if r is not None and (b is None or b > r) else -1)
    return {frozenset(): "same", frozenset({1}): "more",
            frozenset({-1}): "less"}.get(frozenset(signs), "mixed")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one replay (or the recording itself) measured."""

    label: str
    tokens_from_disk: int
    hits: int
    lookups: int
    bytes_written: int
    engine_evictions: int
    consumed: int
    unlinked: Mapping[str, int]
    peak_bytes: int
    mean_bytes: float
    settings: Mapping[str, str] = field(default_factory=dict)
    room: str = ""  # a replay's budgets against the recorded ones (`room`); "": the recording

    def summary(self, recorded: Outcome | None = None) -> dict[str, Any]:
        """Plain data for --json; with `recorded`, the differences to it."""
        out: dict[str, Any] = {
            "label": self.label,
            "settings": dict(self.settings),
            "tokens_from_disk": self.tokens_from_disk,
            "hits": self.hits,
            "lookups": self.lookups,
            "gib_written": round(self.bytes_written / GiB, 3),
            "engine_evictions": self.engine_evictions,
            "consumed": self.consumed,
            "unlinked": dict(self.unlinked),
            "peak_gib": round(self.peak_bytes / GiB, 3),
            "mean_gib": round(self.mean_bytes / GiB, 3),
        }
        if recorded is not None:
            base = recorded.tokens_from_disk
            out["vs_recorded"] = {
                "tokens_from_disk": self.tokens_from_disk - base,
                "tokens_from_disk_ratio": round(self.tokens_from_disk / base, 4) if base else None,
                "gib_written": round((self.bytes_written - recorded.bytes_written) / GiB, 3),
                "engine_evictions": self.engine_evictions - recorded.engine_evictions,
            }
        if self.room:
            out["estimate"] = {"room": self.room, "errs": ESTIMATE[self.room][1]}
        return out


def recorded(events: Sequence[fmt.Event], hit_counts: Sequence[int], news: Sequence[bool],
             lookups: int, facts: Mapping[str, fmt.Facts]) -> Outcome:  # fmt: skip
    """What the recording measured: tokens served from disk (hits times the
    tokens of the file hit, consumes included), bytes landed, the engine's
    evictions, kvgroomd's unlinks, and the directory's size over time."""
    tokens = hits = written = evicted = consumed = 0
    unlinked: Counter[str] = Counter()
    sizes = Sizes()
    usage = Usage()
    started = False
    for e, n, fresh in zip(events, hit_counts, news, strict=True):
        f = facts.get(e.id)
        if n and f is not None:
            hits += n
            tokens += n * f.tokens
        if e.kind in (fmt.PRESENT, fmt.ADDED, fmt.REPLACED) and e.facts is not None:
            sizes[e.id] = e.facts.size
            if fresh:
                written += e.facts.size
        elif e.kind == fmt.UPDATED:
            sizes[e.id] = e.size
        elif e.kind == fmt.ENGINE:
            sizes.pop(e.id, None)
            if e.cause == fmt.CONSUMED and f is not None:
                consumed += 1
                hits += 1
                tokens += f.tokens
            elif e.cause == fmt.EVICTED:
                evicted += 1
        elif e.kind == fmt.DECIDED and e.result in ("unlinked", "would_unlink"):
            if e.result == "unlinked":
                sizes.pop(e.id, None)
            unlinked[e.cause] += 1  # (a decision the engine beat has its own E record)
        elif e.kind == fmt.STATE:
            started = True
        if started:
            usage.at(e.t, sizes.total)
    return Outcome("recorded", tokens, hits, lookups, written, evicted, consumed,
                   dict(unlinked), usage.peak, usage.mean())  # fmt: skip


class Sizes(dict[str, int]):
    """File sizes by id, and their total."""

    total = 0

    def __setitem__(self, key: str, value: int) -> None:
        self.total += value - self.get(key, 0)
        super().__setitem__(key, value)

    def pop(self, key: str, default: Any = None) -> Any:
        value = super().pop(key, None)
        if value is None:
            return default
        self.total -= value
        return value


class Usage:
    """Bytes on disk over time: the peak and the time-weighted mean."""

    def __init__(self) -> None:
        self.peak = 0
        self._t: float | None = None
        self._bytes = 0
        self._area = 0.0
        self._t0: float | None = None

    @property
    def last(self) -> float:
        """The time of the last reading (-inf: none yet)."""
        return -math.inf if self._t is None else self._t

    def at(self, t: float, usage: int | None) -> None:
        if self._t is not None:
            self._area += self._bytes * (t - self._t)
        if self._t0 is None:
            self._t0 = t
        self._t = t
        if usage is not None:
            self._bytes = usage
            self.peak = max(self.peak, usage)

    def mean(self) -> float:
        span = (self._t or 0.0) - (self._t0 or 0.0)
        return self._area / span if span > 0 else float(self._bytes)


def format_table(recorded: Outcome, runs: Sequence[Outcome], conflicts: int = 0) -> str:
    """The runs beside the recording: tokens from disk, writes, evictions,
    disk used, and how each estimate errs (ESTIMATE, said under the table)."""
    width = max([len(r.label) for r in (recorded, *runs)] + [8])
    head = (f"{'run':<{width}} {'tokens from disk':>16} {'vs recorded':>11} {'hits':>9} "
            f"{'GiB written':>11} {'engine evictions':>16} {'mean GiB':>8} "
            f"{'peak GiB':>8}  estimate")  # fmt: skip
    lines = [head, "-" * len(head)]
    base = recorded.tokens_from_disk
    for r in (recorded, *runs):
        ratio = "" if r is recorded else (f"{r.tokens_from_disk / base - 1:+.1%}" if base
                                          else "-")  # fmt: skip
        tag = ESTIMATE[r.room][0] if r.room else ""
        lines.append(f"{r.label:<{width}} {r.tokens_from_disk:>16,} {ratio:>11} "
                     f"{f'{r.hits}/{r.lookups}':>9} {r.bytes_written / GiB:>11.2f} "
                     f"{r.engine_evictions:>16} {r.mean_bytes / GiB:>8.2f} "
                     f"{r.peak_bytes / GiB:>8.2f}  {tag}".rstrip())  # fmt: skip
    rooms = list(dict.fromkeys(r.room for r in runs if r.room))
    for room_ in rooms:
        tag, errs = ESTIMATE[room_]
        lines.append(textwrap.fill(f"{tag}: {errs}", 100, subsequent_indent="  "))
    if rooms:
        lines.append(SOURCE)
    if conflicts:
        lines.append(f"({conflicts} prefix relations could not be placed: a damaged trace?)")
    return "\n".join(lines)


__all__ = ["ESTIMATE", "GiB", "Outcome", "Sizes", "Usage", "format_table", "recorded", "room"]
