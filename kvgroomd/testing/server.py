"""ds4-server's request flow over the emulator's `Engine`, for rendered chats.

`Server` is `kvgroomd.sim.server.Server` (the simulator's flow) with the
chats of `kvgroomd.testing.chat`; `ladder()` is spec section 4's example
written straight to the store; `dead_pid()` names crash-left temp files.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter

from kvgroomd.format.header import Reason
from kvgroomd.sim.server import Server as FlowServer
from kvgroomd.sim.server import Turn
from kvgroomd.testing.chat import Conversation, PieceText
from kvgroomd.testing.engine import Engine, Hit


def dead_pid() -> int:
    """The pid of a process that has exited, to name crash-left temp files."""
    exe = shutil.which("true") or sys.executable
    args = [exe] if exe != sys.executable else [exe, "-c", ""]
    proc = subprocess.Popen(args)
    proc.wait()
    return proc.pid


class Server:
    """ds4-server's request flow (`kvgroomd.sim.server`) over an `Engine`, for chats."""

    def __init__(self, engine: Engine, *, ctx_size: int = 32768, quant_bits: int = 2) -> None:
        self.engine = engine
        # The emulator acts at once: every store and lookup happens (and its
        # header is stamped) at the engine's real clock, as ds4-server's
        # time(NULL) at the moment of the store, never at a modelled future.
        self.flow: FlowServer[PieceText] = FlowServer(
            engine.model, PieceText(()), quant_bits=quant_bits, ctx_size=ctx_size,
            wait=lambda _t: engine.clock())  # fmt: skip

    @property
    def stats(self) -> Counter[str]:
        """Stores by reason, skipped stores, hits, misses, consumed files."""
        return self.flow.stats

    @property
    def continued_last(self) -> int:
        """continued_last_store_tokens."""
        return self.flow.continued_last

    @property
    def ctx_size(self) -> int:
        """The server's --ctx (it may change across restarts)."""
        return self.flow.ctx_size

    @ctx_size.setter
    def ctx_size(self, value: int) -> None:
        self.flow.ctx_size = value

    @property
    def quant_bits(self) -> int:
        """The server's quantization (it may change across restarts)."""
        return self.flow.quant_bits

    @quant_bits.setter
    def quant_bits(self, value: int) -> None:
        self.flow.quant_bits = value

    def drop_live(self) -> None:
        """The live state died with the process (a crash)."""
        self.flow.live, self.flow.owner, self.flow.continued_last = PieceText(()), None, 0

    def save_live(self, reason: Reason) -> None:
        """Save the whole live session (`evict` or `shutdown`), if long enough."""
        self.flow.save_live(reason, self.engine.clock())
        self.flow.continued_last = 0

    def request(self, conv: Conversation, turn: int) -> Hit | None:
        """Serve `conv`'s turn: reuse the live session or disk, prefill, generate."""
        prompt = PieceText(tuple(conv.prompt(turn)))
        start = conv.turn_ends[turn - 1] if turn > 0 else 0
        calls = conv.prompt_ends[0] if conv.tools and turn > 0 else None
        r = Turn(str(id(conv)), turn + 1, prompt, PieceText(tuple(conv.reply(turn))),
                 PieceText(prompt.pieces[start:]), max(conv.anchor, 0), conv.tools, calls,
                 by_call_id=False)  # fmt: skip
        self.flow.serve(r, self.engine.clock())
        h = self.flow.last_hit
        return None if h is None else Hit(h.name, h.header, h.consumed,
                                          self.engine.directory / h.name)  # fmt: skip
