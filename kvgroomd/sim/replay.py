"""The simulator: replay a workload through ds4's disk cache, with and without us.

Pure. `replay(workload, groom)` runs every request through the engine model
(`kvgroomd.sim.server` over `kvgroomd.sim.engine`, the same model the engine
emulator process runs on a real directory) with the simulator's in-memory
directory (`kvgroomd.sim.memstore`). With `groom` set, kvgroomd acts after
each store with the very code the daemon runs (`supersede.prefix_candidates`/
`judge`, `evict.choose`, `scoring.POLICIES`) over a real `Index` of fake
fingerprints. Sizes follow spec §6.

Counted per run (`kvgroomd.sim.report`): prompt tokens served from cache
(live session or disk) and from disk, disk hits per lookup, bytes written,
and bytes deleted without ever serving a hit (written for nothing).
`kvgroomd.sim.cli` is the `kvgroomd simulate` command.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from kvgroomd.core.evict import Budget, choose
from kvgroomd.core.scoring import DEFAULT_POLICY, POLICIES
from kvgroomd.core.supersede import TRIGGERS, judge, prefix_candidates
from kvgroomd.sim.engine import EngineModel, EngineParams
from kvgroomd.sim.memstore import MemStore
from kvgroomd.sim.report import ALONE, UNBOUNDED, Report, RunReport
from kvgroomd.sim.server import Server
from kvgroomd.sim.texts import EMPTY, SegText
from kvgroomd.sim.workload import Request, Restart, Workload, requests


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


# -- kvgroomd ------------------------------------------------------------------


class Groomer:
    """kvgroomd's reaction to a landed file, using the daemon's pure core."""

    def __init__(
        self, params: GroomParams, disk: MemStore, limit: Callable[[], int | None]
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
                    self.disk.delete(d.name, str(d.cause), now)
        self.enforce(now)

    def enforce(self, now: float) -> None:
        """Evict by policy when over kvgroomd's budget."""
        limit = self.limit()
        if limit is None:
            return
        budget = Budget(limit, self.g.low_watermark, self.g.protect_new)
        for d in choose(self.disk.index, budget, now, self.policy, dict(self.g.params)):
            self.disk.delete(d.name, str(d.cause), now)


# -- a run ---------------------------------------------------------------------


def replay(
    w: Workload,
    groom: GroomParams | None,
    reqs: Sequence[Request] | None = None,
    trace: list[tuple[Any, ...]] | None = None,
    *,
    unbounded: bool = False,
) -> RunReport:
    """Replay the workload: the engine alone (groom=None), without any budget
    (`unbounded`), or with kvgroomd. With `trace`, every store, hit and
    deletion is appended to it."""
    reqs = requests(w) if reqs is None else reqs
    disk = MemStore(track_covered=groom is not None)
    disk.trace = trace
    model = EngineModel(disk, w.engine, budget=None if unbounded else w.engine.budget)
    server: Server[SegText] = Server(model, EMPTY)
    groomer = None
    if groom is not None:
        headroom = w.headroom if w.headroom is not None else default_headroom(w.engine)
        fixed = groom.budget

        def limit() -> int | None:
            if fixed is None or model.budget is None:
                return None
            if fixed == "auto":
                return max(model.budget - headroom, 0)
            # A configured budget follows a budget change in proportion.
            return fixed * model.budget // w.engine.budget

        groomer = Groomer(groom, disk, limit)
        model.on_store = groomer.landed
    enforce = None if groomer is None else groomer.enforce
    rows = drive(server, reqs, w.restarts, budgets=not unbounded, before_start=enforce,
                 usage=lambda: disk.index.total_bytes,
                 limit=None if groomer is None else groomer.limit)  # fmt: skip
    label = UNBOUNDED if unbounded else ALONE if groom is None else groom.label
    return RunReport(
        label=label,
        requests=len(reqs),
        lookups=server.lookups,
        hits=server.hits,
        tokens_saved=server.saved,
        tokens_prefilled=server.prefilled,
        tokens_prompt=server.prompt_tokens,
        bytes_written=disk.bytes_written,
        bytes_deleted_unhit=disk.bytes_deleted_unhit,
        peak_bytes=disk.peak,
        deleted=dict(disk.deleted),
        timeline=rows,
    )


def drive(server: Server[SegText], reqs: Sequence[Request], restarts: Sequence[Restart], *,
          budgets: bool = True, before_start: Callable[[float], None] | None = None,
          usage: Callable[[], int] | None = None,
          limit: Callable[[], int | None] | None = None) -> npt.NDArray[np.float64]:  # fmt: skip
    """Serve `reqs` in order, each once the server is free, with the clean
    restarts (`budgets`: and their budget changes) in between; `before_start`
    runs while the server is down (the operator reloads kvgroomd first).
    Returns one row per request: finish time, `usage()` then, tokens saved
    so far, the engine's budget and kvgroomd's (`limit()`; NaN: none)."""
    pending = list(restarts)
    model = server.model

    def restart(due: float, free: float) -> float:
        while pending and pending[0].at <= due:
            rs = pending.pop(0)
            at = max(rs.at, free)
            server.shutdown(at)
            if rs.budget is not None and budgets and model.budget is not None:
                model.budget = rs.budget
            if before_start is not None:
                before_start(at)
            free = at + 1
            server.start(free)
        return free

    free = 0.0
    rows = np.zeros((len(reqs), 5))
    for i, r in enumerate(reqs):
        free = restart(max(r.at, free), free)
        free = server.serve(r.as_turn(), max(r.at, free))
        mine = None if limit is None else limit()
        rows[i] = (free, usage() if usage is not None else 0, server.saved,
                   math.nan if model.budget is None else model.budget,
                   math.nan if mine is None else mine)  # fmt: skip
    restart(math.inf, free)
    return rows


BASELINE = GroomParams(label="ds4+supersede", policy="ds4")
DEFAULT = GroomParams(label="default")


def compare(w: Workload, contenders: Sequence[GroomParams] = (BASELINE, DEFAULT), *,
            unbounded: bool = False) -> Report:  # fmt: skip
    """The engine alone (and without budget, with `unbounded`), then each
    kvgroomd configuration, on the same requests."""
    reqs = requests(w)
    runs = [replay(w, None, reqs)]
    if unbounded:
        runs.append(replay(w, None, reqs, unbounded=True))
    runs += [replay(w, g, reqs) for g in contenders]
    return Report(w.name, w.description, w.engine.budget, tuple(runs))


__all__ = ["BASELINE", "DEFAULT", "GroomParams", "Groomer", "compare", "default_headroom",
           "drive", "replay"]
