"""Cheap keys of a snapshot's text, for finding prefix candidates without SHA-1.

Pure. The engine names a file by SHA-1 of its whole text, which says nothing
about its prefixes; proving "O's text is a strict prefix of N's" takes one
SHA-1 pass over N's text (supersede.prove). These keys only narrow down which
O to prove, from what the first read of a file already holds:

* `head`: the first 64 text bytes (SHORT_HEAD for shorter texts), a bucket;
* `tail`: the last 8 text bytes, as a little-endian u64 (fewer for tiny
  texts). O can be a prefix of N only if N's 8 bytes ending at len(O) equal
  O's tail: one vectorised gather over the index filters candidates;
* `bkey` and `probes`: a polynomial hash of the text's first k whole 32-byte
  blocks, for k up to MAX_BLOCKS (what the first 4 KiB read holds). A text's
  `bkey` is that hash at its own deepest block; its `probes` are the hashes
  at every depth. O can be a prefix of N only if O's bkey is among N's
  probes, so a full sweep is a sort-and-search join, not a scan of the
  index per snapshot. Real chat texts share a system prompt (every text in a
  bucket by head), which is why neither head nor length alone is enough.

All of it is arithmetic modulo 2**64 on numpy uint64 arrays; a collision only
costs a SHA-1 check that then fails. The vectorised batch form and the
one-text form share `_block_sums`/`_finish`, so they agree bit for bit.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

HEAD_BYTES = 64  # texts sharing a chain share their first HEAD_BYTES
SHORT_HEAD = 0  # head of texts shorter than HEAD_BYTES: a bucket every lookup includes
BLOCK = 32  # bytes per block of the prefix keys
WORDS = BLOCK // 8
FIRST_READ = 4096  # bytes read from a file's start: header + text head
MAX_BLOCKS = (FIRST_READ - 52) // BLOCK  # whole blocks of text the first read holds
HEAD_DEPTH = HEAD_BYTES // BLOCK
TAIL_BYTES = 8

U64 = npt.NDArray[np.uint64]
_M = (1 << 64) - 1
# A block's value is sum(w_i * C_i) over its little-endian 8-byte words (one
# integer matmul for a whole batch); the prefix hash of the first d blocks is
# the polynomial P(d) = sum(b_j * R**(d-j)) modulo 2**64, R odd, computed as
# R**d * cumsum(b_j * R**-j) with one flat cumsum for the batch, rebased per
# text. Blocks past a text's end are garbage and harmless: a prefix sum never
# looks ahead. A block key is fmix(P(d) + salt_d).
_WORD_MUL = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                      0xD6E8FEB86659FD93], dtype=np.uint64)[:WORDS]  # fmt: skip
_R = 0x100000001B3 * 2 + 1
_RINV = pow(_R, -1, 1 << 64)
_DEPTH = 0x2545F4914F6CDD1D
_SEED = 0x6A09E667F3BCC909
_POW = np.array([pow(_R, k, 1 << 64) for k in range(MAX_BLOCKS + 1)], dtype=np.uint64)
_IPOW = np.array([pow(_RINV, k, 1 << 64) for k in range(MAX_BLOCKS + 1)], dtype=np.uint64)
_DEPTH_SALT = np.array([(_SEED + k * _DEPTH) & _M for k in range(MAX_BLOCKS + 1)], dtype=np.uint64)


def _fmix(h: U64) -> U64:
    """MurmurHash3's 64-bit finaliser, in place on a uint64 array."""
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xFF51AFD7ED558CCD)
    h ^= h >> np.uint64(33)
    h *= np.uint64(0xC4CEB9FE1A85EC53)
    h ^= h >> np.uint64(33)
    return h


def _block_sums(words: npt.NDArray[np.uint64], k: npt.NDArray[np.intp], kmax: int) -> U64:
    """P(1..k_i) of each row of (n, kmax * WORDS) words, flat (row by row):
    only each row's own whole blocks are gathered, summed and run over."""
    n = len(words)
    used = np.arange(kmax)[None, :] < k[:, None]
    blocks = words[np.repeat(used, WORDS, axis=1)].reshape(-1, WORDS) @ _WORD_MUL
    depth = np.broadcast_to(np.arange(1, kmax + 1), (n, kmax))[used]
    running = np.cumsum(blocks * _IPOW[depth])
    # Rebase each row on the running sum where it starts.
    ends = np.cumsum(k)
    before = np.zeros(n, dtype=np.uint64)
    before[1:] = np.where(ends[:-1] > 0, running[np.maximum(ends[:-1] - 1, 0)], 0)
    return (running - np.repeat(before, k)) * _POW[depth]


def _finish(sums: U64, depth: npt.NDArray[np.intp]) -> U64:
    """Block keys from block sums at `depth` (depth 0: the empty prefix, sum 0)."""
    return _fmix(sums + _DEPTH_SALT[depth])


def blocks_of(text_bytes: int, available: int) -> int:
    """Whole blocks a text contributes to its keys (capped by what was read)."""
    return min(text_bytes, available, MAX_BLOCKS * BLOCK) // BLOCK


def text_keys(head: bytes, text_bytes: int) -> tuple[int, int, U64]:
    """(head key, bkey, probes) of one text from its first bytes `head`
    (len(head) may be less than text_bytes when the text is longer than the
    first read). probes[k] is the key of the first k blocks, k = 0..depth."""
    k = blocks_of(text_bytes, len(head))
    sums = np.zeros(k + 1, dtype=np.uint64)
    sums[1:] = _block_sums(np.frombuffer(head, dtype="<u8", count=k * WORDS).reshape(1, -1),
                           np.array([k], dtype=np.intp), k)  # fmt: skip
    probes = _finish(sums, np.arange(k + 1))
    return head_of(probes, text_bytes), int(probes[k]), probes


def head_of(probes: U64, text_bytes: int) -> int:
    """The head key: the one-block key, SHORT_HEAD for texts under 64 bytes."""
    if text_bytes < HEAD_BYTES or len(probes) <= HEAD_DEPTH:
        return SHORT_HEAD
    return int(probes[HEAD_DEPTH]) or 1


def tail_of(text: bytes | memoryview, end: int) -> int:
    """The (up to) 8 bytes of `text` ending at `end`, little-endian."""
    return int.from_bytes(text[max(0, end - TAIL_BYTES) : end], "little")


def windows(text: bytes) -> npt.NDArray[np.uint64] | None:
    """windows(text)[p] is the u64 of text[p:p+8]: a zero-copy view (None for
    texts under 8 bytes). tail_of(text, e) == windows(text)[e - 8] for e >= 8."""
    if len(text) < TAIL_BYTES:
        return None
    return np.ndarray(shape=(len(text) - TAIL_BYTES + 1,), dtype="<u8", buffer=text, strides=(1,))


def batch_keys(slots: npt.NDArray[np.uint8], text_at: int, text_bytes: npt.NDArray[np.int64],
               available: npt.NDArray[np.int64], rows: npt.NDArray[np.intp] | None = None,
               ) -> tuple[U64, U64, npt.NDArray[np.intp], U64]:  # fmt: skip
    """Keys of many texts at once, equal to `text_keys` of each.

    `slots` is (m, width) bytes, one file's first read per row with the text
    starting at byte `text_at` (a multiple of 8, so blocks are aligned words);
    the texts are `slots[rows]` (the first len(text_bytes) by default) and `available[i]`
    text bytes of the i-th are valid. Returns (head, bkey, probe_rows,
    probe_keys): the probes as flat arrays, text i's keys for depths 0..k_i
    in order.
    """
    n = len(text_bytes)
    k = (np.minimum(np.minimum(text_bytes, available), MAX_BLOCKS * BLOCK) // BLOCK).astype(np.intp)
    kmax = int(k.max()) if n else 0
    w0 = text_at // 8
    words = slots.view("<u8")[:, w0 : w0 + kmax * WORDS]  # a view: no copy of the buffer
    words = words[:n] if rows is None else words[rows]
    # Row i's probes sit at off[i] + depth, depth 0 (the empty prefix) included.
    off = np.cumsum(k + 1) - (k + 1)
    total = int(off[-1] + k[-1] + 1) if n else 0
    depth = np.zeros(total, dtype=np.intp)
    sums = np.zeros(total, dtype=np.uint64)
    blocks_at = np.repeat(off, k) + np.broadcast_to(np.arange(1, kmax + 1), (n, kmax))[
        np.arange(kmax)[None, :] < k[:, None]]  # fmt: skip
    depth[blocks_at] = blocks_at - np.repeat(off, k)
    sums[blocks_at] = _block_sums(words, k, kmax)
    probe_keys = _finish(sums, depth)
    probe_rows = np.repeat(np.arange(n), k + 1)
    bkey = probe_keys[off + k]
    head = np.full(n, SHORT_HEAD, dtype=np.uint64)
    has = (text_bytes >= HEAD_BYTES) & (k >= HEAD_DEPTH)
    head[has] = probe_keys[off[has] + HEAD_DEPTH]
    head[has & (head == SHORT_HEAD)] = 1
    return head, bkey, probe_rows, probe_keys
