"""The simulator: replay a workload through ds4's disk cache, with and without us.

Pure apart from `main` (files in, text and a PNG out). `replay(workload, groom)`
runs every request through a small model of ds4-server (spec §3): one live
session; a memory hit when the live text is a prefix of the prompt (or, for a
tool session, when it continues its own previous turn); otherwise an `evict`
save of the live state and a disk lookup (longest compatible byte prefix,
consumed over `cold_max_tokens`); `cold` and `continued` stores; `shutdown`
saves and start-up eviction at restarts; and the engine's own budget eviction
before every store, with the current engine's multipliers. With `groom` set,
kvgroomd acts after each store with the very code the daemon runs
(`supersede.prefix_candidates`/`judge`, `evict.choose`, `scoring.POLICIES`)
over a real `Index` of fake fingerprints. Sizes follow spec §6.

Counted per run: prefill tokens served from disk (the point of the cache),
disk hits per lookup, bytes written, and bytes deleted without ever serving a
hit (written for nothing).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from kvgroomd.core.decision import Fingerprint
from kvgroomd.core.evict import Budget, choose
from kvgroomd.core.index import Change, Index, Snapshot, head_key
from kvgroomd.core.scoring import DEFAULT_POLICY, ENGINE_HALF_LIFE_S, POLICIES
from kvgroomd.core.supersede import TRIGGERS, judge, prefix_candidates
from kvgroomd.format.header import ABI_CURRENT, EXT_TOOL_MAP, Header, Reason, sha1_hex
from kvgroomd.sim.workload import (
    EngineParams,
    MiB,
    Request,
    Text,
    Workload,
    WorkloadError,
    is_prefix,
    load_workload,
    render,
    requests,
    text_bytes,
    tokens_of,
    truncate,
)

GiB = 1 << 30
# Deletion causes besides kvgroomd's own (decision.Cause values).
CONSUMED = "consumed"  # a hit over cold_max_tokens
ENGINE_EVICTED = "engine"  # the engine's budget eviction


@dataclass(frozen=True, slots=True)
class GroomParams:
    """What kvgroomd does in a run: the part of Config the simulator uses.

    `budget="auto"` is the engine's budget minus the workload's headroom (the
    largest file the engine is expected to store in one go), so the engine's
    own pre-store eviction rarely fires; None means supersession only, as in
    the daemon when its config sets no budget.
    """

    label: str = "kvgroomd"
    policy: str = DEFAULT_POLICY
    params: Mapping[str, float] = field(default_factory=dict)
    budget: int | Literal["auto"] | None = "auto"
    low_watermark: float = 0.9
    protect_new: float = 120.0
    supersede: bool = True
    reject_different_quant: bool = False


def default_headroom(engine: EngineParams) -> int:
    """Room kept free for the engine's next store when the config gives no budget.

    The largest file written in one go in everyday use is a cold or continued
    store of up to `cold_max_tokens` plus one continued step; bigger `evict`
    and `shutdown` saves then make the engine evict by its own score, which the
    replay shows honestly. Never more than a quarter of the budget.
    """
    return min(engine.size(engine.cold_max_tokens + engine.continued_step), engine.budget // 4)


# -- the directory -------------------------------------------------------------


class _MemoIndex(Index):
    """An Index that memoises `at()`: supersede.prefix_candidates builds a
    Snapshot for every file sharing the new one's text head (all sessions on
    one system prompt), which dominated replay time. Same values, built once
    per change of a row."""

    def __init__(self) -> None:
        super().__init__()
        self._memo: dict[str, Snapshot] = {}

    def at(self, row: int) -> Snapshot:
        name = self.names[row]
        snap = self._memo.get(name)
        if snap is None:
            snap = self._memo[name] = super().at(row)
        return snap

    def get(self, name: str) -> Snapshot | None:
        row = self.row_of(name)
        return None if row is None else self.at(row)

    def put(self, s: Snapshot) -> Change:
        change = super().put(s)
        # What at() would rebuild: `s` with the covered flag the row kept.
        row = self.row_of(s.name)
        assert row is not None
        self._memo[s.name] = replace(s, covered=bool(self.columns()[row]["covered"]))
        return change

    def pop(self, name: str) -> Snapshot | None:
        self._memo.pop(name, None)
        return super().pop(name)

    def set_covered(self, names: Mapping[str, bool]) -> None:
        cols = self.columns()
        changed = {}
        for name, flag in names.items():
            row = self.row_of(name)
            if row is not None and bool(cols[row]["covered"]) != flag:
                changed[name] = flag
                self._memo.pop(name, None)
        super().set_covered(changed)


class Directory:
    """The cache directory as both the engine and kvgroomd see it.

    The index holds the headers (the same structure the daemon keeps); texts
    are kept beside it for the engine's lookups. Deletions are counted by cause,
    and bytes of files that never served a hit are summed.
    """

    def __init__(self, *, track_covered: bool) -> None:
        self.index: Index = _MemoIndex()
        self.texts: dict[str, Text] = {}
        self.sizes: dict[str, tuple[int, int]] = {}  # name -> (tokens, text bytes)
        self.by_head: dict[int, set[str]] = {}  # first token stream -> names
        self.track_covered = track_covered
        self.inodes = itertools.count(1)
        self.bytes_written = 0
        self.bytes_deleted_unhit = 0
        self.deleted: Counter[str] = Counter()
        self.peak = 0
        # Optional trace for tests and debugging: (event, name, detail...).
        self.trace: list[tuple[Any, ...]] | None = None

    def __contains__(self, name: str) -> bool:
        return name in self.texts

    def add(self, name: str, header: Header, text: Text, raw: bytes, now: float) -> None:
        """The engine renamed a finished file into place."""
        size = header.min_file_size
        seen = Fingerprint(1, next(self.inodes), size, int(now * 1e9))
        self.index.put(Snapshot(name, name[:40], header, seen, head_key(raw[:64], len(raw))))
        self.texts[name] = text
        self.sizes[name] = (header.tokens, header.text_bytes)
        self.by_head.setdefault(text[0][0], set()).add(name)
        self.bytes_written += size
        self.peak = max(self.peak, self.index.total_bytes)
        if self.trace is not None:
            self.trace.append(("store", name, now, header.reason.label, header.tokens, size))

    def touch(self, name: str, now: float) -> None:
        """A disk hit: the engine rewrites hits and last_used in place."""
        snap = self.index.get(name)
        assert snap is not None
        seen = replace(snap.seen, mtime_ns=int(now * 1e9))
        self.index.put(replace(snap, header=snap.header.touched(int(now)), seen=seen))
        if self.trace is not None:
            self.trace.append(("hit", name, now, snap.header.reason.label, snap.header.tokens))

    def remove(self, name: str, cause: str) -> None:
        """Unlink `name`; `cause` says who did it and why."""
        snap = self.index.pop(name)
        assert snap is not None
        text = self.texts.pop(name)
        del self.sizes[name]
        self.by_head[text[0][0]].discard(name)
        self.deleted[cause] += 1
        if self.trace is not None:
            h = snap.header
            self.trace.append(("delete", name, cause, h.reason.label, h.tokens, h.hits))
        if snap.header.hits == 0:  # a consumed file was touched by its hit first
            self.bytes_deleted_unhit += snap.size
        if self.track_covered:
            self._uncover(text)

    def _uncover(self, gone: Text) -> None:
        # The daemon's periodic sweep recomputes `covered`; do it at once here:
        # a prefix of the removed file stays covered only if another file
        # still strictly extends it. Prefixes share the removed file's head.
        covered = self.index.columns()["covered"]
        head = self.by_head.get(gone[0][0], set())
        fix: dict[str, bool] = {}
        for name in head:
            text = self.texts[name]
            if covered[self.index.row_of(name)] and is_prefix(text, gone):
                n = self.sizes[name][0]
                fix[name] = any(
                    o != name and self.sizes[o][0] > n and is_prefix(text, self.texts[o])
                    for o in head
                )
        if fix:
            self.index.set_covered(fix)

    def lookup(self, prompt: Text, min_tokens: int) -> str | None:
        """The engine's disk lookup: the longest stored text that is a byte
        prefix of the prompt (all files here are compatible: one model, quant
        and context size per run)."""
        best, best_len = None, -1
        limit = text_bytes(prompt)
        for name in self.by_head.get(prompt[0][0], ()) if prompt else ():
            tokens, n = self.sizes[name]
            if (
                best_len < n <= limit
                and tokens >= min_tokens
                and is_prefix(self.texts[name], prompt)
            ):
                best, best_len = name, n
        return best


# -- the engine ----------------------------------------------------------------


class Engine:
    """ds4-server's cache behaviour (spec §3), one live session at a time."""

    def __init__(
        self,
        params: EngineParams,
        disk: Directory,
        after_store: Callable[[str, bytes, float], None] | None = None,
    ) -> None:
        self.p = params
        self.budget = params.budget
        self.disk = disk
        self.after_store = after_store
        self.live: Text = ()
        self.live_n = 0  # tokens_of(self.live), kept to avoid recounting
        self.owner: tuple[str, int] | None = None  # (session, turn) of the live state
        self.live_tools_from: float = math.inf  # live text has tool calls past this
        self.continued_last = 0
        self.lookups = 0
        self.hits = 0
        self.saved = 0
        self.prefilled = 0

    # A request --------------------------------------------------------------

    def serve(self, r: Request, now: float) -> float:
        """Run one request from `now`; return when the reply is finished."""
        p = self.p
        tools_from: float = r.tools_from
        text, total = r.prompt, r.tokens
        if self.live and is_prefix(self.live, r.prompt):
            cached = self.live_n  # memory hit
        elif r.tools and self.owner == (r.session, r.turn - 1) and self.live:
            # The live state continues the same tool loop in memory even though
            # its sampled tool calls differ from what the client sent back.
            cached, text = self.live_n, self.live + r.suffix
            total = cached + tokens_of(r.suffix)
            tools_from = min(tools_from, self.live_tools_from)
        else:
            cached = self._switch(r, now)
        ext = EXT_TOOL_MAP if r.tools else 0

        # Prefill: a cold checkpoint when nothing was reused, continued ones at
        # every aligned frontier crossed (spec §3).
        cold = 0
        if cached == 0 and p.min_tokens <= total <= p.cold_max_tokens:
            cold = r.anchor if r.anchor >= p.min_tokens else p.store_len(total)
        step = p.continued_step
        t = now
        for pos in sorted({*self._frontiers(cached, total), *([cold] if cold else [])}):
            at = t + (pos - cached) / p.prefill_tps
            reason = Reason.COLD if pos == cold else Reason.CONTINUED
            self._store(truncate(text, pos), pos, reason, at, ext if pos > tools_from else 0)
            if pos % step == 0:  # a cold store on a frontier suppresses the continued one
                self.continued_last = max(self.continued_last, pos)
        self.prefilled += total - cached
        t += (total - cached) / p.prefill_tps

        # Generation crosses frontiers too.
        full = text + ((r.reply,) if r.reply[1] > 0 else ())
        for pos in self._frontiers(total, total + r.reply[1]):
            self._store(
                truncate(full, pos),
                pos,
                Reason.CONTINUED,
                t + (pos - total) / p.decode_tps,
                ext if pos > tools_from else 0,
            )
            self.continued_last = pos
        self.live, self.live_n, self.owner = full, total + r.reply[1], (r.session, r.turn)
        self.live_tools_from = min(tools_from, total) if r.tools else math.inf
        return t + r.reply[1] / p.decode_tps

    def _switch(self, r: Request, now: float) -> int:
        """Live miss: save the live state, then look the prompt up on disk.
        Returns the tokens loaded (0: nothing reused)."""
        p = self.p
        self.continued_last = 0
        self._save_live(Reason.EVICT, now)
        self.lookups += 1
        hit = self.disk.lookup(r.prompt, p.min_tokens)
        if hit is None:
            return 0
        loaded = self.disk.sizes[hit][0]
        self.hits += 1
        self.saved += loaded
        self.continued_last = loaded
        self.disk.touch(hit, now)
        if loaded > p.cold_max_tokens:  # the live session now owns that state
            self.disk.remove(hit, CONSUMED)
        return loaded

    def _frontiers(self, after: int, upto: int) -> range:
        """Continued positions in (after, upto] past the last continued store."""
        step = self.p.continued_step
        lo = max(after, self.continued_last, self.p.min_tokens - 1)
        return range((lo // step + 1) * step, upto + 1, step)

    # Lifecycle --------------------------------------------------------------

    def shutdown(self, now: float) -> None:
        """Clean exit: save the live state."""
        self._save_live(Reason.SHUTDOWN, now)
        self.continued_last = 0

    def _save_live(self, reason: Reason, now: float) -> None:
        """Store the live state as `evict` or `shutdown`; the session is gone."""
        ext = EXT_TOOL_MAP if self.live_n > self.live_tools_from else 0
        self._store(self.live, self.live_n, reason, now, ext)
        self.live, self.live_n, self.owner = (), 0, None
        self.live_tools_from = math.inf

    def start(self, now: float) -> None:
        """Start-up: the engine evicts down to its (maybe new) budget."""
        self._evict(self.budget, None, now)

    # The store path and the engine's own eviction ----------------------------

    def _store(self, text: Text, tokens: int, reason: Reason, now: float, ext: int) -> None:
        p = self.p
        if tokens < p.min_tokens:
            return
        raw = render(text)
        header = Header(
            quant_bits=p.quant_bits,
            reason=reason,
            ext_flags=ext,
            model_id=0,
            tokens=tokens,
            hits=0,
            ctx_size=p.ctx_size,
            abi=ABI_CURRENT,
            created_at=int(now),
            last_used=int(now),
            payload_bytes=p.size(tokens) - 52 - len(raw),
            text_bytes=len(raw),
        )
        size = header.min_file_size
        if size + -(-size // 100) > self.budget:  # the engine's 1% safety margin
            return
        name = sha1_hex(raw) + ".kv"
        if name in self.disk:  # same text already stored: only its trailer is rewritten
            return
        self._evict(self.budget - size, (text, tokens) if reason in TRIGGERS else None, now)
        self.disk.add(name, header, text, raw, now)
        if self.after_store is not None:
            self.after_store(name, raw, now)

    def _evict(self, target: int, incoming: tuple[Text, int] | None, now: float) -> None:
        """ds4_kvstore_evict: lowest (h+1)*tokens/size first (doubled for
        cold/evict/shutdown), a continued file the incoming one supersedes
        demoted by 0.05 + 0.45*h/(h+1); ties to the older last use."""
        index = self.disk.index
        total = index.total_bytes
        if total <= target or len(index) == 0:
            return
        cols = index.columns()
        names = index.names
        score = POLICIES["ds4"].score(cols, now)
        last = np.where(cols["last_used"] > 0, cols["last_used"], cols["created_at"])
        if incoming is not None:
            idle = np.maximum(now - last.astype(np.float64), 0.0)
            h = cols["hits"] * np.exp2(-idle / ENGINE_HALF_LIFE_S)
            h = np.where(h < 0.01, 0.0, h)
            text, n_in = incoming
            for i in np.flatnonzero(cols["reason"] == int(Reason.CONTINUED)):
                name = names[int(i)]
                if self.disk.sizes[name][0] < n_in and is_prefix(self.disk.texts[name], text):
                    score[i] *= 0.05 + 0.45 * h[i] / (h[i] + 1.0)
        order = np.lexsort((last, score))
        sizes = cols["size"][order]
        need = int(np.searchsorted(np.cumsum(sizes), total - target)) + 1
        victims = [names[int(i)] for i in order[:need]]
        for name in victims:
            self.disk.remove(name, ENGINE_EVICTED)


# -- kvgroomd ------------------------------------------------------------------


class Groomer:
    """kvgroomd's reaction to a landed file, using the daemon's pure core."""

    def __init__(
        self, params: GroomParams, disk: Directory, limit: Callable[[], int | None]
    ) -> None:
        if params.policy not in POLICIES:
            raise ValueError(f"unknown policy {params.policy!r} (known: {', '.join(POLICIES)})")
        self.g = params
        self.disk = disk
        self.limit = limit
        self.policy = POLICIES[params.policy]

    def landed(self, name: str, raw: bytes, now: float) -> None:
        """A snapshot landed: supersede what it makes redundant, then the budget."""
        index = self.disk.index
        snap = index.get(name)
        assert snap is not None
        if self.g.supersede:
            candidates = prefix_candidates(index, snap, strict_quant=self.g.reject_different_quant)
            if candidates:
                verdict = judge(snap, raw, candidates, now=now)
                index.set_covered(dict.fromkeys(verdict.covered, True))
                for d in verdict.superseded if snap.header.reason in TRIGGERS else ():
                    self.disk.remove(d.name, str(d.cause))
        self.enforce(now)

    def enforce(self, now: float) -> None:
        """Evict by policy when over kvgroomd's budget."""
        limit = self.limit()
        if limit is None:
            return
        budget = Budget(limit, self.g.low_watermark, self.g.protect_new)
        for d in choose(self.disk.index, budget, now, self.policy, dict(self.g.params)):
            self.disk.remove(d.name, str(d.cause))


# -- a run ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunReport:
    """What one configuration achieved on one workload."""

    label: str
    requests: int
    lookups: int
    hits: int
    tokens_saved: int  # prefill tokens served from disk
    tokens_prefilled: int  # prefill tokens computed
    bytes_written: int
    bytes_deleted_unhit: int
    peak_bytes: int
    deleted: Mapping[str, int]
    # One row per request: finish time (s), disk bytes, cumulative tokens saved,
    # the engine's budget and kvgroomd's (NaN: none) in force then.
    timeline: npt.NDArray[np.float64] = field(repr=False, compare=False)

    @property
    def hit_rate(self) -> float:
        """Disk hits per disk lookup (requests that missed the live session)."""
        return self.hits / self.lookups if self.lookups else 0.0

    def summary(self) -> dict[str, Any]:
        """Plain data for --json."""
        return {
            "label": self.label,
            "requests": self.requests,
            "lookups": self.lookups,
            "hits": self.hits,
            "hit_rate": round(self.hit_rate, 4),
            "tokens_saved": self.tokens_saved,
            "tokens_prefilled": self.tokens_prefilled,
            "gib_written": round(self.bytes_written / GiB, 3),
            "gib_deleted_unhit": round(self.bytes_deleted_unhit / GiB, 3),
            "peak_gib": round(self.peak_bytes / GiB, 3),
            "deleted": dict(self.deleted),
        }


@dataclass(frozen=True, slots=True)
class Report:
    """All runs of one workload, engine alone first."""

    workload: str
    description: str
    budget: int
    runs: tuple[RunReport, ...]

    def run(self, label: str) -> RunReport:
        """The run named `label`."""
        return next(r for r in self.runs if r.label == label)


def replay(
    w: Workload,
    groom: GroomParams | None,
    reqs: Sequence[Request] | None = None,
    trace: list[tuple[Any, ...]] | None = None,
) -> RunReport:
    """Replay the workload: the engine alone (groom=None) or with kvgroomd.
    With `trace`, every store, hit and deletion is appended to it."""
    reqs = requests(w) if reqs is None else reqs
    disk = Directory(track_covered=groom is not None)
    disk.trace = trace
    engine = Engine(w.engine, disk)
    groomer = None
    if groom is not None:
        headroom = w.headroom if w.headroom is not None else default_headroom(w.engine)
        fixed = groom.budget

        def limit() -> int | None:
            if fixed is None:
                return None
            if fixed == "auto":
                return max(engine.budget - headroom, 0)
            # A configured budget follows a budget change in proportion.
            return fixed * engine.budget // w.engine.budget

        groomer = Groomer(groom, disk, limit)
        engine.after_store = groomer.landed
    pending = list(w.restarts)

    def restart(due: float, free: float) -> float:
        """Run the restarts due by `due`, each once the server is free; return
        when it is free again."""
        while pending and pending[0].at <= due:
            rs = pending.pop(0)
            at = max(rs.at, free)
            engine.shutdown(at)
            if rs.budget is not None:
                engine.budget = rs.budget
            if groomer is not None:
                groomer.enforce(at)  # the operator reloads kvgroomd before the engine starts
            free = at + 1
            engine.start(free)
        return free

    free = 0.0
    rows = np.zeros((len(reqs), 5))
    for i, r in enumerate(reqs):
        free = restart(max(r.at, free), free)
        free = engine.serve(r, max(r.at, free))
        mine = groomer.limit() if groomer is not None else None
        rows[i] = (free, disk.index.total_bytes, engine.saved, engine.budget,
                   math.nan if mine is None else mine)  # fmt: skip
    restart(math.inf, free)
    return RunReport(
        label="engine alone" if groom is None else groom.label,
        requests=len(reqs),
        lookups=engine.lookups,
        hits=engine.hits,
        tokens_saved=engine.saved,
        tokens_prefilled=engine.prefilled,
        bytes_written=disk.bytes_written,
        bytes_deleted_unhit=disk.bytes_deleted_unhit,
        peak_bytes=disk.peak,
        deleted=dict(disk.deleted),
        timeline=rows,
    )


BASELINE = GroomParams(label="ds4+supersede", policy="ds4")
DEFAULT = GroomParams(label="default")


def compare(w: Workload, contenders: Sequence[GroomParams] = (BASELINE, DEFAULT)) -> Report:
    """The engine alone, then each kvgroomd configuration, on the same requests."""
    reqs = requests(w)
    runs = (replay(w, None, reqs), *(replay(w, g, reqs) for g in contenders))
    return Report(w.name, w.description, w.engine.budget, runs)


# -- output ----------------------------------------------------------------------


def format_table(report: Report) -> str:
    """A fixed-width table of the runs."""
    head = (
        f"{'run':<16} {'tokens saved':>13} {'vs engine':>9} {'hits':>11} {'hit rate':>8} "
        f"{'GiB written':>11} {'GiB del. unhit':>14}"
    )
    base = report.runs[0].tokens_saved
    lines = [
        f"{report.workload}: {report.description}".rstrip(": "),
        f"engine budget {report.budget / GiB:.2f} GiB",
        head,
        "-" * len(head),
    ]
    for r in report.runs:
        ratio = f"{r.tokens_saved / base:.2f}x" if base else ("-" if not r.tokens_saved else "inf")
        lines.append(
            f"{r.label:<16} {r.tokens_saved:>13,} {ratio:>9} {f'{r.hits}/{r.lookups}':>11} "
            f"{r.hit_rate:>8.1%} {r.bytes_written / GiB:>11.2f} "
            f"{r.bytes_deleted_unhit / GiB:>14.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """`kvgroomd simulate WORKLOAD [--config FILE] [--budget SIZE] [--policy NAME]
    [--plot PNG] [--json]`: replay a workload with the engine alone, with the
    `ds4` score plus supersession, and with the configured (default) policy."""
    ap = argparse.ArgumentParser(prog="kvgroomd simulate", description=main.__doc__)
    ap.add_argument("workload", help="workload YAML (see scenarios/)")
    ap.add_argument("--config", help="kvgroomd config: policy, parameters, budget, ...")
    ap.add_argument(
        "--budget", help="engine budget (--kv-disk-space-mb), e.g. 32GiB; the same in every run"
    )
    ap.add_argument("--policy", help=f"policy to try (known: {', '.join(POLICIES)})")
    ap.add_argument("--plot", metavar="PNG", help="write disk usage and tokens saved over time")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args(argv)
    from kvgroomd.config import ConfigError, load_config, parse_size  # noqa: PLC0415

    try:
        w = load_workload(args.workload)
        if args.budget:
            w = replace(w, engine=replace(w.engine, budget=parse_size(args.budget)))
        mine = DEFAULT
        if args.config:
            c = load_config(args.config)
            mine = GroomParams(
                label="config",
                policy=c.policy,
                params=dict(c.policy_params),
                budget=c.budget,  # None: the daemon would only supersede
                low_watermark=c.low_watermark,
                protect_new=c.protect_new,
                supersede=c.supersede,
                reject_different_quant=c.reject_different_quant,
            )
        if args.policy:
            if args.policy not in POLICIES:
                raise ValueError(
                    f"--policy: unknown {args.policy!r} (known: {', '.join(POLICIES)})"
                )
            mine = replace(
                mine,
                policy=args.policy,
                label=args.policy,
                params=mine.params if mine.policy == args.policy else {},
            )
    except ConfigError as e:  # exit statuses as for every command (docs/operator-tools.md)
        print(f"kvgroomd simulate: {e}", file=sys.stderr)
        return 3
    except (WorkloadError, ValueError) as e:
        print(f"kvgroomd simulate: {e}", file=sys.stderr)
        return 2
    if mine.budget is None:
        print(
            "kvgroomd simulate: the config sets no budget, so kvgroomd only supersedes "
            "and the engine's own eviction does the rest",
            file=sys.stderr,
        )
    report = compare(w, (BASELINE, mine))
    if args.json:
        print(
            json.dumps(
                {
                    "workload": w.name,
                    "budget": w.engine.budget,
                    "runs": [r.summary() for r in report.runs],
                },
                indent=2,
            )
        )
    else:
        print(format_table(report))
    if args.plot:
        from kvgroomd.sim.plot import plot_report  # noqa: PLC0415 - matplotlib only when asked

        plot_report(report, args.plot)
    return 0


__all__ = [
    "BASELINE",
    "DEFAULT",
    "Directory",
    "Engine",
    "GroomParams",
    "Groomer",
    "MiB",
    "Report",
    "RunReport",
    "compare",
    "default_headroom",
    "format_table",
    "main",
    "replay",
]
