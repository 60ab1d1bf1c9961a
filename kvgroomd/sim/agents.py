"""Interleaved agent traffic, and workloads written to break a cache policy.

Pure. `interleaved()` is the workload family of the cache-value issue: a few
conversations (agent chats and tool sessions, whose client sends back a
re-rendered reply so a saved live session never matches the next prompt)
sharing one system prompt, a session switch on most requests, and long
one-shot documents. The adversarial generators (`ADVERSARIAL`) each stress
one way a policy can fail: bursts of documents, many tiny anchors, long idle
gaps before a conversation resumes, one hot anchor under a flood, budget
cuts, very slow and very fast paces, and conversations whose saves grow to
most of the budget (`chat-traffic`, the emulator's traffic generator's).
Each is seeded; none is tuned for a policy.

Requests arrive `interval` seconds apart; the replay serves them in order, each
once the server is free, so the pace is `interval` plus prefill and
generation at the engine's `prefill_tps` and `decode_tps` (`PACES`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from kvgroomd.sim.engine import EngineParams, MiB
from kvgroomd.sim.workload import Restart, Session, Workload

GiB = 1 << 30

# Paces: (prefill tokens/s, generation tokens/s, seconds between arrivals).
PACES: dict[str, tuple[float, float, float]] = {
    "instant": (math.inf, math.inf, 0.2),  # the first pace
    "3000": (3000.0, math.inf, 0.2),  # prefill at 3,000 tokens/s, replies instant
}


def paced(engine: EngineParams, pace: str) -> EngineParams:
    """`engine` with the prefill and generation speeds of `pace`."""
    prefill, decode, _ = PACES[pace]
    return replace(engine, prefill_tps=prefill, decode_tps=decode)


@dataclass
class _Conv:
    start: float
    first: int
    system: str | None
    context: str | None
    tools: bool
    times: list[float] = field(default_factory=list)
    users: list[int] = field(default_factory=list)
    replies: list[int] = field(default_factory=list)


class Plan:
    """Requests by conversation, in arrival order; `sessions()` makes the
    Session values whose expansion (`workload.requests`) gives them back."""

    def __init__(self) -> None:
        self.convs: dict[str, _Conv] = {}

    def turn(self, cid: str, at: float, user: int, reply: int, *, system: str | None = None,
             context: str | None = None, tools: bool = False) -> None:  # fmt: skip
        """One request of conversation `cid` at `at` (its first fixes system,
        context and tools). Times are rounded to the microsecond: 15 * 0.2 must
        be 3 s exactly, so that whole-second header times do not depend on
        how far from zero the clock is (the simulator's starts at 0, a live
        run's at the epoch)."""
        at = round(at, 6)
        c = self.convs.get(cid)
        if c is None:
            c = self.convs[cid] = _Conv(at, user, system, context, tools)
        else:
            c.users.append(user)
        c.times.append(at)
        c.replies.append(reply)

    def turns(self, cid: str) -> int:
        """Requests of `cid` so far."""
        c = self.convs.get(cid)
        return 0 if c is None else len(c.times)

    def sessions(self) -> tuple[Session, ...]:
        """One Session per conversation."""
        out = []
        for cid, c in self.convs.items():
            gaps = tuple(b - a for a, b in zip(c.times, c.times[1:], strict=False)) or (0.0,)
            out.append(Session(id=cid, start=c.start, turns=len(c.times), system=c.system,
                               context=c.context, first=c.first, user=tuple(c.users) or (0,),
                               reply=tuple(c.replies), gap=gaps, tools=c.tools))  # fmt: skip
        return tuple(out)


@dataclass(frozen=True, slots=True)
class Interleaved:
    """Parameters of the interleaved-agent generator (defaults: the issue's)."""

    conversations: int = 8
    tool_share: float = 0.375  # share of conversations that are tool sessions (3 of 8)
    system: int = 5000  # tokens of the shared system prompt
    user: tuple[int, int] = (300, 2500)  # tokens of a user (or tool result) turn
    reply: tuple[int, int] = (200, 1500)  # tokens of a reply
    doc_share: float = 0.1  # chance that a request asks about a new document
    documents: int | None = 4  # exactly this many new documents (None: doc_share per request)
    doc_tokens: tuple[int, int] = (35_000, 60_000)
    doc_questions: int = 1  # questions per document (later ones at random later requests)
    doc_system: bool = False  # documents come after the shared system prompt too
    question: tuple[int, int] = (50, 300)  # tokens of a question after the document
    requests: int = 80
    switch: float = 0.8  # chance that a conversation request goes to another conversation
    interval: float = 0.2  # seconds between request arrivals
    budget: int = 4 * GiB


def interleaved(seed: int = 1, p: Interleaved | None = None,
                engine: EngineParams | None = None, pace: str = "instant") -> Workload:  # fmt: skip
    """The seeded interleaved-agent workload (see the module docstring)."""
    p = p or Interleaved()
    rng = random.Random(f"interleaved-{seed}")
    eng = paced(engine or EngineParams(budget=p.budget), pace)
    interval = p.interval
    texts = {"agent-sys": p.system}
    plan = Plan()
    tooled = set(rng.sample(range(p.conversations), round(p.tool_share * p.conversations)))
    tools = {f"c{i}": i in tooled for i in range(p.conversations)}
    current: str | None = None
    pending: list[tuple[int, str]] = []  # (request index, document) of later questions
    ndocs, owed = 0, 0  # documents so far; new ones pushed back by due questions
    fixed = (set(rng.sample(range(p.requests), min(p.documents, p.requests)))
             if p.documents is not None else None)  # fmt: skip
    for i in range(p.requests):
        at = i * interval
        owed += rng.random() < p.doc_share if fixed is None else i in fixed
        pending.sort()
        if pending and pending[0][0] <= i:  # a later question on a document, when due
            doc = pending.pop(0)[1]
        elif owed:
            owed -= 1
            ndocs += 1
            doc = f"doc-{ndocs}"
            texts[doc] = rng.randint(*p.doc_tokens)
            for _ in range(p.doc_questions - 1):
                pending.append((rng.randint(i + 1, i + 1 + p.requests // 4), doc))
        else:
            doc = ""
        if doc:
            plan.turn(f"q{i}-{doc}", at, rng.randint(*p.question), rng.randint(*p.reply),
                      context=doc, system="agent-sys" if p.doc_system else None)  # fmt: skip
            continue
        if current is None or rng.random() < p.switch:
            current = rng.choice([c for c in tools if c != current])
        plan.turn(current, at, rng.randint(*p.user), rng.randint(*p.reply), system="agent-sys",
                  tools=tools[current])  # fmt: skip
    return Workload(
        name=f"interleaved-s{seed}",
        description=(f"{p.conversations} interleaved agent conversations on a "
                     f"{p.system}-token system prompt, documents, {p.requests} requests "
                     f"(seed {seed}, pace {pace})"),
        engine=eng,
        texts=texts,
        sessions=plan.sessions(),
    )


# -- adversarial workloads ---------------------------------------------------------


def bursty_documents(seed: int, engine: EngineParams | None = None,
                     pace: str = "instant") -> Workload:  # fmt: skip
    """Conversations, then bursts of 3-6 documents back to back, each asked a
    second time right after its burst: room must go to documents for a while
    without evicting every conversation save."""
    p = Interleaved(doc_share=0.0)
    w = interleaved(seed, p, engine, pace)
    rng = random.Random(f"bursty-{seed}")
    plan = Plan()
    for s in w.sessions:
        plan.convs[s.id] = _from_session(s)
    texts = dict(w.texts)
    interval = PACES[pace][2]
    for b in range(3):
        at = (20 + 25 * b) * interval + interval / 2
        docs = []
        for k in range(rng.randint(3, 6)):
            doc = f"doc-{b}-{k}"
            texts[doc] = rng.randint(35_000, 60_000)
            docs.append(doc)
            plan.turn(f"q-{doc}", at, rng.randint(50, 300), rng.randint(200, 800), context=doc)
            at += interval / 16
        for doc in docs:
            plan.turn(f"r-{doc}", at, rng.randint(50, 300), rng.randint(200, 800), context=doc)
            at += interval / 16
    return replace(w, name=f"bursty-documents-s{seed}", texts=texts, sessions=plan.sessions(),
                   description="bursts of 3-6 documents, each asked twice")  # fmt: skip


def shared_prompt_documents(seed: int, engine: EngineParams | None = None,
                            pace: str = "instant") -> Workload:  # fmt: skip
    """The interleaved workload with its documents asked after the shared
    system prompt: a one-shot document then shares its first bytes (and the
    hit anchor) with every conversation, so nothing in its file tells it
    apart from a conversation's save."""
    w = interleaved(seed, Interleaved(doc_system=True), engine, pace)
    return replace(w, name=f"shared-prompt-documents-s{seed}",
                   description="interleaved agents, documents on the shared prompt")  # fmt: skip


def _from_session(s: Session) -> _Conv:
    times = [s.start]
    for g in s.gap[: s.turns - 1]:
        times.append(times[-1] + g)
    return _Conv(s.start, s.first, s.system, s.context, s.tools, times,
                 list(s.user[: s.turns - 1]), list(s.reply))  # fmt: skip


def tiny_anchors(seed: int, engine: EngineParams | None = None,
                 pace: str = "instant") -> Workload:  # fmt: skip
    """Forty short system prompts (512-900 tokens), each used by a few short
    chats, beside a few long conversations: many small, often-hit anchors
    against big saves (spec §6 "small prefixes first")."""
    rng = random.Random(f"tiny-{seed}")
    eng = paced(engine or EngineParams(budget=4 * GiB), pace)
    interval = PACES[pace][2]
    texts = {f"sys-{k}": rng.randint(512, 900) for k in range(40)}
    texts["long-sys"] = 3000
    plan = Plan()
    for i in range(120):
        at = i * interval
        if rng.random() < 0.3:
            cid = f"long-{rng.randrange(4)}"
            plan.turn(cid, at, rng.randint(1000, 4000), rng.randint(300, 1500), system="long-sys")
        else:
            sys_ = f"sys-{min(int(rng.expovariate(1 / 8)), 39)}"
            plan.turn(f"chat-{i}", at, rng.randint(100, 600), rng.randint(100, 600), system=sys_)
    return Workload(f"tiny-anchors-s{seed}", "40 small anchors under long conversations", eng,
                    texts, plan.sessions())  # fmt: skip


def idle_resume(seed: int, engine: EngineParams | None = None,
                pace: str = "instant") -> Workload:  # fmt: skip
    """The interleaved workload with two long pauses (an hour with no request,
    then a night): conversations resume after them. Wall time passes, the
    cache sees no activity."""
    w = interleaved(seed, Interleaved(requests=90), engine, pace)
    interval = PACES[pace][2]

    def shift(t: float) -> float:
        return t + (3600.0 if t >= 30 * interval else 0.0) + (
            36000.0 if t >= 60 * interval else 0.0)

    plan = Plan()
    for s in w.sessions:
        c = _from_session(s)
        c.times = [shift(t) for t in c.times]
        c.start = c.times[0]
        plan.convs[s.id] = c
    return replace(w, name=f"idle-resume-s{seed}", sessions=plan.sessions(),
                   description="interleaved agents with an hour and a night of idle")  # fmt: skip


def hot_anchor_flood(seed: int, engine: EngineParams | None = None,
                     pace: str = "instant") -> Workload:  # fmt: skip
    """One 6,000-token anchor used every ~10 requests, under a flood of
    unrelated 5-25k-token one-shot prompts (no anchor: trimmed cold stores)."""
    rng = random.Random(f"flood-{seed}")
    eng = paced(engine or EngineParams(budget=4 * GiB), pace)
    interval = PACES[pace][2]
    texts = {"hot": 6000}
    plan = Plan()
    for i in range(150):
        at = i * interval
        if i % 10 == 3:
            plan.turn(f"hot-{i}", at, rng.randint(200, 1500), rng.randint(200, 800), system="hot")
        else:
            plan.turn(f"flood-{i}", at, rng.randint(5000, 25_000), rng.randint(100, 400))
    return Workload(f"hot-anchor-flood-s{seed}", "one hot anchor under a flood of one-shots",
                    eng, texts, plan.sessions())  # fmt: skip


def budget_cuts(seed: int, engine: EngineParams | None = None,
                pace: str = "instant") -> Workload:  # fmt: skip
    """The interleaved workload at 16 GiB, restarted at 4 GiB, then 2 GiB."""
    w = interleaved(seed, Interleaved(requests=120, budget=16 * GiB), engine, pace)
    interval = PACES[pace][2]
    cuts = (Restart(40 * interval - interval / 2, 4 * GiB),
            Restart(80 * interval - interval / 2, 2 * GiB))  # fmt: skip
    return replace(w, name=f"budget-cuts-s{seed}", restarts=cuts,
                   description="interleaved agents, the budget cut 16 -> 4 -> 2 GiB")  # fmt: skip


def slow_pace(seed: int, engine: EngineParams | None = None,
              pace: str = "instant") -> Workload:  # fmt: skip
    """The interleaved workload at 300 prefill and 15 generation tokens/s,
    30 s between requests: hours of wall time."""
    w = interleaved(seed, Interleaved(interval=30.0), engine, "instant")
    eng = replace(w.engine, prefill_tps=300.0, decode_tps=15.0)
    return replace(w, name=f"slow-pace-s{seed}", engine=eng,
                   description="interleaved agents, prefill 300 tok/s, 30 s apart")  # fmt: skip


def fast_pace(seed: int, engine: EngineParams | None = None,
              pace: str = "instant") -> Workload:  # fmt: skip
    """The interleaved workload, instant, 10 ms between requests: the whole
    run inside one wall-clock second or two."""
    w = interleaved(seed, Interleaved(interval=0.01), engine, "instant")
    return replace(w, name=f"fast-pace-s{seed}",
                   description="interleaved agents, instant, 10 ms apart")  # fmt: skip


def chat_traffic(seed: int, engine: EngineParams | None = None, pace: str = "instant",
                 requests: int = 300) -> Workload:  # fmt: skip
    """`python -m kvgroomd.testing.traffic --seed SEED --requests 300` as a
    workload: the same requests, so the engine alone serves the same tokens
    from disk in the simulator as beside the emulator (`pace` is ignored:
    the traffic's own, prefill at 200,000 tokens/s).

    Six conversations on one 600-token system prompt, picked at random (a
    switch on most requests), each turn 800-3,000 user tokens and a 100-600
    token reply; on one request in seven, a 200-token question on one
    34,000-token document (its 30,720-token rung is consumed when hit). The
    conversations grow to 60-100k tokens by the 300th request: their saves
    reach 0.8-1.3 GiB, most of the traffic's 1,600 MiB engine budget, so the
    room kept for the next store is most of the cache.
    """
    rng = random.Random(seed)  # drawn in testing.traffic's order
    eng = replace(engine or EngineParams(budget=1600 * MiB, ctx_size=32768),
                  prefill_tps=200_000.0, decode_tps=20_000.0)  # fmt: skip
    plan = Plan()
    for i in range(requests):
        at = i * 0.1  # the traffic waits 50 ms after a reply about as long (wall-clock rules only)
        k = rng.randrange(7)
        if k == 6:
            rng.randrange(10**6)  # the traffic's seed for the question's text
            plan.turn(f"q{i}", at, 200, 100, system="sys", context="doc")
        else:
            plan.turn(f"c{k}", at, rng.randrange(800, 3000), rng.randrange(100, 600),
                      system="sys")  # fmt: skip
    return Workload(f"chat-traffic-s{seed}", "kvgroomd.testing.traffic's chats: six "
                    "conversations growing to most of a 1,600 MiB budget, one document",
                    eng, {"sys": 600, "doc": 33_400}, plan.sessions())  # fmt: skip


Generator = Callable[..., Workload]
ADVERSARIAL: dict[str, Generator] = {
    "bursty-documents": bursty_documents,
    "shared-prompt-documents": shared_prompt_documents,
    "tiny-anchors": tiny_anchors,
    "idle-resume": idle_resume,
    "hot-anchor-flood": hot_anchor_flood,
    "budget-cuts": budget_cuts,
    "slow-pace": slow_pace,
    "fast-pace": fast_pace,
    "chat-traffic": chat_traffic,
}


def interleaved_params(raw: dict[str, Any]) -> Interleaved:
    """Interleaved from a mapping of its field names (ranges as [lo, hi])."""
    fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
    return Interleaved(**fields)


__all__ = [
    "ADVERSARIAL",
    "PACES",
    "Interleaved",
    "MiB",
    "Plan",
    "interleaved",
    "interleaved_params",
    "paced",
]  # fmt: skip
