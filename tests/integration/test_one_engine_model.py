"""One engine model: the simulator's in-memory directory and the emulator's
real one give the same stores, hits and deletions, in the same order."""

from __future__ import annotations

from pathlib import Path

import pytest

from kvgroomd.format.header import Header
from kvgroomd.sim.agents import Interleaved, chat_traffic, interleaved
from kvgroomd.sim.engine import EngineModel, EngineParams
from kvgroomd.sim.memstore import MemStore
from kvgroomd.sim.replay import drive, replay
from kvgroomd.sim.server import Server
from kvgroomd.sim.storage import Storage
from kvgroomd.sim.texts import EMPTY, SegText
from kvgroomd.sim.workload import Workload, requests
from kvgroomd.testing.dirstore import DirStore
from kvgroomd.testing.traffic import chats

GiB = 1 << 30
CAUSES = {"evict": "engine", "startup": "engine", "consume": "consumed", "replace": "replaced"}


def run(w: Workload, storage: Storage, variant: str = "current") -> Server[SegText]:
    model = EngineModel(storage, w.engine, budget=w.engine.budget, variant=variant)  # type: ignore[arg-type]
    server: Server[SegText] = Server(model, EMPTY)
    drive(server, requests(w), w.restarts)
    return server


def events_of_memory(trace: list[tuple[object, ...]]) -> list[tuple[str, str, str]]:
    out = []
    for e in trace:
        if e[0] == "store":
            out.append(("store", str(e[1]), str(e[3])))
        elif e[0] == "delete":
            out.append(("unlink", str(e[1]), str(e[2])))
        elif e[0] == "hit":
            out.append(("hit", str(e[1]), str(e[3])))
    return out


def events_of_journal(records: list[dict[str, object]]) -> list[tuple[str, str, str]]:
    out = []
    for r in records:
        if r["op"] == "store":
            out.append(("store", str(r["name"]), str(r["reason"])))
        elif r["op"] == "unlink":
            out.append(("unlink", str(r["name"]), CAUSES.get(str(r["cause"]), str(r["cause"]))))
        elif r["op"] == "hit":
            out.append(("hit", str(r["name"]), str(r["reason"])))
    return out


@pytest.mark.parametrize(("seed", "variant"), [(2, "current"), (4, "current"), (3, "legacy")])
def test_memory_and_directory_backends_agree(tmp_path: Path, seed: int, variant: str) -> None:
    """An interleaved workload under a tight budget (engine evictions, consumed
    documents, evict saves) runs event for event the same on both backends."""
    w = interleaved(seed, Interleaved(requests=40, documents=None, doc_share=0.15, doc_questions=2,
                                      budget=3 * GiB))
    memory = MemStore()
    memory.trace = []
    files = DirStore(tmp_path / "kv", variant=variant)  # type: ignore[arg-type]
    a, b = run(w, memory, variant), run(w, files, variant)
    mine = events_of_memory(memory.trace)
    theirs = events_of_journal(files.records)
    assert mine == theirs
    causes = {e[2] for e in mine if e[0] == "unlink"}
    assert "engine" in causes  # the run exercised the engine's eviction
    assert variant == "legacy" or "consumed" in causes  # and a consumed document
    assert (a.saved, a.prefilled, a.hits, a.lookups) == (b.saved, b.prefilled, b.hits, b.lookups)
    # And the files left are those the memory directory holds, header for header.
    left = {e.name: e.header for e in files.entries()}
    assert left == {n: h for n in memory.texts if (h := _header(memory, n)) is not None}


def _header(memory: MemStore, name: str) -> Header | None:
    found = memory.entry(name)
    return None if found is None else found[0]


def test_unbounded_engine_never_deletes(tmp_path: Path) -> None:
    """Without a budget the model never evicts; only consumption removes files."""
    w = interleaved(4, Interleaved(requests=30))
    memory = MemStore()
    model = EngineModel(memory, w.engine, budget=None)
    drive(Server(model, EMPTY), requests(w), w.restarts)
    assert set(memory.deleted) <= {"consumed"}
    assert EngineParams().size(10240) == model.params.size(10240)


def test_chat_traffic_is_the_traffic_generators(tmp_path: Path) -> None:
    """`kvgroomd simulate chat-traffic` replays the requests of
    `python -m kvgroomd.testing.traffic` (the emulator with rendered chats):
    the engine alone serves the same prompt tokens from disk, hit for hit."""
    budget = 400 << 20
    live = chats(tmp_path, seed=5, requests=40, budget=budget, gap=0.0)
    sim = replay(chat_traffic(5, EngineParams(budget=budget, ctx_size=32768), requests=40), None)
    assert live.hits > 5
    assert (sim.tokens_saved, sim.hits, sim.lookups, sim.tokens_prompt) == (
        live.saved, live.hits, live.lookups, live.prompt_tokens)
