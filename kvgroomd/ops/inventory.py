"""Inventory: the data behind `kvgroomd ls` and `kvgroomd stats`.

Pure. Given the decision core after it indexed a directory (snapshots), what
else the scan found (invalid files, temp files, foreign entries), `now`, the
policy settings and a text source, it says for every snapshot what the daemon
would think of it: its value under the configured policy and its place in the
eviction order, the prefix chain it belongs to and which newer file supersedes
it. The core's own code decides all of it (`Groomer.prefix_pairs`, the
supersession rule, `evict.ranking` on the core's clock), so `ls` shows the
daemon's view, not a second opinion.

A *chain* is a set of snapshots linked by "text is a strict byte prefix of a
compatible one" (spec §4). Two conversations that share a cold anchor (a
system prompt) form one chain, shaped like a tree; its id is the sha of its
shortest member, its root.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kvgroomd.core.cleanup import TempFile
from kvgroomd.core.evict import ranking
from kvgroomd.core.groomer import Groomer, Texts
from kvgroomd.core.index import Snapshot
from kvgroomd.core.scoring import Policy
from kvgroomd.core.supersede import superseding
from kvgroomd.format.header import ABI_LEGACY, Reason
from kvgroomd.format.layouts import DETECT, name_of, reads

REASONS = tuple(r.label for r in Reason)
LS_SCHEMA = "kvgroomd.ls/1"
STATS_SCHEMA = "kvgroomd.stats/1"


@dataclass(frozen=True, slots=True)
class Settings:
    """What the inventory needs from the configuration."""

    policy: Policy
    params: Mapping[str, float] = field(default_factory=dict)
    protect_new: float = 120.0
    strict_quant: bool = False
    budget: int | None = None
    orphan_temp_age: float = 3600.0
    engine_budget: int | None = None  # the engine's --kv-disk-space-mb, bytes
    engine: str = DETECT  # the engine's layout (format/layouts.py)


@dataclass(frozen=True, slots=True)
class Row:
    """One snapshot as `ls` shows it."""

    snap: Snapshot
    score: float | None  # policy value (higher = keep); None when protected
    protected: str | None  # why budget eviction never picks it: "reason" (agent, unknown)
    rank: int | None  # 1 = the first the policy would evict; None when protected
    chain: str | None  # sha of the chain's root; None when in no chain
    chain_size: int
    covered: bool  # a strict prefix of a compatible longer snapshot
    superseded_by: str | None  # sha of the shortest snapshot that supersedes it
    engine_visible: bool = True  # the engine lists it (format/layouts.reads)

    @property
    def leak(self) -> str | None:
        """`stale_format` for ABI-0 files, which current engines never see."""
        return "stale_format" if self.snap.header.abi == ABI_LEGACY else None


@dataclass(frozen=True, slots=True)
class Other:
    """A file that is not a usable snapshot, and why."""

    name: str
    kind: str  # invalid | unknown_format | temp | foreign
    why: str  # short code: truncated, magic, symlink, writing, orphan, ...
    detail: str
    size: int | None
    mtime: float | None
    temp: TempFile | None = None


@dataclass(frozen=True, slots=True)
class Chain:
    """A set of snapshots linked by strict-prefix relations."""

    id: str
    members: tuple[str, ...]  # names, shortest text first
    bytes: int


@dataclass(frozen=True, slots=True)
class Inventory:
    """Everything `ls` and `stats` report about one directory."""

    now: float
    settings: Settings
    rows: tuple[Row, ...]
    others: tuple[Other, ...]
    chains: tuple[Chain, ...]


class _Sets:
    """Union-find over names, for chains."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)


def _relations(core: Groomer, texts: Texts) -> tuple[_Sets, set[int], dict[int, int]]:
    """Prefix links, covered rows and superseded-by (row -> row of the
    shortest file that supersedes it), from the core's own proven pairs."""
    pairs_n, pairs_o = core.prefix_pairs(texts)
    sets = _Sets()
    names = core.index.names
    for n, o in zip(pairs_n.tolist(), pairs_o.tolist(), strict=True):
        sets.union(names[o], names[n])
    cols = core.index.columns()
    go = superseding(cols, pairs_n, pairs_o)
    by: dict[int, int] = {}
    for n, o in zip(pairs_n[go].tolist(), pairs_o[go].tolist(), strict=True):
        prior = by.get(o)
        if prior is None or cols["text_bytes"][n] < cols["text_bytes"][prior]:
            by[o] = n
    return sets, set(pairs_o.tolist()), by


def _others(invalid: Sequence[Any], temps: Sequence[TempFile], foreign: Sequence[Any],
            now: float, orphan_age: float) -> list[Other]:  # fmt: skip
    out = []
    for bad in invalid:  # read.Invalid
        kind = bad.why if bad.why in ("unknown_format", "other_layout") else "invalid"
        why = (getattr(bad, "layout", None) or "unknown") if kind == "other_layout" else bad.why
        size = bad.seen.size if bad.seen else None
        mtime = bad.seen.mtime_ns / 1e9 if bad.seen else None
        out.append(Other(bad.name, kind, why, bad.detail, size, mtime))
    for t in temps:
        if t.writer_alive:
            why, detail = "writing", f"writer pid {t.pid} is running"
        elif t.is_orphan(now, orphan_age):
            why, detail = "orphan", f"writer pid {t.pid} is gone"
        else:
            why = "orphan_recent"
            detail = f"writer pid {t.pid} is gone; written {max(0, round(t.age(now)))} s ago"
        out.append(Other(t.name, "temp", why, detail, t.seen.size, t.mtime, t))
    for f in foreign:  # scan.Foreign
        detail = {
            "held": "left mid-delete by kvgroomd; put back at its next start",
            "file": "not a snapshot name: another tool's file, never touched",
            "special": "a FIFO, socket or device, never touched",
        }.get(f.kind, f"a {f.kind}, never touched")
        out.append(Other(f.name, "foreign", f.kind, detail, f.size, f.mtime))
    return sorted(out, key=lambda o: (o.kind, o.name))


def build(core: Groomer, texts: Texts, *, invalid: Sequence[Any] = (),
          temps: Sequence[TempFile] = (), foreign: Sequence[Any] = (),
          now: float, settings: Settings) -> Inventory:  # fmt: skip
    """The inventory of a directory the core has indexed (daemon/groom.survey):
    chains and supersession from the core's proven prefix pairs, values and
    ranks from the policy, on the core's own clock."""
    index = core.index
    sets, covered_rows, by_row = _relations(core, texts)
    names = index.names
    covered = {names[r]: True for r in covered_rows}
    superseded_by = {names[o]: names[n][:40].lower() for o, n in by_row.items()}
    cols = index.columns()
    order, values = ranking(cols, core.clock(now), settings.policy, dict(settings.params),
                            settings.protect_new)  # fmt: skip
    rank = {int(i): n + 1 for n, i in enumerate(k for k in order if math.isfinite(values[k]))}
    visible = reads(settings.engine, cols["layout"], cols["abi"])

    groups: dict[str, list[str]] = {}
    for name in index.names:
        if name in sets.parent:
            groups.setdefault(sets.find(name), []).append(name)
    row = {n: i for i, n in enumerate(index.names)}
    chains: dict[str, Chain] = {}
    for members in groups.values():
        members.sort(key=lambda n: (int(cols[row[n]]["text_bytes"]), n))
        total = sum(int(cols[row[n]]["size"]) for n in members)
        chain = Chain(members[0][:40].lower(), tuple(members), total)
        chains.update(dict.fromkeys(members, chain))

    rows = []
    for i, name in enumerate(index.names):
        value = float(values[i])
        member = chains.get(name)
        rows.append(
            Row(
                snap=index.at(i),
                score=value if math.isfinite(value) else None,
                protected=None if math.isfinite(value) else "reason",
                rank=rank.get(i),
                chain=member.id if member else None,
                chain_size=len(member.members) if member else 0,
                covered=bool(covered.get(name)),
                superseded_by=superseded_by.get(name),
                engine_visible=bool(visible[i]),
            )
        )
    rows.sort(key=lambda r: r.snap.name)
    unique = {c.id: c for c in chains.values()}
    return Inventory(
        now,
        settings,
        tuple(rows),
        tuple(_others(invalid, temps, foreign, now, settings.orphan_temp_age)),
        tuple(sorted(unique.values(), key=lambda c: c.id)),
    )


# -- ls ----------------------------------------------------------------------------

SORT_KEYS: dict[str, Callable[[Row], Any]] = {
    "rank": lambda r: (r.rank is None, r.rank or 0, r.snap.name),
    "score": lambda r: (r.score is None, r.score or 0.0, r.snap.name),
    "size": lambda r: (r.snap.size, r.snap.name),
    "tokens": lambda r: (r.snap.header.tokens, r.snap.name),
    "hits": lambda r: (r.snap.header.hits, r.snap.name),
    "age": lambda r: (-r.snap.header.created_at, r.snap.name),
    "last-used": lambda r: (-r.snap.header.last_active, r.snap.name),
    "reason": lambda r: (r.snap.header.reason.label, r.snap.name),
    "chain": lambda r: (r.chain is None, r.chain or "", r.snap.header.text_bytes, r.snap.name),
    "name": lambda r: r.snap.name,
}


def sorted_rows(inv: Inventory, key: str = "rank", *, reverse: bool = False) -> list[Row]:
    """Rows in the order `ls --sort KEY [--reverse]` prints them."""
    return sorted(inv.rows, key=SORT_KEYS[key], reverse=reverse)


def row_json(r: Row, now: float) -> dict[str, Any]:
    """One snapshot in the `kvgroomd.ls/1` schema."""
    s, h = r.snap, r.snap.header
    return {
        "name": s.name, "sha": s.sha, "reason": h.reason.label,
        "reason_code": h.reason_code if h.reason_code >= 0 else int(h.reason),
        "tokens": h.tokens, "hits": h.hits, "size": s.size,
        "created_at": h.created_at, "last_used": h.last_active,
        "age_s": max(0, round(now - h.created_at)),
        "idle_s": max(0, round(now - h.last_active)),
        "model_id": h.model_id, "quant_bits": h.quant_bits, "ctx_size": h.ctx_size,
        "abi": h.abi, "layout": h.layout_name, "model_fp": f"{h.model_fp:016x}",
        "engine_visible": r.engine_visible,
        "ext_flags": h.ext_flags,
        "text_bytes": h.text_bytes, "payload_bytes": h.payload_bytes,
        "score": r.score, "rank": r.rank, "protected": r.protected,
        "chain": r.chain, "chain_size": r.chain_size, "covered": r.covered,
        "superseded_by": r.superseded_by, "leak": r.leak,
    }  # fmt: skip


def other_json(o: Other, now: float) -> dict[str, Any]:
    """One non-snapshot entry in the `kvgroomd.ls/1` schema."""
    out: dict[str, Any] = {"name": o.name, "kind": o.kind, "why": o.why, "detail": o.detail,
                           "size": o.size, "mtime": o.mtime}  # fmt: skip
    if o.temp is not None:
        t = o.temp
        out |= {"sha": t.sha, "pid": t.pid, "writer_alive": t.writer_alive,
                "age_s": max(0, round(t.age(now))), "expected_size": t.expected_size}  # fmt: skip
    return out


def ls_json(inv: Inventory, directory: str, rows: Sequence[Row]) -> dict[str, Any]:
    """The whole `ls --json` document."""
    s = inv.settings
    return {
        "schema": LS_SCHEMA,
        "directory": directory,
        "now": inv.now,
        "policy": {"name": s.policy.name, "params": {**s.policy.defaults, **s.params}},
        "budget": s.budget,
        "snapshots": [row_json(r, inv.now) for r in rows],
        "others": [other_json(o, inv.now) for o in inv.others],
    }


# -- stats ---------------------------------------------------------------------------


def _count(items: Sequence[int]) -> dict[str, int]:
    return {"count": len(items), "bytes": int(sum(items))}


def stats(inv: Inventory, directory: str) -> dict[str, Any]:
    """Totals for `kvgroomd stats` (schema `kvgroomd.stats/1`)."""
    by_reason: dict[str, dict[str, int]] = {
        r: {"count": 0, "bytes": 0, "tokens": 0, "hits": 0} for r in REASONS
    }
    for r in inv.rows:
        b = by_reason[r.snap.header.reason.label]
        b["count"] += 1
        b["bytes"] += r.snap.size
        b["tokens"] += r.snap.header.tokens
        b["hits"] += r.snap.header.hits
    used = sum(r.snap.size for r in inv.rows)
    budget = inv.settings.budget
    invalid: dict[str, dict[str, int]] = {}
    other_layouts: dict[str, dict[str, int]] = {}
    for o in inv.others:
        if o.kind in ("invalid", "unknown_format", "other_layout"):
            into = other_layouts if o.kind == "other_layout" else invalid
            b = into.setdefault(o.why, {"count": 0, "bytes": 0})
            b["count"] += 1
            b["bytes"] += o.size or 0
    by_layout: dict[str, dict[str, int]] = {}
    for r in inv.rows:
        b = by_layout.setdefault(name_of(r.snap.header.layout, r.snap.header.abi),
                                 {"count": 0, "bytes": 0})  # fmt: skip
        b["count"] += 1
        b["bytes"] += r.snap.size
    temps = [o for o in inv.others if o.temp is not None]
    gone = [o.size or 0 for o in temps if o.temp and not o.temp.writer_alive]
    superseded = [r.snap.size for r in inv.rows if r.superseded_by]
    kinds = Counter(o.kind for o in inv.others)
    return {
        "schema": STATS_SCHEMA,
        "directory": directory,
        "now": inv.now,
        "snapshots": _count([r.snap.size for r in inv.rows]),
        "engine_visible": _count([r.snap.size for r in inv.rows if r.engine_visible]),
        "engine_layout": inv.settings.engine,
        "by_reason": by_reason,
        "by_layout": by_layout,
        "budget": {
            "limit": budget,
            "used": used,
            "fraction": used / budget if budget else None,
            "over": max(0, used - budget) if budget is not None else None,
            "engine": inv.settings.engine_budget,
        },
        "chains": {
            "count": len(inv.chains),
            "snapshots": sum(len(c.members) for c in inv.chains),
            "bytes": sum(c.bytes for c in inv.chains),
            "superseded": _count(superseded),
        },
        "invalid": {
            "count": kinds["invalid"] + kinds["unknown_format"],
            "bytes": sum(b["bytes"] for b in invalid.values()),
            "by_why": invalid,
        },
        # Snapshots of layouts the engine does not read: they use disk, but
        # neither count against its budget nor are evicted for it.
        "other_layouts": {
            "count": kinds["other_layout"],
            "bytes": sum(b["bytes"] for b in other_layouts.values()),
            "by_layout": other_layouts,
        },
        "leaks": {
            "stale_format": _count([r.snap.size for r in inv.rows if r.leak]),
            "orphan_temps": _count(gone),
        },
        "temps_writing": _count([o.size or 0 for o in temps if o.temp and o.temp.writer_alive]),
        "foreign": _count([o.size or 0 for o in inv.others if o.kind == "foreign"]),
    }
