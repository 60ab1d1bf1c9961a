"""Abstract texts for the simulator: segments of token streams.

Pure. A text is a tuple of segments `(stream, tokens)`: the first `tokens`
tokens of token stream `stream`. Every stream is distinct, so a text is a
byte prefix of another exactly when its segments are (`is_prefix`), and
`render()` gives bytes with that same property for SHA-1 keys and kvgroomd's
own prefix check. `SegText` wraps a text for the engine model
(`kvgroomd.sim.engine.ChatText`).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

Segment = tuple[int, int]  # (token stream id, tokens)
Text = tuple[Segment, ...]


def tokens_of(text: Text) -> int:
    """Token count of a text."""
    return sum(n for _, n in text)


def truncate(text: Text, tokens: int) -> Text:
    """The first `tokens` tokens of `text`."""
    out: list[Segment] = []
    left = tokens
    for stream, n in text:
        if left <= 0:
            break
        out.append((stream, min(n, left)))
        left -= n
    return tuple(out)


def is_prefix(short: Text, long: Text) -> bool:
    """True when `short` is a (not necessarily strict) prefix of `long`."""
    k = len(short)
    if k == 0:
        return True
    if k > len(long) or short[: k - 1] != long[: k - 1]:
        return False
    (s, n), (t, m) = short[-1], long[k - 1]
    return s == t and n <= m


# Bytes: a segment renders as 0xFF, its stream id in 7 bytes, then one 0x00
# byte per token. Content bytes are never 0xFF, so two texts agree on a byte
# prefix exactly when their segments do: SHA-1 keys and supersede.prove work
# on these bytes as on real rendered text.
_STAMP = b"\xff"


def text_bytes(text: Text) -> int:
    """Length of `render(text)`."""
    return tokens_of(text) + 8 * len(text)


def render(text: Text) -> bytes:
    """Bytes standing for the text (see above)."""
    parts: list[bytes | memoryview] = []
    for s, n in text:
        parts.append(_stamp(s))
        parts.append(_zeros(n))
    return b"".join(parts)


_ZEROS = memoryview(bytes(1 << 20))


def _zeros(n: int) -> bytes | memoryview:
    return _ZEROS[:n] if n <= len(_ZEROS) else bytes(n)


@functools.lru_cache(maxsize=65536)
def _stamp(stream: int) -> bytes:
    return _STAMP + stream.to_bytes(7, "little")


@dataclass(frozen=True, slots=True, eq=False)
class SegText:
    """A segment text as the engine model handles it (`ChatText`)."""

    text: Text
    tokens: int = field(default=-1)

    def __post_init__(self) -> None:
        if self.tokens < 0:
            object.__setattr__(self, "tokens", tokens_of(self.text))

    def __len__(self) -> int:
        return self.tokens

    @property
    def nbytes(self) -> int:
        """Length of the rendered text."""
        return self.tokens + 8 * len(self.text)

    def render(self) -> bytes:
        """The rendered bytes (SHA-1 key, stored text)."""
        return render(self.text)

    def bucket(self) -> int:
        """The first token stream: only texts sharing it can be prefixes."""
        return self.text[0][0] if self.text else 0

    def startswith(self, other: object) -> bool:
        """`other` is a byte prefix of this text."""
        assert isinstance(other, SegText)
        return other.tokens <= self.tokens and is_prefix(other.text, self.text)

    def head(self, n: int) -> SegText:
        """The first `n` tokens."""
        return self if n >= self.tokens else SegText(truncate(self.text, n), n)

    def __add__(self, other: SegText) -> SegText:
        return SegText(self.text + other.text, self.tokens + other.tokens)


EMPTY = SegText(())
