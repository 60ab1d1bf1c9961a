"""When ds4-server stores what (spec §3): one live session over the engine model.

Pure. `Server.serve` runs one request the way ds4-server's request flow does:
a memory hit when the live text is a byte prefix of the prompt (or, for a
tool session continuing its own previous turn, by its tool-call ids); else an
`evict` save of the live state and a disk lookup; a `cold` store when nothing
was reused and the prompt has `min_tokens..cold_max_tokens` tokens, at the chat
anchor when that has `min_tokens`, else at the trimmed, aligned length;
`continued` stores at every aligned frontier crossed by prefill or
generation; `shutdown` saves at a clean exit. Texts are any `ChatText`: the
simulator's segment texts or the emulator's rendered chats.

Times: prefill runs at `prefill_tps` and generation at `decode_tps`, which
place each store in time; `wait(t)` is called before every action at model
time `t` and returns the engine's clock then (a live emulator sleeps until
then; the simulator uses model time as is).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from kvgroomd.format.header import EXT_TOOL_MAP, Reason
from kvgroomd.sim.engine import EngineModel, Hit, Stored
from kvgroomd.sim.storage import ChatText

T = TypeVar("T", bound=ChatText)


@dataclass(frozen=True, slots=True)
class Turn(Generic[T]):
    """One request as the server sees it."""

    session: str
    turn: int  # 1-based within the session
    prompt: T  # what the client sends
    reply: T  # what the model samples (may be empty)
    suffix: T  # what the client appended since its previous prompt and reply
    anchor: int = 0  # the chat anchor (end of the system prompt), 0 if none
    tools: bool = False  # a tool session: sampled replies are not sent back verbatim
    # Token position where the first tool call starts in the prompt (None: none yet).
    tools_from: int | None = None
    # A tool turn whose previous turn is the live state continues it in memory
    # (Anthropic tool_use_id / Responses call_id continuation, spec §3).
    by_call_id: bool = True


class Server(Generic[T]):
    """ds4-server's use of its store: one live session, saves at the spec's moments."""

    def __init__(self, model: EngineModel, empty: T, *, model_id: int = 0,
                 quant_bits: int | None = None, ctx_size: int | None = None,
                 wait: Callable[[float], float | None] | None = None) -> None:  # fmt: skip
        self.model = model
        self.empty = empty
        self.model_id = model_id
        self.quant_bits = model.params.quant_bits if quant_bits is None else quant_bits
        self.ctx_size = model.params.ctx_size if ctx_size is None else ctx_size
        self.wait = wait
        self.live: T = empty
        self.owner: tuple[str, int] | None = None  # (session, turn) of the live state
        self.live_tools_from: float = math.inf  # live text has tool calls past this
        self.continued_last = 0  # continued_last_store_tokens
        self.lookups = 0
        self.hits = 0
        self.saved = 0  # prompt tokens served from disk
        self.prefilled = 0
        self.prompt_tokens = 0  # processed: served from memory or disk, or prefilled
        self.stats: Counter[str] = Counter()
        self.last_hit: Hit | None = None

    def _at(self, t: float) -> float:
        """When an action at model time `t` really happens: `wait` may pace
        it (sleep until then) or say the time it happens instead (an
        emulator that acts at once stamps files with its real clock)."""
        if self.wait is not None:
            at = self.wait(t)
            if at is not None:
                return at
        return t

    def _store(self, text: T, tokens: int, reason: Reason, now: float, ext: int) -> None:
        if tokens < self.model.params.min_tokens:
            return
        what, _ = self.model.store(text.head(tokens), tokens, reason, self._at(now),
                                   model_id=self.model_id, quant_bits=self.quant_bits,
                                   ctx_size=self.ctx_size, ext_flags=ext)  # fmt: skip
        self.stats["skipped" if what is Stored.SKIPPED else f"store_{reason.label}"] += 1

    # -- a request -----------------------------------------------------------------

    def serve(self, r: Turn[T], now: float) -> float:
        """Run one request from `now`; return when the reply is finished."""
        p = self.model.params
        tools_from = len(r.prompt) if r.tools_from is None else r.tools_from
        text, total = r.prompt, len(r.prompt)
        self.last_hit = None
        live_n = len(self.live)
        if live_n and r.prompt.startswith(self.live):
            cached = live_n  # memory hit
        elif (r.tools and r.by_call_id and live_n
              and self.owner == (r.session, r.turn - 1)):  # fmt: skip
            # The live state continues the same tool loop in memory even though
            # its sampled tool calls differ from what the client sent back.
            cached, text = live_n, self.live + r.suffix
            total = cached + len(r.suffix)
            tools_from = int(min(tools_from, self.live_tools_from))
        else:
            cached = self._switch(r, now)
        ext = EXT_TOOL_MAP if r.tools else 0

        # Prefill: a cold checkpoint when nothing was reused, continued ones at
        # every aligned frontier crossed.
        cold = 0
        if cached == 0 and p.min_tokens <= total <= p.cold_max_tokens:
            cold = r.anchor if r.anchor >= p.min_tokens else p.store_len(total)
        step = p.continued_step
        for pos in sorted({*self._frontiers(cached, total), *([cold] if cold else [])}):
            at = now + (pos - cached) / p.prefill_tps
            reason = Reason.COLD if pos == cold else Reason.CONTINUED
            self._store(text, pos, reason, at, ext if pos > tools_from else 0)
            if pos % step == 0:  # a cold store on a frontier suppresses the continued one
                self.continued_last = max(self.continued_last, pos)
        self.prefilled += total - cached
        self.prompt_tokens += total
        t = now + (total - cached) / p.prefill_tps

        # Generation crosses frontiers too.
        full = text + r.reply
        n_reply = len(r.reply)
        for pos in self._frontiers(total, total + n_reply):
            self._store(full, pos, Reason.CONTINUED, t + (pos - total) / p.decode_tps,
                        ext if pos > tools_from else 0)  # fmt: skip
            self.continued_last = pos
        self.live, self.owner = full, (r.session, r.turn)
        self.live_tools_from = min(tools_from, total) if r.tools else math.inf
        return t + n_reply / p.decode_tps

    def _switch(self, r: Turn[T], now: float) -> int:
        """Live miss: save the live state, then look the prompt up on disk.
        Returns the tokens loaded (0: nothing reused)."""
        self.continued_last = 0
        self.save_live(Reason.EVICT, now)
        self.lookups += 1
        hit = self.model.lookup(r.prompt, self._at(now), model_id=self.model_id,
                                quant_bits=self.quant_bits, ctx_size=self.ctx_size)  # fmt: skip
        self.last_hit = hit
        self.stats["hit" if hit else "miss"] += 1
        if hit is None:
            return 0
        self.stats["consumed"] += hit.consumed
        self.hits += 1
        self.saved += hit.tokens
        self.continued_last = hit.tokens
        return hit.tokens

    def _frontiers(self, after: int, upto: int) -> range:
        """Continued positions in (after, upto] past the last continued store."""
        p = self.model.params
        step = p.continued_step
        lo = max(after, self.continued_last, p.min_tokens - 1)
        return range((lo // step + 1) * step, upto + 1, step)

    # -- lifecycle -------------------------------------------------------------------

    def save_live(self, reason: Reason, now: float) -> None:
        """Store the live state as `evict` or `shutdown`; the session is gone."""
        n = len(self.live)
        if n:
            ext = EXT_TOOL_MAP if n > self.live_tools_from else 0
            self._store(self.live, n, reason, now, ext)
        self.live, self.owner = self.empty, None
        self.live_tools_from = math.inf

    def shutdown(self, now: float) -> None:
        """Clean exit: save the live state."""
        self.save_live(Reason.SHUTDOWN, now)
        self.continued_last = 0

    def start(self, now: float) -> None:
        """Start-up: the engine evicts down to its (maybe new) budget."""
        self.model.startup(self._at(now))
