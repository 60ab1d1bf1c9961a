"""prefix.py: the cheap text keys that narrow down supersession candidates.

The batch form (read_many) must give exactly what the one-text form
(read_snapshot) gives, and a prefix's keys must always be found among the
longer text's probes: a miss there would hide a supersession.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from kvgroomd.format.header import PREFIX_BYTES
from kvgroomd.format.prefix import (
    BLOCK,
    FIRST_READ,
    HEAD_BYTES,
    MAX_BLOCKS,
    SHORT_HEAD,
    batch_keys,
    tail_of,
    text_keys,
    windows,
)
from tests.unit.builders import chat_text

AVAILABLE = FIRST_READ - PREFIX_BYTES  # text bytes one first read holds
EDGES = [0, 1, 7, 8, 9, BLOCK - 1, BLOCK, BLOCK + 1, HEAD_BYTES - 1, HEAD_BYTES, 500,
         MAX_BLOCKS * BLOCK - 1, MAX_BLOCKS * BLOCK, AVAILABLE, AVAILABLE + 1, 9000]  # fmt: skip


def texts(seed: int, n: int) -> list[bytes]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = EDGES[i] if i < len(EDGES) else rng.randrange(0, 7000)
        base = chat_text(length + 100, seed=str(rng.randrange(4)))  # shared heads
        out.append(base[rng.randrange(50) :][:length] if i % 2 else base[:length])
    return out


def slots_of(ts: list[bytes], text_at: int = 56, width: int = 4104) -> tuple[np.ndarray, ...]:
    """A read_many-like buffer: each text's first read at `text_at`, garbage after."""
    slots = np.full((len(ts), width), 0xA5, dtype=np.uint8)
    available = np.zeros(len(ts), dtype=np.int64)
    for i, t in enumerate(ts):
        a = min(len(t), AVAILABLE)
        slots[i, text_at : text_at + a] = np.frombuffer(t[:a], dtype=np.uint8)
        available[i] = a
    return slots, np.array([len(t) for t in ts], dtype=np.int64), available


class TestBatchEqualsOne:
    def test_head_bkey_and_probes_agree(self) -> None:
        """batch_keys gives each text exactly text_keys' head, bkey and probes."""
        ts = texts(1, 120)
        slots, lengths, available = slots_of(ts)
        head, bkey, probe_rows, probe_keys = batch_keys(slots, 56, lengths, available)
        for i, t in enumerate(ts):
            h, b, probes = text_keys(t[:AVAILABLE], len(t))
            assert int(head[i]) == h
            assert int(bkey[i]) == b
            assert probe_keys[probe_rows == i].tolist() == probes.tolist()

    def test_probe_rows_are_grouped_in_order(self) -> None:
        """Each row's probes are contiguous, depth 0 first, rows in order."""
        ts = texts(2, 30)
        _, _, probe_rows, _ = batch_keys(*slots_of(ts)[:1], 56, *slots_of(ts)[1:])
        assert (np.diff(probe_rows) >= 0).all()
        assert sorted(set(probe_rows.tolist())) == list(range(len(ts)))

    def test_empty_batch(self) -> None:
        """No texts: empty keys, no error."""
        slots = np.zeros((0, 4104), dtype=np.uint8)
        none = np.zeros(0, dtype=np.int64)
        head, bkey, probe_rows, probe_keys = batch_keys(slots, 56, none, none)
        assert len(head) == len(bkey) == len(probe_rows) == len(probe_keys) == 0


class TestPrefixProperty:
    @pytest.mark.parametrize("cut", [0, 1, 31, 32, 33, 64, 100, 2000, AVAILABLE - 1, 5000])
    def test_a_prefix_bkey_is_among_the_longer_probes(self, cut: int) -> None:
        """Whatever the lengths, O = N[:cut] has its bkey in N's probes."""
        n = chat_text(6000)
        _, bkey, _ = text_keys(n[:cut][:AVAILABLE], cut)
        _, _, probes = text_keys(n[:AVAILABLE], len(n))
        assert bkey in probes.tolist()

    def test_a_text_diverging_early_has_other_keys(self) -> None:
        """Texts differing in their first block share no probe beyond depth 0."""
        a, b = chat_text(3000, seed="A"), chat_text(3000, seed="B")
        _, _, pa = text_keys(a, len(a))
        _, _, pb = text_keys(b, len(b))
        assert set(pa.tolist()) & set(pb.tolist()) == {int(pa[0])}

    def test_heads(self) -> None:
        """The head is SHORT_HEAD below 64 bytes, equal for equal first 64 bytes."""
        t = chat_text(500)
        assert text_keys(t[:63], 63)[0] == SHORT_HEAD
        assert text_keys(t[:64], 64)[0] == text_keys(t, 500)[0] != SHORT_HEAD
        assert text_keys(chat_text(500, seed="X"), 500)[0] != text_keys(t, 500)[0]


class TestTail:
    def test_windows_agree_with_tail_of(self) -> None:
        """windows(text)[e - 8] is tail_of(text, e) for every end e >= 8."""
        t = chat_text(300)
        w = windows(t)
        assert w is not None
        assert all(int(w[e - 8]) == tail_of(t, e) for e in range(8, len(t) + 1))
        assert windows(b"short") is None

    def test_tiny_texts(self) -> None:
        """Texts under 8 bytes: the tail is what there is."""
        assert tail_of(b"abc", 3) == int.from_bytes(b"abc", "little")
        assert tail_of(b"", 0) == 0
