"""Rendered ds4 chats for the engine emulator: deterministic texts as token pieces.

`Conversation` renders a chat from a seed, one piece per token, so the text
of an n-token snapshot is `pieces[:n]` joined and a shorter snapshot of the
same conversation is a byte prefix of a longer one. Tool sessions keep the
reply the model sampled apart from the canonical rendering the client sends
back. `PieceText` hands pieces to the engine model (`kvgroomd.sim.engine`).
"""

from __future__ import annotations

import functools
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, eq=False)
class PieceText:
    """Token pieces as the engine model's `ChatText` (one piece = one token)."""

    pieces: tuple[bytes, ...]

    def __len__(self) -> int:
        return len(self.pieces)

    @functools.cached_property
    def raw(self) -> bytes:
        """The rendered bytes."""
        return b"".join(self.pieces)

    @property
    def nbytes(self) -> int:
        """Length of the rendered text."""
        return len(self.raw)

    def render(self) -> bytes:
        """The rendered bytes."""
        return self.raw

    def bucket(self) -> int:
        """Unknown: any text may be a prefix."""
        return 0

    def startswith(self, other: object) -> bool:
        """Byte prefix test, as the engine's live-text match."""
        assert isinstance(other, PieceText)
        return self.raw.startswith(other.raw)

    def head(self, n: int) -> PieceText:
        """The first `n` tokens."""
        return self if n >= len(self.pieces) else PieceText(self.pieces[:n])

    def __add__(self, other: PieceText) -> PieceText:
        return PieceText(self.pieces + other.pieces)


BOS = "<｜begin▁of▁sentence｜>".encode()
EOS = "<｜end▁of▁sentence｜>".encode()
USER = "<｜User｜>".encode()
ASSISTANT = "<｜Assistant｜>".encode()
THINK_END = b"</think>"
_DSML = "｜DSML｜"

_WORD_TEXT = (
    "the a to of and in is it for on we that this with as be by at or an if "
    "file cache disk key hit miss text token tokens prompt prefix budget size "
    "read write load store keep drop sort list test tests error fix bug patch "
    "code repo diff line lines path dir name hash sha run runs log logs time "
    "server client model chat turn user reply tool call calls args json data "
    "byte bytes page pages queue lock race free full half slow fast small big "
    "new old next last first each all any not can will should must may via "
    "parse parser header payload trailer python module class def return value"
)
_WORDS = _WORD_TEXT.split()
_TOOLS = ("ls", "read_file", "grep", "run_tests", "apply_patch", "web_search")


_PIECES = [(" " + w).encode() for w in _WORDS]
_CAPITALIZED = [(" " + w.capitalize()).encode() for w in _WORDS]
_MARKS = (b".", b".", b"?", b"!", b".\n\n")


def word_pieces(rng: random.Random, n: int) -> list[bytes]:
    """`n` tokens of prose, one word or mark per token (about 4-5 bytes a token)."""
    # The hot loop of every workload: `seq[rng._randbelow(len(seq))]` is what
    # rng.choice(seq) does, so the texts are those of the plain version.
    out: list[bytes] = []
    append, rand, below = out.append, rng.random, rng._randbelow  # type: ignore[attr-defined]
    words = len(_WORDS)
    capital = True
    for _ in range(n):
        if not capital and rand() < 0.08:
            append(_MARKS[below(5)])
            capital = True
            continue
        i = below(words)
        append(_CAPITALIZED[i] if capital else _PIECES[i])
        capital = False
    return out


def system_prompt(seed: int = 0, tokens: int = 600) -> list[bytes]:
    """A client's fixed system prompt as token pieces (BOS included)."""
    return list(_system_prompt(seed, tokens))


@functools.lru_cache(maxsize=64)
def _system_prompt(seed: int, tokens: int) -> tuple[bytes, ...]:
    rng = random.Random(f"system-{seed}")
    return (BOS, b"You are a careful coding assistant.", *word_pieces(rng, tokens - 2))


def _tool_call(rng: random.Random, call_id: str, *, sampled: bool) -> list[bytes]:
    tool = rng.choice(_TOOLS)
    arg = rng.choice(("src/", "src/cache.py", "tests/", "README.md", "kv budget"))
    # The model samples free spacing; the client re-renders canonically.
    sep = b"\n" if not sampled else rng.choice((b"\n", b" ", b"\n\n"))
    return [
        f"<{_DSML}tool_calls>".encode(), sep,
        f'<{_DSML}invoke name="{tool}">'.encode(), sep,
        f'<{_DSML}parameter name="path" string="true">'.encode(), arg.encode(),
        f"</{_DSML}parameter>".encode(), sep, f"</{_DSML}invoke>".encode(), sep,
        f"</{_DSML}tool_calls>".encode(), f"<!-- {call_id} -->".encode(),
    ]  # fmt: skip


class Conversation:
    """A rendered ds4 chat as token pieces (one piece = one token), from a seed.

    `pieces[:n]` joined is the text of an n-token snapshot, so every shorter
    snapshot's text is a byte prefix of a longer one of the same conversation.
    By default all conversations share one 600-token system prompt (the cold
    anchor), so texts of different seeds differ only past those 600 tokens.
    """

    def __init__(
        self,
        seed: int,
        *,
        system: Sequence[bytes] | None = None,
        tools: bool = False,
        prefix: Sequence[bytes] | None = None,
    ) -> None:
        self.rng = random.Random(f"conversation-{seed}")
        self.tools = tools
        base = prefix if prefix is not None else (system or system_prompt())
        self.pieces: list[bytes] = list(base)
        self.prompt_ends: list[int] = []  # token count where turn i's prompt ends
        self.turn_ends: list[int] = []  # token count after turn i's reply
        self.sampled: dict[int, list[bytes]] = {}  # turn -> reply the model sampled

    def __len__(self) -> int:
        return len(self.pieces)

    def text(self, tokens: int | None = None) -> bytes:
        """The rendered text of the first `tokens` tokens (all by default)."""
        return b"".join(self.pieces if tokens is None else self.pieces[:tokens])

    @property
    def anchor(self) -> int:
        """Tokens before the last user marker preceding the first assistant marker."""
        last_user = -1
        for i, p in enumerate(self.pieces):
            if p == ASSISTANT:
                break
            if p == USER:
                last_user = i
        return last_user

    def add_turn(self, user_tokens: int, reply_tokens: int) -> int:
        """Append a user turn and the assistant reply; return the turn index."""
        rng = self.rng
        self.pieces.append(USER)
        self.pieces += word_pieces(rng, max(user_tokens - 3, 1))
        self.pieces += [ASSISTANT, THINK_END]
        self.prompt_ends.append(len(self.pieces))
        turn = len(self.prompt_ends) - 1
        if self.tools:
            call_id = f"call_{rng.getrandbits(64):016x}"
            prose = word_pieces(rng, max(reply_tokens - 14, 1))
            canonical = prose + _tool_call(random.Random(call_id), call_id, sampled=False)
            # What the model sampled: same call, other id and spacing; the client
            # never sends these bytes back, so its evict save never matches.
            sampled_id = f"call_{rng.getrandbits(64):016x}"
            self.sampled[turn] = prose + _tool_call(
                random.Random(call_id), sampled_id, sampled=True
            )
            self.pieces += canonical
        else:
            self.pieces += word_pieces(rng, max(reply_tokens - 1, 1))
        self.pieces.append(EOS)
        self.turn_ends.append(len(self.pieces))
        return turn

    def grow_to(self, tokens: int, *, turn_tokens: int = 4000) -> None:
        """Add turns until the conversation has at least `tokens` tokens."""
        while len(self.pieces) < tokens:
            need = tokens - len(self.pieces)
            user = max(min(turn_tokens, need // 2), 4)
            self.add_turn(user, max(need - user, 4))

    def prompt(self, turn: int) -> list[bytes]:
        """The pieces the client sends for `turn` (history + new user message)."""
        return self.pieces[: self.prompt_ends[turn]]

    def reply(self, turn: int) -> list[bytes]:
        """The reply pieces as the model generated them for `turn`."""
        if turn in self.sampled:
            return self.sampled[turn]
        return self.pieces[self.prompt_ends[turn] : self.turn_ends[turn]]

    def fork(self, seed: int, at: int) -> Conversation:
        """A new conversation sharing this one's first `at` tokens, then diverging."""
        return Conversation(seed, tools=self.tools, prefix=self.pieces[:at])


def conversation(seed: int, tokens: int, *, system: Sequence[bytes] | None = None,
                 tools: bool = False) -> Conversation:  # fmt: skip
    """A conversation of at least `tokens` tokens, deterministic from `seed`."""
    conv = Conversation(seed, system=system, tools=tools)
    conv.grow_to(tokens)
    return conv



def ktm_trailer(rng: random.Random, entries: int = 2) -> bytes:
    """A tool-id map trailer shaped like the fixtures' (`KTM`, version, count, pairs)."""
    body = b""
    for _ in range(entries):
        call_id = f"call_{rng.getrandbits(64):016x}".encode()
        dsml = _tool_call(rng, call_id.decode(), sampled=False)
        block = b"".join(dsml[:-1])
        body += struct.pack("<II", len(call_id), len(block)) + call_id + block
    return b"KTM\x01" + struct.pack("<I", entries) + body
