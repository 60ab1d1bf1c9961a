"""The simulator: replay a workload through ds4's disk cache, with and without us.

Pure. `replay(workload, groom)` runs every request through the engine model
(`kvgroomd.sim.server` over `kvgroomd.sim.engine`, the same model the engine
emulator process runs on a real directory) with the simulator's in-memory
directory (`kvgroomd.sim.memstore`). With `groom` set, kvgroomd is the
daemon's own decision core (`core.groomer.Groomer`), driven by
`kvgroomd.sim.groom.SimGroomer`: it hears every landing, touch and removal
as the daemon hears inotify, rescans on the daemon's interval, and its
decisions are carried out in the directory. Sizes follow spec §6.

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

from kvgroomd.core.groomer import Rules
from kvgroomd.core.scoring import DEFAULT_POLICY, POLICIES
from kvgroomd.sim.engine import EngineModel, EngineParams
from kvgroomd.sim.groom import SimGroomer
from kvgroomd.sim.memstore import MemStore
from kvgroomd.sim.report import ALONE, UNBOUNDED, Report, RunReport
from kvgroomd.sim.server import Server
from kvgroomd.sim.texts import EMPTY, SegText
from kvgroomd.sim.workload import Request, Restart, Workload, requests


@dataclass(frozen=True, slots=True)
class GroomParams:
    """What kvgroomd does in a run: the part of Config the simulator uses.

    The defaults are the daemon's default config plus `engine_budget`: kvgroomd
    knows the engine's budget and keeps the room the engine's next store
    needs (core/headroom.py). `budget` is the optional cap (bytes, scaled with
    a restart's budget change); "auto" is the engine's budget minus the
    workload's fixed `headroom` (what the docs recommended before
    engine_budget). With neither, kvgroomd only supersedes.
    """

    label: str = "kvgroomd"
    policy: str = DEFAULT_POLICY
    params: Mapping[str, float] = field(default_factory=dict)
    budget: int | Literal["auto"] | None = None
    low_watermark: float = 0.9
    protect_new: float = 0.0
    supersede: bool = True
    reject_different_quant: bool = False
    engine_budget: bool = True  # kvgroomd is told the engine's budget (config engine_budget)
    # The daemon acts this long after a store lands (inotify, reading the new
    # file): engine actions within that time (an evict save and the lookup
    # right after it, a burst of stores at instant prefill) come first.
    latency: float = 0.005


def default_headroom(engine: EngineParams) -> int:
    """Room kept free for the engine's next store when the config gives no budget.

    The largest file written in one go in everyday use is a cold or continued
    store of up to `cold_max_tokens` plus one continued step; bigger `evict`
    and `shutdown` saves then make the engine evict by its own score, which the
    replay shows honestly. Never more than a quarter of the budget.
    """
    return min(engine.size(engine.cold_max_tokens + engine.continued_step), engine.budget // 4)


# -- kvgroomd ------------------------------------------------------------------


def rules_of(g: GroomParams, limit: int | None, engine: int | None,
             cold_max_tokens: int) -> Rules:  # fmt: skip
    """The decision core's rules for a run: `limit` the budget cap, `engine`
    the engine's budget (given to kvgroomd when `g.engine_budget`), and the
    engine's cold_max_tokens (as config.Config.rules() passes them)."""
    params = dict(g.params)
    if "consume_tokens" in POLICIES[g.policy].defaults:
        params.setdefault("consume_tokens", float(cold_max_tokens))
    return Rules(supersede=g.supersede, strict_quant=g.reject_different_quant, budget=limit,
                 engine_budget=engine if g.engine_budget else None,
                 low_watermark=g.low_watermark, protect_new=g.protect_new, policy=g.policy,
                 policy_params=params, cold_max_tokens=cold_max_tokens)  # fmt: skip


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
    disk = MemStore()
    disk.trace = trace
    model = EngineModel(disk, w.engine, budget=None if unbounded else w.engine.budget)
    server: Server[SegText] = Server(model, EMPTY)
    groomer = None
    if groom is not None:
        if groom.policy not in POLICIES:
            raise ValueError(f"unknown policy {groom.policy!r} (known: {', '.join(POLICIES)})")
        headroom = w.headroom if w.headroom is not None else default_headroom(w.engine)

        def limit() -> int | None:
            if groom.budget is None or model.budget is None:
                return None
            if groom.budget == "auto":
                return max(model.budget - headroom, 0)
            # A configured budget follows a budget change in proportion.
            return groom.budget * model.budget // w.engine.budget

        cold_max = w.engine.cold_max_tokens
        groomer = SimGroomer(rules_of(groom, limit(), model.budget, cold_max), disk,
                             latency=groom.latency)  # fmt: skip
        disk.watcher = groomer
        server.wait = groomer.advance  # kvgroomd acts between the engine's actions

    def reload(at: float) -> None:  # the operator reloads kvgroomd before the engine starts
        if groomer is not None and groom is not None:
            groomer.advance(at)
            groomer.reconfigure(rules_of(groom, limit(), model.budget, cold_max), at)

    rows = drive(server, reqs, w.restarts, budgets=not unbounded, t0=SIM_EPOCH,
                 before_start=None if groomer is None else reload,
                 before_request=None if groomer is None else groomer.tick,
                 usage=lambda: disk.index.total_bytes, files=lambda: len(disk.index),
                 limit=None if groomer is None else groomer.core.limit)  # fmt: skip
    if groomer is not None:
        groomer.advance(math.inf)  # the last reactions
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
          before_request: Callable[[float], None] | None = None,
          usage: Callable[[], int] | None = None, files: Callable[[], int] | None = None,
          limit: Callable[[], int | None] | None = None,
          t0: float = 0.0) -> npt.NDArray[np.float64]:  # fmt: skip
    """Serve `reqs` in order, each once the server is free, with the clean
    restarts (`budgets`: and their budget changes) in between; `before_start`
    runs while the server is down (the operator reloads kvgroomd first),
    `before_request` before each request (kvgroomd's timers). The workload's
    time 0 is `t0` on the clocks (the engine's header times, kvgroomd's now).
    Returns one row per request: finish time (from the workload's 0),
    `usage()` then, tokens saved so far, the engine's budget and kvgroomd's
    (`limit()`; NaN: none), and the snapshots on disk (`files()`)."""
    pending = list(restarts)
    model = server.model

    def restart(due: float, free: float) -> float:
        while pending and pending[0].at + t0 <= due:
            rs = pending.pop(0)
            at = max(rs.at + t0, free)
            server.shutdown(at)
            if rs.budget is not None and budgets and model.budget is not None:
                model.budget = rs.budget
            if before_start is not None:
                before_start(at)
            free = at + 1
            server.start(free)
        return free

    free = t0
    rows = np.zeros((len(reqs), 6))
    for i, r in enumerate(reqs):
        arrival = r.at + t0
        free = restart(max(arrival, free), free)
        if before_request is not None:
            before_request(max(arrival, free))
        free = server.serve(r.as_turn(), max(arrival, free))
        mine = None if limit is None else limit()
        rows[i] = (free - t0, usage() if usage is not None else 0, server.saved,
                   math.nan if model.budget is None else model.budget,
                   math.nan if mine is None else mine,
                   files() if files is not None else 0)  # fmt: skip
    restart(math.inf, free)
    return rows


BASELINE = GroomParams(label="ds4+supersede", policy="ds4")
# The simulator's clock starts at a realistic Unix time: the engine reads a
# header time of 0 as "never used" (no hit decay), which a clock starting at
# 0 would hit in the first second, and a live run never does.
SIM_EPOCH = 1_800_000_000.0
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


__all__ = ["BASELINE", "DEFAULT", "GroomParams", "compare", "default_headroom", "drive",
           "replay", "rules_of"]
