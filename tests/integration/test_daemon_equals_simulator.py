"""What the simulator predicts is what the daemon does (#15): one script of
engine actions (stores, hits, the engine's own removals) is played against a
real daemon beside the engine emulator on a real directory, and against the
simulator's directory with its kvgroomd; both must unlink the same files for
the same causes in the same order."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from kvgroomd.core.groomer import Rules
from kvgroomd.format.header import Header, Reason
from kvgroomd.sim.groom import SimGroomer
from kvgroomd.sim.memstore import MemStore
from kvgroomd.sim.storage import ByteText
from kvgroomd.testing.engine import Engine
from tests.integration.conftest import wait_until
from tests.unit.builders import chat_text

T0 = 1_790_000_000  # the engine's clock: every header says this (ages: days)
MiB = 1 << 20


def text(seed: str, n: int) -> bytes:
    """A conversation's first n bytes: texts of one seed are prefixes of each other."""
    return chat_text(n, seed=seed)


@dataclass(frozen=True)
class Op:
    """One engine action: store `seed[:n]` as `reason` (with `tokens`), hit a
    stored text, or remove it as the engine does (consume)."""

    kind: str  # store | hit | consume
    seed: str
    n: int
    reason: Reason = Reason.CONTINUED
    tokens: int = 0


SCRIPT = [
    Op("store", "A", 2000, Reason.CONTINUED, 2048),
    Op("store", "A", 4000, Reason.CONTINUED, 4096),  # supersedes A[:2000]
    Op("store", "B", 3000, Reason.COLD, 3000),
    Op("store", "A", 6000, Reason.COLD, 6000),  # supersedes A[:4000]
    Op("hit", "B", 3000),
    Op("store", "C", 5000, Reason.EVICT, 5000),
    Op("store", "D", 9000, Reason.SHUTDOWN, 9000),  # over the budget: eviction
    Op("store", "B", 7000, Reason.CONTINUED, 7000),
    Op("consume", "D", 9000),
    Op("store", "E", 12000, Reason.EVICT, 12000),  # over the budget again
    Op("store", "B", 9500, Reason.CONTINUED, 9500),  # supersedes B[:7000]
    Op("hit", "A", 6000),
    Op("store", "F", 11000, Reason.COLD, 11000),
]
BUDGET = 260 * MiB  # the stores above are 30-175 MiB (the engine's size model)


def name_of(op: Op) -> str:
    from kvgroomd.format.header import sha1_hex  # noqa: PLC0415

    return sha1_hex(text(op.seed, op.n)) + ".kv"


def run_simulator(played: list[tuple[Op, Header | None]]) -> list[tuple[str, str]]:
    """The script through the simulator's directory and kvgroomd."""
    disk = MemStore()
    groomer = SimGroomer(Rules(budget=BUDGET, protect_new=0), disk, reconcile_interval=1e9)
    disk.watcher = groomer
    for op, header in played:
        now = time.time()
        name = name_of(op)
        if op.kind == "store":
            assert header is not None
            disk.write(name, header, ByteText(text(op.seed, op.n)), b"", now)
        elif op.kind == "hit":
            assert header is not None
            disk.touch(name, header, now)
        else:
            disk.delete(name, "consume", now)
    return groomer.unlinked


def test_the_daemon_unlinks_what_the_simulator_predicts(tmp_path: Path, start_daemon) -> None:
    """Same script, same headers: the same unlinks (names, causes, order)."""
    cache = tmp_path / "kv"
    cache.mkdir()
    d = start_daemon(cache_dir=cache, budget=BUDGET, protect_new=0, reconcile_interval=3600,
                     log={"format": "json", "level": "debug"})  # fmt: skip
    engine = Engine(cache, clock=lambda: float(T0), sparse=True)
    played: list[tuple[Op, Header | None]] = []
    for op in SCRIPT:
        name = name_of(op)
        if op.kind != "store" and not (cache / name).exists():
            continue  # kvgroomd removed it first: nothing to hit or consume (nor in the sim)
        header: Header | None = None
        if op.kind == "store":
            header = engine._header(text(op.seed, op.n), op.tokens, op.reason)  # what store writes
            path = engine.store(text(op.seed, op.n), op.tokens, op.reason)
            assert path.name == name
            d.wait_for("snapshot.added", sha=name[:40])
        elif op.kind == "hit":
            header = engine.touch(name)
            d.wait_for("snapshot.updated", sha=name[:40], hits=header.hits)  # type: ignore[union-attr]
        else:
            engine.files.delete(name, "consume", float(T0))
            d.wait_for("snapshot.removed", sha=name[:40])
        played.append((op, header))  # what the engine wrote, for the simulator's directory
        time.sleep(0.05)  # the daemon's decisions for this event, before the next one
    predicted = run_simulator(played)
    assert len(predicted) >= 6, predicted  # the script exercises both causes
    assert {c for _, c in predicted} == {"superseded", "budget"}
    wait_until(lambda: len(d.events("snapshot.unlinked")) >= len(predicted))
    assert d.stop() == 0
    done = [(Path(r["path"]).name, r["cause"]) for r in d.events("snapshot.unlinked")]
    assert done == predicted, (done, predicted)
