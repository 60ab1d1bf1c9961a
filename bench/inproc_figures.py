"""Figures measured in the bench process, on kvgroomd's own functions.

* victims: `evict.ranking` / `evict.choose` / `evict.plan` over a 100,000-row index;
* SHA-1 checks: the core's landing of one new snapshot against 1..1000
  candidates that are all true prefixes of its text (the worst case), against
  hashing each candidate's prefix separately;
* engine vs index: what one store costs the engine (re-read every header in
  the directory, as `ds4_kvstore_evict` does) against what it costs kvgroomd
  (`DiskGroomer.landed` on the new file, with its index of the directory).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import median
from kvgroomd.config import Config
from kvgroomd.core.decision import Fingerprint
from kvgroomd.core.deferral import Deferred
from kvgroomd.core.evict import Budget, choose, plan, ranking
from kvgroomd.core.groomer import Groomer as CoreGroomer
from kvgroomd.core.groomer import Rules
from kvgroomd.core.index import Snapshot
from kvgroomd.core.scoring import POLICIES, Clock
from kvgroomd.daemon.groom import DiskGroomer as Groomer
from kvgroomd.format.header import PREFIX_BYTES, Header, Reason, sha1_hex
from kvgroomd.testing.engine import Engine, conversation, system_prompt


class NullLog:
    """A logger that drops everything (the figures are about the work, not JSON)."""

    def __getattr__(self, _name: str) -> Any:
        return lambda *a, **kw: None


def groomer(directory: Path, *, supersede: bool = True) -> tuple[Groomer, float]:
    """A Groomer with its index built from a start-up reconcile (dry run:
    the directory is left as it is). Returns it and the seconds the scan took."""
    config = Config(cache_dir=directory, dry_run=True, supersede=supersede)
    g = Groomer(config, NullLog())
    t = time.perf_counter()
    g.reconcile(time.time(), startup=True)
    return g, time.perf_counter() - t


def groom_once(directory: Path) -> dict[str, int]:
    """One real pass (supersession) over a freshly populated directory."""
    g = Groomer(Config(cache_dir=directory, supersede=True), NullLog())
    g.reconcile(time.time(), startup=True)
    return dict(g.totals.unlinked)


def timed(fn: Any, repeat: int) -> tuple[float, Any]:
    """Median seconds of `repeat` calls, and the last result."""
    times = []
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return median(times), out


def victims(g: Groomer, repeat: int = 5) -> dict[str, Any]:
    """Ranking and victim choice over the whole index: one victim (a store
    just over the budget, low watermark 1.0) and a pass to the 0.9 watermark;
    `select_ms` is the choice without building Decision objects."""
    now = time.time()
    policy = POLICIES["prefill"]
    cols = g.index.columns()
    total = g.index.total_bytes
    clock = Clock(now)
    rank_s, _ = timed(lambda: ranking(cols, clock, policy, None, 120.0), repeat)
    one, low = Budget(total - 1, 1.0, 120.0), Budget(total - 1, 0.9, 120.0)
    one_s, one = timed(lambda: choose(g.index, one, clock, policy), repeat)
    low_s, low = timed(lambda: choose(g.index, low, clock, policy), repeat)
    # With the engine's budget binding: the same pass, leaving to the engine
    # what it evicts first (core/deferral.py), and the re-check of that order
    # a later pass makes.
    binding = Budget(total - 1, 0.9, 120.0, ceiling=total + (1 << 30))
    left_s, left = timed(lambda: plan(g.index, binding, clock, policy), repeat)
    deferred = Deferred()
    deferred.leave(left.left)
    check_s, _ = timed(lambda: deferred.still_first(g.index, clock), repeat)
    select_s = None
    try:
        from kvgroomd.core.evict import _cheapest, protected  # noqa: PLC0415

        def select() -> Any:
            values = policy.score(cols, Clock(now), None)
            values = np.where(protected(cols, Clock(now), 120.0), np.inf, values)
            return _cheapest(cols, values, total - int((total - 1) * 0.9))

        select_s, _ = timed(select, repeat)
    except ImportError:
        pass
    return {
        "entries": len(g.index),
        "ranking_ms": rank_s * 1e3,
        "one_victim_ms": one_s * 1e3,
        "one_victim_n": len(one),
        "watermark_ms": low_s * 1e3,
        "watermark_n": len(low),
        "select_ms": select_s * 1e3 if select_s is not None else None,
        "left_pass_ms": left_s * 1e3,
        "left_n": len(left.left),
        "left_check_ms": check_s * 1e3,
    }


def sha_checks(text_bytes: int = 256 * 1024, ks: tuple[int, ...] = (1, 10, 100, 1000),
               repeat: int = 7) -> list[dict[str, Any]]:  # fmt: skip
    """The core's landing of one new snapshot vs k indexed candidates, all
    true prefixes of it (one SHA-1 pass over the new text, whatever k)."""
    conv = conversation(7, text_bytes // 4 + 1000)
    text = conv.text()[:text_bytes]
    now = time.time()

    def snap(t: bytes, reason: Reason) -> Snapshot:
        h = Header(quant_bits=2, reason=reason, ext_flags=0, model_id=0, tokens=len(t) // 4 + 1,
                   hits=0, ctx_size=32768, abi=2, created_at=int(now) - 3600,
                   last_used=int(now) - 3600, payload_bytes=1 << 20, text_bytes=len(t))  # fmt: skip
        name = f"{sha1_hex(t)}.kv"
        seen = Fingerprint(1, hash(name) & 0xFFFFFFFF, PREFIX_BYTES + len(t) + (1 << 20), 0)
        return Snapshot(name, name[:40], h, seen)

    class OneText:
        def text(self, s: Snapshot) -> bytes | None:
            return text if s.name == new.name else None

    new = snap(text, Reason.CONTINUED)
    out = []
    for k in ks:
        lengths = [len(text) * (i + 1) // (k + 1) for i in range(k)]  # spread over the text
        cands = [snap(text[:n], Reason.CONTINUED) for n in lengths]
        times, decided = [], 0
        for _ in range(repeat):
            core = CoreGroomer(Rules())
            for c in cands:
                core.index.put(c)
            t0 = time.perf_counter()
            decided = len(core.landed(new, OneText(), now).decisions)  # type: ignore[arg-type]
            times.append(time.perf_counter() - t0)

        def naive(c: list[int] = lengths) -> int:
            hashed = 0
            for n in c:
                hashlib.sha1(text[:n], usedforsecurity=False).hexdigest()
                hashed += n
            return hashed

        naive_s, hashed = timed(naive, max(1, repeat // 3))
        out.append({
            "candidates": k,
            "verified": decided,
            "landing_ms": median(times) * 1e3,
            "bytes_hashed": len(text),
            "naive_ms": naive_s * 1e3,
            "naive_bytes_hashed": hashed,
        })  # fmt: skip
    return out


def engine_rescan_lean(directory: Path) -> int:
    """The engine's per-store work as a lean loop (its syscall floor in
    Python): list the directory, open each file, read 52 bytes, stat, close."""
    n = 0
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for name in os.listdir(dfd):
            if not name.endswith(".kv"):
                continue
            fd = os.open(name, os.O_RDONLY, dir_fd=dfd)
            try:
                raw = os.pread(fd, PREFIX_BYTES, 0)
                os.fstat(fd)
            finally:
                os.close(fd)
            if len(raw) == PREFIX_BYTES and struct.unpack_from("<I", raw, 8)[0]:
                n += 1
    finally:
        os.close(dfd)
    return n


def engine_rescan_emulator(engine: Engine) -> int:
    """The emulator's own pass: re-read every header, score them all (evict_to)."""
    listing = engine.files.listing()
    engine.model.scores(listing, engine.now())
    return len(listing.names)


def engine_vs_index(g: Groomer, directory: Path, *, system_seed: int, stores: int = 15,
                    engine_repeat: int = 3) -> dict[str, Any]:  # fmt: skip
    """Per-store cost: the engine's full re-read vs kvgroomd's event handling."""
    engine = Engine(directory, sparse=True)
    lean_s, n = timed(lambda: engine_rescan_lean(directory), engine_repeat)
    emu_s, _ = timed(lambda: engine_rescan_emulator(engine), max(1, engine_repeat - 1))
    # kvgroomd: a continued store whose text shares the directory's system
    # prompt (so the whole index is in its text-head bucket), handled in-process.
    system = system_prompt(system_seed, 64)
    lead = b"".join(system)
    body = conversation(99, 12000, system=system).text()[len(lead) :]
    per_store = []
    written = []
    try:
        for i in range(stores):
            text = lead + f" ratio store {i}:".encode() + body
            path = engine.store(text, 10240, Reason.CONTINUED)
            written.append(path)
            t = time.perf_counter()
            g.landed(path.name, time.time())
            per_store.append(time.perf_counter() - t)
    finally:
        for p in written:
            p.unlink(missing_ok=True)
            g.gone(p.name)
    k = median(per_store)
    return {
        "files": n,
        "engine_lean_ms": lean_s * 1e3,
        "engine_emulator_ms": emu_s * 1e3,
        "kvgroomd_ms": k * 1e3,
        "ratio_lean": lean_s / k,
        "ratio_emulator": emu_s / k,
    }


def reconcile_costs(g: Groomer) -> dict[str, Any]:
    """The periodic rescan (every reconcile_interval, 300 s by default): with
    nothing changed (lstat of every file, no sweep) and after a change (the
    sweep re-reads every chain file's text head for its probes)."""
    out: dict[str, Any] = {"entries": len(g.index)}
    t, c = time.perf_counter(), time.process_time()
    g.reconcile(time.time())
    out["unchanged_s"], out["unchanged_cpu_s"] = time.perf_counter() - t, time.process_time() - c
    g.core.chains.again()  # as after any landing, removal or replacement
    t, c = time.perf_counter(), time.process_time()
    g.reconcile(time.time())
    out["changed_s"], out["changed_cpu_s"] = time.perf_counter() - t, time.process_time() - c
    return out


def index_bytes(g: Groomer) -> dict[str, Any]:
    """What the index itself holds (numpy rows; Python containers are measured
    as the process RSS by the daemon figures)."""
    cols = g.index.columns()
    return {"row_bytes": cols.dtype.itemsize, "entries": len(cols)}


def with_supersede(g: Groomer, on: bool) -> None:
    g.reconfigure(dataclasses.replace(g.config, supersede=on))
