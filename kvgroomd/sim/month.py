"""The seeded mixed month: one developer's month of use of a shared ds4-server.

Pure. Used by `scenarios/mixed-month.yaml` (`generate: {kind: mixed-month}`).
"""

from __future__ import annotations

import random

from kvgroomd.sim.engine import EngineParams, MiB
from kvgroomd.sim.workload import DAY, HOUR, Fork, Restart, Session, Workload


def mixed_month(seed: int = 1, days: int = 30, engine: EngineParams | None = None) -> Workload:
    """A seeded month of one developer's use of a shared ds4-server.

    Weekdays: three to six tool-calling agent sessions on a shared 12k-token
    system prompt (8-45 turns, 20-85k tokens, overlapping so the live session
    switches), four to ten chats on a 533-token system prompt (30% resumed
    hours or days later, 20% of the longer ones forked by an edited message),
    and up to two long one-shot prompts over 16-105k-token documents (40% of
    them on a document seen before). Weekends are mostly idle. The server
    restarts three times.
    """
    rng = random.Random(seed)
    eng = engine or EngineParams(budget=16 * 1024 * MiB)
    texts = {"agent-sys": 12_000, "chat-sys": 533}
    sessions: list[Session] = []
    n = 0

    def sid(kind: str) -> str:
        nonlocal n
        n += 1
        return f"{kind}-{n}"

    docs: list[str] = []  # documents seen so far, to be asked about again
    for day in range(days):
        base = day * DAY
        weekend = day % 7 in (5, 6)
        if weekend and rng.random() < 0.7:
            continue
        work = (9 * HOUR, 19 * HOUR)
        # Agent work: a few sessions a day, overlapping (two terminals).
        for _ in range(rng.randint(1, 2) if weekend else rng.randint(3, 6)):
            turns = rng.randint(8, 45)
            sessions.append(
                Session(
                    id=sid("agent"),
                    start=base + rng.uniform(*work),
                    turns=turns,
                    system="agent-sys",
                    first=rng.randint(300, 2500),
                    user=tuple(rng.choice((200, 400, 800, 1500, 3000)) for _ in range(turns)),
                    reply=tuple(rng.randint(80, 700) for _ in range(turns)),
                    gap=tuple(rng.uniform(20, 150) for _ in range(turns)),
                    tools=True,
                )
            )
        # Chats: short conversations with a small shared system prompt.
        for _ in range(rng.randint(1, 3) if weekend else rng.randint(4, 10)):
            turns = rng.randint(1, 8)
            s = Session(
                id=sid("chat"),
                start=base + rng.uniform(8 * HOUR, 23 * HOUR),
                turns=turns,
                system="chat-sys",
                first=rng.randint(100, 1500),
                user=(rng.randint(50, 600),),
                reply=tuple(rng.randint(150, 1200) for _ in range(turns)),
                gap=tuple(rng.uniform(60, 900) for _ in range(turns)),
            )
            sessions.append(s)
            # Resumed later the same day or days later (the user comes back).
            if rng.random() < 0.3:
                back = rng.choice((2 * HOUR, 6 * HOUR, DAY, 2 * DAY, 4 * DAY))
                sessions.append(
                    Session(
                        id=sid("resume"),
                        start=s.start + turns * 900 + back,
                        turns=rng.randint(1, 4),
                        fork=Fork(s.id, s.turns + 1),
                        user=(rng.randint(50, 600),),
                        first=rng.randint(50, 600),
                        reply=(rng.randint(150, 1000),),
                        gap=(rng.uniform(60, 600),),
                    )
                )
            # An edit: the user rewrites a message and the chat diverges.
            if turns >= 3 and rng.random() < 0.2:
                at = rng.randint(2, turns)
                sessions.append(
                    Session(
                        id=sid("edit"),
                        start=s.start + at * 900 + 60,
                        turns=rng.randint(1, 3),
                        fork=Fork(s.id, at),
                        first=rng.randint(50, 600),
                        user=(rng.randint(50, 600),),
                        reply=(rng.randint(150, 1000),),
                        gap=(300.0,),
                    )
                )
        # Long one-shot prompts over a document, sometimes asked about again.
        for _ in range(0 if weekend else rng.randint(0, 2)):
            if docs and rng.random() < 0.4:
                doc = rng.choice(docs)
            else:
                doc = f"doc-{len(docs) + 1}"
                texts[doc] = rng.choice((16_000, 24_000, 40_000, 60_000, 105_000))
                docs.append(doc)
            sessions.append(
                Session(
                    id=sid("oneshot"),
                    start=base + rng.uniform(*work),
                    turns=rng.randint(1, 2),
                    context=doc,
                    first=rng.randint(50, 300),
                    user=(rng.randint(50, 300),),
                    reply=(rng.randint(300, 1500),),
                    gap=(600.0,),
                )
            )
    restarts = tuple(
        Restart(d * DAY + rng.uniform(12 * HOUR, 20 * HOUR))
        for d in sorted(rng.sample(range(days), k=min(3, days)))
    )
    return Workload(
        name="mixed-month",
        description=f"seeded mixed month of agent, chat and one-shot use (seed {seed}, {days} d)",
        engine=eng,
        texts=texts,
        sessions=tuple(sessions),
        restarts=restarts,
    )
