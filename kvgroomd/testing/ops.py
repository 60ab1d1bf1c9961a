"""A seeded random mix of ds4 request shapes on a real directory, and its CLI.

`python -m kvgroomd.testing.engine --dir DIR --ops N` runs it: the stress
tests and the soak benchmark drive a directory with it while the daemon runs.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from kvgroomd.format.header import Reason
from kvgroomd.testing.chat import Conversation, ktm_trailer, system_prompt
from kvgroomd.testing.engine import Engine, StoreSkippedError, store_len
from kvgroomd.testing.server import Server, dead_pid

_OPS = {
    "new": 3.0,  # an unrelated conversation (evicts the live one)
    "continue": 4.0,  # the live conversation's next turn
    "resume": 2.0,  # an older conversation's next turn: disk hit, maybe consume
    "repeat": 2.0,  # the same prompt again (regenerate): a touch
    "branch": 1.5,  # shares a prefix with an older conversation, then diverges
    "tool": 1.5,  # a tool-calling session: its evict saves never match
    "ladder": 0.7,  # a huge paste: nested continued rungs
    "trailer": 0.5,  # a stored prefix again, with a fresh tool-id map
    "replace": 0.5,  # same-name replacement, new inode
    "crash": 0.3,  # a store cut short by a crash, then a restart
    "shutdown": 0.3,  # a clean exit saving the live session, then a restart
}


class Workload:
    """A seeded mix of realistic ds4 request shapes, driven through a `Server`."""

    def __init__(self, engine: Engine, seed: int) -> None:
        self.engine = engine
        self.seed = seed
        self.rng = random.Random(f"workload-{seed}")
        self.server = Server(engine)
        # A few clients, each with its own fixed system prompt (cold anchors).
        self.systems = [system_prompt(seed * 10 + i, t) for i, t in enumerate((700, 1400, 5343))]
        self.convs: list[tuple[Conversation, int]] = []  # (conversation, turns served)
        self.live_idx: int | None = None
        self.counts: Counter[str] = Counter()
        self._dead_pid: int | None = None
        self._step = 0

    def run(self, ops: int, *, seconds: float | None = None, delay: float = 0.0) -> Counter[str]:
        """At most `ops` operations and at most `seconds`; returns what was done."""
        deadline = None if seconds is None else time.monotonic() + seconds
        names = list(_OPS)
        weights = [_OPS[k] for k in names]
        for _ in range(ops):
            if deadline is not None and time.monotonic() >= deadline:
                break
            self.step(self.rng.choices(names, weights)[0])
            if delay:
                time.sleep(delay)
        counts = self.counts + self.server.stats
        counts["ops"] = sum(self.counts[k] for k in _OPS)
        return counts

    def step(self, op: str) -> None:
        """Run one operation named in `_OPS` (`new` when it needs history and there is none)."""
        if op not in ("new", "ladder", "tool", "crash", "shutdown") and not self.convs:
            op = "new"
        self.counts[op] += 1
        self._step += 1
        getattr(self, f"op_{op}")()

    def _conv(self, *, tools: bool = False) -> Conversation:
        cseed = self.seed * 1_000_003 + self._step
        return Conversation(cseed, system=self.rng.choice(self.systems), tools=tools)

    def _start(self, conv: Conversation, user_tokens: int) -> None:
        conv.add_turn(user_tokens, self.rng.randint(50, 2500))
        self.server.request(conv, 0)
        self.convs.append((conv, 1))
        self.live_idx = len(self.convs) - 1

    def _next_turn(self, idx: int) -> None:
        conv, served = self.convs[idx]
        if served >= len(conv.prompt_ends):
            conv.add_turn(self.rng.randint(20, 3000), self.rng.randint(50, 2500))
        self.server.request(conv, served)
        self.convs[idx] = (conv, served + 1)
        self.live_idx = idx

    def op_new(self) -> None:
        """An unrelated conversation: the live one is saved as `evict`."""
        self._start(self._conv(), self.rng.randint(100, 6000))

    def op_ladder(self) -> None:
        """A huge first message: nested continued rungs every 10240 tokens."""
        self._start(self._conv(), self.rng.randint(20_000, 60_000))

    def op_tool(self) -> None:
        """A tool-calling session: sampled replies never come back byte-exact."""
        self._start(self._conv(tools=True), self.rng.randint(300, 4000))

    def op_continue(self) -> None:
        """The live conversation's next turn (in memory, new frontiers)."""
        idx = self.live_idx if self.live_idx is not None else self.rng.randrange(len(self.convs))
        self._next_turn(idx)

    def op_resume(self) -> None:
        """An older conversation's next turn: a disk hit, consumed when > 30000 tokens."""
        self._next_turn(self.rng.randrange(len(self.convs)))

    def op_repeat(self) -> None:
        """The same prompt again (a regenerate): a hit, so a touch."""
        idx = self.rng.randrange(len(self.convs))
        conv, served = self.convs[idx]
        self.server.request(conv, served - 1)
        self.live_idx = idx

    def op_branch(self) -> None:
        """A new conversation sharing an older one's first turns, then diverging."""
        conv, served = self.rng.choice(self.convs)
        at = conv.turn_ends[self.rng.randrange(served)]
        self._start(conv.fork(self.seed * 1_000_003 + self._step, at), self.rng.randint(100, 4000))

    def op_trailer(self) -> None:
        """A stored prefix stored again with a fresh tool-id map trailer."""
        conv, served = self.rng.choice(self.convs)
        prompt = conv.prompt(served - 1)
        n = store_len(len(prompt))
        if n >= self.engine.min_tokens:
            try:
                self.engine.store(b"".join(prompt[:n]), n, Reason.CONTINUED,
                                  trailer=ktm_trailer(self.rng))  # fmt: skip
            except StoreSkippedError:
                self.counts["skipped"] += 1

    def op_replace(self) -> None:
        """Same-name replacement: new inode (other ctx_size), by unlink or rename.

        Only of a file this server stored: it can only render its own texts
        again (another tool's file of a valid format is never replaced)."""
        existing = [e for e in self.engine.entries() if e.name in self.engine.written]
        if existing:
            victim = self.rng.choice(existing)
            # The file may vanish under us (the daemon, or our own eviction).
            with contextlib.suppress(FileNotFoundError, ValueError, StoreSkippedError):
                self.engine.replace(victim.name, via=self.rng.choice(("unlink", "rename")),
                                    ctx_size=self.rng.choice((16384, 32768)))  # fmt: skip

    def op_crash(self) -> None:
        """A store cut short by a crash (temp file left), then a restart."""
        if self._dead_pid is None:
            self._dead_pid = dead_pid()
        conv = self._conv()
        conv.add_turn(self.rng.randint(600, 8000), 100)
        n = len(conv.prompt(0))
        self.engine.crash(conv.text(n), n, Reason.COLD, pid=self._dead_pid,
                          fraction=self.rng.random())  # fmt: skip
        self.server.drop_live()  # the live state died
        self._restart()

    def op_shutdown(self) -> None:
        """A clean exit saving the live session as `shutdown`, then a restart."""
        self.server.save_live(Reason.SHUTDOWN)
        self._restart()

    def _restart(self) -> None:
        """The server comes back, maybe with another context size or quantization
        (so older files may be ones the new files cannot stand in for)."""
        self.server.ctx_size = self.rng.choice((16384, 32768, 32768, 65536))
        self.server.quant_bits = self.rng.choice((2, 2, 4))
        self.engine.startup()


def run_workload(
    engine: Engine,
    seed: int,
    ops: int,
    *,
    seconds: float | None = None,
    delay: float = 0.0,
) -> Counter[str]:
    """Run at most `ops` random operations (and at most `seconds`); return counts."""
    return Workload(engine, seed).run(ops, seconds=seconds, delay=delay)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m kvgroomd.testing.engine`: a seeded, bounded ds4 workload on a directory."""
    p = argparse.ArgumentParser(
        prog="python -m kvgroomd.testing.engine",
        description="Emulate ds4-server writing its disk KV cache into DIR.",
    )
    p.add_argument("--dir", required=True, type=Path, help="the cache directory")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ops", type=int, required=True, help="stop after this many operations")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")
    p.add_argument("--budget", type=int, default=None, help="engine budget in bytes")
    p.add_argument("--variant", choices=("current", "legacy"), default="current")
    p.add_argument("--journal", type=Path, default=None, help="append JSON lines here")
    p.add_argument("--delay-ms", type=float, default=0.0, help="pause between operations")
    p.add_argument("--write-delay-ms", type=float, default=0.0,
                   help="pause inside each file write (in-flight temp files)")  # fmt: skip
    p.add_argument("--dense", action="store_true", help="write real payload bytes (small)")
    args = p.parse_args(argv)
    engine = Engine(
        args.dir, budget_bytes=args.budget, variant=args.variant, sparse=not args.dense,
        journal=args.journal, write_delay=args.write_delay_ms / 1000.0,
    )  # fmt: skip
    engine.startup()
    try:
        counts = run_workload(
            engine, args.seed, args.ops, seconds=args.seconds, delay=args.delay_ms / 1000.0
        )
    except OSError as exc:  # e.g. the disk filled up: report, do not hang
        print(f"engine emulator: {exc}", file=sys.stderr)
        return 1 if exc.errno != errno.ENOSPC else 2
    print(json.dumps(dict(sorted(counts.items()))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
