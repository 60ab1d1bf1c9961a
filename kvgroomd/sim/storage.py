"""The engine model's storage interface, and the texts it keys files by.

Pure. `Storage` is what `kvgroomd.sim.engine.EngineModel` needs from the
files behind it: a listing of what the engine counts (`Listing`, re-read as
the engine does per store), prefix tests, writes, touches, unlinks. Two
backends implement it: `kvgroomd.sim.memstore` (the simulator's in-memory
directory) and `kvgroomd.testing.dirstore` (a real directory). Texts are
`KeyText` (rendered bytes and a prefix test) and, for the request flow,
`ChatText` (cut and extended by tokens).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, Self

import numpy as np
import numpy.typing as npt

from kvgroomd.format.header import Header


class KeyText(Protocol):
    """A text the engine keys a snapshot by: rendered bytes and a prefix test."""

    @property
    def nbytes(self) -> int:
        """Length of the rendered text."""
        ...

    def render(self) -> bytes:
        """The rendered bytes (their SHA-1 names the file)."""
        ...

    def bucket(self) -> int:
        """Texts with different buckets are never prefixes of each other (0: unknown)."""
        ...

    def startswith(self, other: object) -> bool:
        """`other`'s rendered bytes are a prefix of this text's."""
        ...


class ChatText(KeyText, Protocol):
    """A token sequence the server flow cuts and extends (`len` is in tokens)."""

    def __len__(self) -> int: ...

    def head(self, n: int) -> Self:
        """The first `n` tokens."""
        ...

    def __add__(self, other: Self) -> Self: ...


@dataclass(frozen=True, slots=True)
class ByteText:
    """Rendered bytes alone, as the emulator's callers hand them over."""

    raw: bytes

    @property
    def nbytes(self) -> int:
        """Length of the text."""
        return len(self.raw)

    def render(self) -> bytes:
        """The bytes themselves."""
        return self.raw

    def bucket(self) -> int:
        """Unknown: any text may be a prefix."""
        return 0

    def startswith(self, other: object) -> bool:
        """Byte prefix test."""
        assert isinstance(other, KeyText)  # type: ignore[misc]
        return self.raw.startswith(other.render())


@dataclass(frozen=True, slots=True)
class Listing:
    """What the engine counts in the directory now, one row per entry, in
    name order (the engine's readdir order, made reproducible)."""

    names: list[str]
    tokens: npt.NDArray[np.int64]
    hits: npt.NDArray[np.int64]
    size: npt.NDArray[np.int64]
    created_at: npt.NDArray[np.int64]
    last_used: npt.NDArray[np.int64]
    reason: npt.NDArray[np.int64]
    text_bytes: npt.NDArray[np.int64]
    model_id: npt.NDArray[np.int64]
    quant_bits: npt.NDArray[np.int64]
    ctx_size: npt.NDArray[np.int64]

    @classmethod
    def of(cls, rows: Sequence[tuple[str, Header, int]]) -> Listing:
        """From (name, header, file size) triples."""
        rows = sorted(rows, key=lambda r: r[0])

        def col(f: Callable[[tuple[str, Header, int]], int]) -> npt.NDArray[np.int64]:
            return np.fromiter((f(r) for r in rows), dtype=np.int64, count=len(rows))

        return cls([r[0] for r in rows], col(lambda r: r[1].tokens), col(lambda r: r[1].hits),
                   col(lambda r: r[2]), col(lambda r: r[1].created_at),
                   col(lambda r: r[1].last_used), col(lambda r: int(r[1].reason)),
                   col(lambda r: r[1].text_bytes), col(lambda r: r[1].model_id),
                   col(lambda r: r[1].quant_bits), col(lambda r: r[1].ctx_size))  # fmt: skip

    @property
    def total(self) -> int:
        """Bytes the engine believes the cache holds."""
        return int(self.size.sum())


class Storage(Protocol):
    """The files behind the model: an in-memory directory or a real one."""

    def listing(self) -> Listing:
        """Every entry the engine counts (re-read, as the engine does per store)."""
        ...

    def entry(self, name: str) -> tuple[Header, int] | None:
        """`name`'s header and size if the engine counts it."""
        ...

    def extends(self, name: str, text: KeyText) -> bool:
        """`name`'s stored text is a byte prefix of `text` (by SHA-1 for real files)."""
        ...

    def same_text(self, name: str, text: KeyText) -> bool:
        """`name` holds exactly `text`."""
        ...

    def load(self, name: str, prompt: KeyText) -> bool:
        """Re-read `name`'s text: it hashes to the name and prefixes `prompt`."""
        ...

    def write(self, name: str, header: Header, text: KeyText, trailer: bytes,
              now: float) -> None:  # fmt: skip
        """A new file under `name` (temp file, then rename over any old one)."""
        ...

    def touch(self, name: str, header: Header, now: float) -> None:
        """Rewrite `name`'s first 48 bytes in place with `header`."""
        ...

    def rewrite_trailer(self, name: str, header: Header, trailer: bytes, now: float) -> None:
        """Truncate after the payload, append `trailer`, rewrite the header."""
        ...

    def delete(self, name: str, cause: str, now: float, **fields: object) -> bool:
        """Remove `name` (False when it is already gone); `fields` go to the journal."""
        ...

    def note(self, op: str, name: str, now: float, **fields: object) -> None:
        """Record an event that changes no file (a miss, a reused file, a skipped store)."""
        ...
