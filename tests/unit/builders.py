"""Hand-built Headers, Snapshots and Indexes for unit tests (no filesystem).

Import as `from tests.unit.builders import snapshot, index_of, ...`. Every
builder takes keyword overrides for any header field, so a test states only
the facts it is about.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from kvgroomd.core.decision import Decision, Fingerprint, Result
from kvgroomd.core.drift import Drift
from kvgroomd.core.groomer import Groomer, Step
from kvgroomd.core.index import NAME, SHORT_HEAD, Index, Snapshot, head_key
from kvgroomd.format.header import ABI_CURRENT, Header, Reason, sha1_hex
from kvgroomd.sim.groom import SimTexts

T0 = 1_780_000_000  # a fake "now" in late May 2026, as in the fixtures
HOUR = 3600
DAY = 24 * HOUR
CTX = 32768

_inodes = itertools.count(1000)
_anon = itertools.count(1)


def header(
    *,
    reason: Reason = Reason.CONTINUED,
    tokens: int = 1000,
    text_bytes: int | None = None,
    hits: int = 0,
    quant_bits: int = 2,
    model_id: int = 0,
    ctx_size: int = CTX,
    abi: int = ABI_CURRENT,
    created_at: int = T0 - DAY,
    last_used: int | None = None,
    payload_bytes: int | None = None,
    ext_flags: int = 0,
    reason_code: int = -1,
    layout: int = 0,
    model_fp: int = 0,
) -> Header:
    """A valid version-1 header; text_bytes defaults to tokens (1 byte/token),
    last_used to created_at and payload_bytes to 4096 + 8 * tokens."""
    return Header(
        quant_bits=quant_bits, reason=reason, ext_flags=ext_flags, model_id=model_id,
        tokens=tokens, hits=hits, ctx_size=ctx_size, abi=abi, created_at=created_at,
        last_used=created_at if last_used is None else last_used,
        payload_bytes=4096 + 8 * tokens if payload_bytes is None else payload_bytes,
        text_bytes=tokens if text_bytes is None else text_bytes, reason_code=reason_code,
        layout=layout, model_fp=model_fp,
    )  # fmt: skip


def fingerprint(
    size: int, *, ino: int | None = None, dev: int = 1, mtime_ns: int = 0
) -> Fingerprint:
    """A fake file identity; each call gets a fresh inode unless one is given."""
    return Fingerprint(dev, next(_inodes) if ino is None else ino, size, mtime_ns)


def anon_name() -> str:
    """A fresh, well-formed `<40 hex>.kv` name not derived from any text."""
    return f"{next(_anon):040x}.kv"


def snapshot(
    text: bytes | None = None,
    *,
    name: str | None = None,
    size: int | None = None,
    ino: int | None = None,
    dev: int = 1,
    mtime_ns: int = 0,
    covered: bool = False,
    head: int | None = None,
    **fields: Any,
) -> Snapshot:
    """A Snapshot as the index would hold it.

    With `text`: name = sha1(text).kv, text_bytes = len(text), tokens defaults
    to len(text) and the head bucket is computed from the text. Without it: a
    fresh anonymous name. Size defaults to the header's minimal file size.
    """
    if text is not None:
        fields.setdefault("text_bytes", len(text))
        fields.setdefault("tokens", len(text))
        if name is None:
            name = f"{sha1_hex(text)}.kv"
        if head is None:
            head = head_key(text[:64], len(text))
    h = header(**fields)
    if name is None:
        name = anon_name()
    if size is None:
        size = h.min_file_size
    seen = Fingerprint(dev, next(_inodes) if ino is None else ino, size, mtime_ns)
    return Snapshot(name, name[:40].lower(), h, seen, SHORT_HEAD if head is None else head, covered)


def index_of(*snapshots: Snapshot, capacity: int = 16) -> Index:
    """An Index holding `snapshots`, put in order."""
    index = Index(capacity)
    for s in snapshots:
        index.put(s)
    return index


def chat_text(n: int, *, seed: str = "C") -> bytes:
    """`n` bytes of a deterministic ds4-style conversation; texts of the same
    seed are byte prefixes of each other; different seeds diverge within the
    first 64 bytes (so they fall in different head buckets)."""
    turn = (
        f"<｜User｜>conversation {seed}: question {{i}} about the cache?"
        f"<｜Assistant｜>answer {{i}} for {seed}, with some detail.\n"
    )
    out = bytearray()
    i = 0
    while len(out) < n:
        out += turn.format(i=i).encode()
        i += 1
    return bytes(out[:n])


class MemDisk:
    """A directory in memory for the decision core (the simulator's `Disk`):
    the snapshots' headers and identities in an Index, and their texts."""

    def __init__(self, snaps: Iterable[Snapshot], texts: Mapping[str, bytes]) -> None:
        self.index = index_of(*snaps)
        self.texts = dict(texts)

    def raw(self, name: str) -> bytes:
        return self.texts[name]

    def remove(self, name: str, cause: str, now: float = 0.0) -> None:
        del cause, now
        self.index.pop(name)
        self.texts.pop(name, None)


def indexed(core: Groomer, disk: MemDisk, now: float = T0) -> Step:
    """Feed every file of `disk` to `core` as a start-up rescan would; the step."""
    texts = SimTexts(disk)
    names = np.array([n.encode() for n in disk.index.names], dtype=NAME)
    step, _ = core.rescanned(Drift(names, names[:0], ()), texts.heads(names), texts, now,
                             quiet=True, listed=names)  # fmt: skip
    return step


def settle_all(core: Groomer, step: Step, disk: MemDisk | None = None) -> list[Decision]:
    """Carry out every decision of `step` (unlink from `disk`), as the daemon would."""
    for d in step.decisions:
        if disk is not None:
            disk.remove(d.name, str(d.cause))
        core.settle(d, Result.UNLINKED)
    return step.decisions
