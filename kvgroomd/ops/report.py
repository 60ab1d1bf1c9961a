"""Text rendering of `ls` and `stats` for people: inventory in, lines out.

Pure. The JSON forms are built in inventory.py; this module only formats.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kvgroomd.config import format_size
from kvgroomd.ops.inventory import Inventory, Row

MODELS = {0: "flash", 1: "pro"}
GiB = 1 << 30


@dataclass(frozen=True, slots=True)
class Selection:
    """Which snapshots `ls` shows: by reason and by age (since created_at)."""

    reasons: frozenset[str] = frozenset()
    older_than: float | None = None  # seconds
    newer_than: float | None = None

    def __bool__(self) -> bool:
        return bool(self.reasons) or self.older_than is not None or self.newer_than is not None

    def __call__(self, r: Row, now: float) -> bool:
        h = r.snap.header
        age = now - h.created_at
        return ((not self.reasons or h.reason.label in self.reasons)
                and (self.older_than is None or age > self.older_than)
                and (self.newer_than is None or age < self.newer_than))  # fmt: skip


def duration(seconds: float) -> str:
    """Compact age: 45s, 12m, 5h, 184d."""
    s = max(0, int(seconds))
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= span:
            return f"{s // span}{unit}"
    return f"{s}s"


def per_gib(score: float) -> str:
    """A policy's value (prefill tokens per byte held) as tokens per GiB, in
    words a person reads: 1.2M, 45k, 830, 0.25; 0 below 0.01 (a file idle for
    months is worth nothing to keep, not 1.34e-61 of something)."""
    v = score * GiB
    if v >= 1e6:
        return f"{v / 1e6:.1f}M"
    if v >= 1e4:
        return f"{v / 1e3:.0f}k"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    if v >= 10:
        return f"{v:.0f}"
    return f"{v:.2f}" if v >= 0.01 else "0"


def _score(r: Row) -> str:
    if r.score is None:
        return f"protected({r.protected})"
    return per_gib(r.score)


def _notes(r: Row) -> str:
    notes = []
    if r.superseded_by:
        notes.append(f"superseded by {r.superseded_by[:12]}")
    if r.chain:
        notes.append(f"chain {r.chain[:12]} ({r.chain_size})")
    if not r.engine_visible:
        h = r.snap.header
        notes.append(f"ABI {h.abi}: invisible to current engines" if h.legacy
                     else f"{h.layout_name}: the engine does not list it")  # fmt: skip
    return "; ".join(notes)


def _other_layouts(st: dict[str, Any]) -> list[str]:
    """The stats line of snapshots the engine does not read, when there are any."""
    o = st["other_layouts"]
    if not o["count"]:
        return []
    which = ", ".join(f"{k} {v['count']}" for k, v in sorted(o["by_layout"].items()))
    return [f"other layouts   {_n(o)} ({which}): the engine ({st['engine_layout']}) does not "
            "read them; not counted, never evicted"]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    out = []
    for cells in [header, *rows]:
        parts = [
            c.rjust(widths[i]) if i in right else c.ljust(widths[i]) for i, c in enumerate(cells)
        ]
        out.append("  ".join(parts).rstrip())
    return out


def ls_lines(inv: Inventory, rows: Sequence[Row], directory: str, *,
             others: bool = True) -> list[str]:  # fmt: skip
    """The `ls` table: snapshots, a total, then (with `others`) the other files.
    `rows` may be a selection: the total then counts the rows shown."""
    now = inv.now
    cells = []
    for r in rows:
        h = r.snap.header
        cells.append([
            r.snap.sha[:12], h.reason.label, str(h.tokens), str(h.hits), format_size(r.snap.size),
            duration(now - h.created_at), duration(now - h.last_active),
            f"{MODELS.get(h.model_id, f'm{h.model_id}')}/q{h.quant_bits}/{h.ctx_size}",
            _score(r), str(r.rank) if r.rank is not None else "-", _notes(r),
        ])  # fmt: skip
    head = ["SHA", "REASON", "TOKENS", "HITS", "SIZE", "AGE", "USED", "MODEL/Q/CTX",
            "TOK/GiB", "RANK", "NOTES"]  # fmt: skip
    out = _table(head, cells, right={2, 3, 4, 5, 6, 8, 9})
    used = sum(r.snap.size for r in inv.rows)
    budget = inv.settings.budget
    of = f" of {format_size(budget)} budget ({100 * used / budget:.1f}%)" if budget else ""
    shown = "" if len(rows) == len(inv.rows) else (
        f"{len(rows)} of {len(inv.rows)} shown ({format_size(sum(r.snap.size for r in rows))}); ")
    out.append(f"{shown}{len(inv.rows)} snapshots, {format_size(used)}{of} in {directory}; "
               f"policy {inv.settings.policy.name}, rank 1 is evicted first")  # fmt: skip
    out.append("TOK/GiB: prefill tokens the policy expects the file to save, per GiB it "
               "holds; the lowest goes first")  # fmt: skip
    if inv.others and others:
        out.append("")
        out.append(f"not snapshots ({len(inv.others)}):")
        other = [
            [o.kind, o.why, format_size(o.size) if o.size is not None else "-", o.name, o.detail]
            for o in inv.others
        ]
        out += _table(["KIND", "WHY", "SIZE", "NAME", "DETAIL"], other, right={2})
    return out


def _n(d: dict[str, Any], noun: str = "file") -> str:
    s = "" if d["count"] == 1 else "s"
    return f"{d['count']} {noun}{s}, {format_size(d['bytes'])}"


def stats_lines(st: dict[str, Any]) -> list[str]:
    """`stats` for people, from the `kvgroomd.stats/1` document."""
    b = st["budget"]
    if b["limit"] is None:
        budget = f"{format_size(b['used'])} used, no budget configured"
    else:
        over = f", {format_size(b['over'])} over" if b["over"] else ""
        budget = (f"{format_size(b['used'])} of {format_size(b['limit'])} "
                  f"({100 * b['fraction']:.1f}%){over}")  # fmt: skip
    c = st["chains"]
    inv = st["invalid"]
    why = ", ".join(f"{k} {v['count']}" for k, v in sorted(inv["by_why"].items()))
    leaks = st["leaks"]
    out = [
        f"directory       {st['directory']}",
        f"snapshots       {_n(st['snapshots'], 'snapshot')} "
        f"(engine-visible: {_n(st['engine_visible'], 'snapshot')})",
        f"budget          {budget}",
        "",
    ]
    rows = [
        [reason, str(v["count"]), format_size(v["bytes"]), str(v["tokens"]), str(v["hits"])]
        for reason, v in st["by_reason"].items()
        if v["count"]
    ]
    out += _table(["REASON", "FILES", "BYTES", "TOKENS", "HITS"], rows, right={1, 2, 3, 4})
    out += [
        "",
        f"chains          {c['count']} ({c['snapshots']} snapshots, {format_size(c['bytes'])}); "
        f"superseded now: {_n(c['superseded'])}",
        f"invalid         {_n(inv)}" + (f" ({why})" if why else ""),
        *_other_layouts(st),
        f"leaks           stale_format (ABI 0): {_n(leaks['stale_format'])}; "
        f"orphan temps: {_n(leaks['orphan_temps'])}",
        f"temps writing   {_n(st['temps_writing'])}",
        f"foreign         {_n(st['foreign'])}",
    ]
    return out
