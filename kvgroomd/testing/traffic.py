"""Chat traffic through the engine emulator, paced, for trace tests and the README example.

ds4-server's request flow (`kvgroomd.sim.server`) over the emulator's
`Engine` on a real directory, with the chats of `kvgroomd.testing.chat`:
conversations sharing one system prompt (the cold anchor), questions on a
long document (its 30,720-token checkpoint is consumed when hit), switches
that save the live session (`evict`) and look the next prompt up on disk.
At ~600x ds4-server's pace: prefill at 200,000 tokens/s instead of ~350, so
the stores of one request land milliseconds apart, and requests `gap`
seconds apart (the daemon beside it keeps up, as it does live).

    python -m kvgroomd.testing.traffic DIR [--requests 120] [--budget-mib 1600] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import replace
from pathlib import Path

from kvgroomd.sim.server import Server, Turn
from kvgroomd.testing.chat import Conversation, PieceText, conversation, system_prompt
from kvgroomd.testing.engine import EMULATOR, Engine, MiB

PACE = replace(EMULATOR, prefill_tps=200_000.0, decode_tps=20_000.0)
PROTECT_NEW = 0.2  # kvgroomd's protect_new at this pace (120 s / 600)


def paced(engine: Engine) -> Server[PieceText]:
    """The request flow over `engine`, each store at its moment on the wall clock."""

    def wait(t: float) -> float:
        time.sleep(max(0.0, t - time.time()))
        return engine.clock()

    return Server(engine.model, PieceText(()), ctx_size=32768, wait=wait)


def request(flow: Server[PieceText], conv: Conversation, turn: int) -> None:
    """Serve `conv`'s turn `turn` (0-based) now."""
    prompt = PieceText(tuple(conv.prompt(turn)))
    start = conv.turn_ends[turn - 1] if turn > 0 else 0
    flow.serve(Turn(str(id(conv)), turn + 1, prompt, PieceText(tuple(conv.reply(turn))),
                    PieceText(prompt.pieces[start:]), max(conv.anchor, 0)), time.time())


def chats(directory: Path, *, seed: int = 1, requests: int = 120, budget: int = 1600 * MiB,
          gap: float = 0.05, conversations: int = 6) -> Server[PieceText]:  # fmt: skip
    """Run the traffic on `directory`; returns the flow (`.saved`: prompt
    tokens served from disk, `.hits`, `.lookups`)."""
    rng = random.Random(seed)
    engine = Engine(directory, budget_bytes=budget, params=PACE)
    flow = paced(engine)
    convs = [Conversation(100 + i, system=system_prompt()) for i in range(conversations)]
    doc = conversation(999, 34000)
    turns = [0] * len(convs)
    for _ in range(requests):
        i = rng.randrange(len(convs) + 1)
        if i == len(convs):
            q = doc.fork(rng.randrange(10**6), 34000)
            q.add_turn(200, 100)
            request(flow, q, 0)
        else:
            conv = convs[i]
            conv.add_turn(rng.randrange(800, 3000), rng.randrange(100, 600))
            request(flow, conv, turns[i])
            turns[i] += 1
        time.sleep(gap)
    return flow


def main(argv: list[str] | None = None) -> int:
    """Run the traffic against a directory and print what the engine served."""
    ap = argparse.ArgumentParser(prog="python -m kvgroomd.testing.traffic",
                                 description=__doc__.split("\n\n")[1])  # fmt: skip
    ap.add_argument("directory", type=Path)
    ap.add_argument("--requests", type=int, default=120)
    ap.add_argument("--budget-mib", type=int, default=1600, help="the engine's budget")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    flow = chats(args.directory, seed=args.seed, requests=args.requests,
                 budget=args.budget_mib * MiB)  # fmt: skip
    print(f"{args.requests} requests: {flow.hits} of {flow.lookups} disk lookups hit, "
          f"{flow.saved:,} prompt tokens served from disk")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
