"""Reading snapshot files: lstat, the header and text head, the text.

Shell. Opens with O_NOFOLLOW|O_NONBLOCK (a symlink is never followed, a FIFO
named like a snapshot never blocks), always relative to the pinned cache
directory's descriptor (pinned.py), and reports anything that is not a usable
snapshot as `Invalid` with a reason: such a file is logged, never counted,
never deleted.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from kvgroomd.core.decision import Fingerprint, wrap_ns
from kvgroomd.core.facts import Invalid, Loaded
from kvgroomd.core.index import (
    BKEY_KNOWN,
    ODD_NAME,
    ROW,
    TAIL_KNOWN,
    Snapshot,
    names_array,
    parse_names,
)
from kvgroomd.daemon.pinned import PinnedDir
from kvgroomd.format.bulk import classify
from kvgroomd.format.header import PREFIX_BYTES, Header, Reason, Unparsable, read_header
from kvgroomd.format.layouts import ROW_FIELDS, Reading
from kvgroomd.format.names import SnapshotName
from kvgroomd.format.prefix import FIRST_READ, TAIL_BYTES, batch_keys, tail_of, text_keys

DETECTING = Reading()  # each file in the layout its header proves; counted as upstream's engine
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_TEXT_LEN = struct.Struct("<I")


def fingerprint(st: os.stat_result) -> Fingerprint:
    """The identity the deleter re-checks before it unlinks."""
    return Fingerprint.of(st)


def _open(directory: PinnedDir, name: str) -> int | Invalid | None:
    try:
        return directory.open(name, _OPEN_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
            return Invalid(name, "not_regular", "symlink")
        return Invalid(name, "unreadable", f"{e.strerror} (errno {e.errno})")


def judge_header(name: str, raw: bytes, size: int, seen: Fingerprint,
                 reading: Reading) -> Header | Invalid:  # fmt: skip
    """The header of file `name` (first bytes `raw`, `size` bytes) as
    `reading` takes it, or why not: unusable, or of a layout the engine does
    not read (`other_layout`: counted apart, never evicted for its budget)."""
    header = read_header(raw, size, engine=reading.engine)
    if isinstance(header, Unparsable):
        return Invalid(name, header.why, header.detail, seen)
    if not reading.keeps(header.layout, header.abi):
        return Invalid(name, "other_layout", reading.refusal(header.layout, header.abi), seen,
                       layout=header.layout_name)  # fmt: skip
    return header


def read_snapshot(directory: PinnedDir, name: SnapshotName, *,
                  reading: Reading = DETECTING) -> Snapshot | Invalid | None:  # fmt: skip
    """Parse `<sha>.kv` in `directory` as `reading` says (the engine's
    layout: format/layouts.py); None when it no longer exists."""
    fd = _open(directory, name.name)
    if not isinstance(fd, int):
        return fd
    try:
        st = os.fstat(fd)
        seen = fingerprint(st)
        if not stat.S_ISREG(st.st_mode):
            kind = "directory" if stat.S_ISDIR(st.st_mode) else "special file"
            return Invalid(name.name, "not_regular", kind, seen)
        try:
            # One page holds the header and the text's head (prefix.py keys).
            raw = os.pread(fd, FIRST_READ, 0)
            header = judge_header(name.name, raw, st.st_size, seen, reading)
            if isinstance(header, Invalid):
                return header
            start = header.text_at
            end = start + header.text_bytes
            # A text longer than the first read: its last bytes are one more pread.
            last = raw if end <= len(raw) else os.pread(fd, TAIL_BYTES, end - TAIL_BYTES)
        except OSError as e:
            return Invalid(name.name, "unreadable", e.strerror or str(e), seen)
    finally:
        os.close(fd)
    n = header.text_bytes
    tail: int | None = tail_of(raw[start:end], n)
    if last is not raw:
        tail = int.from_bytes(last, "little") if len(last) == TAIL_BYTES else None
    head, bkey, _probes = text_keys(raw[start:end], n)
    return Snapshot(name.name, name.sha, header, seen, head, tail=tail, bkey=bkey)


def read_text(directory: PinnedDir, snap: Snapshot) -> bytes | None:
    """The text of `snap`, if the file is still the same inode and whole."""
    return _text_at(snap.name, directory.fd, snap.seen.dev, snap.seen.ino,
                    snap.header.text_bytes, snap.header.text_at)  # fmt: skip


def _text_at(name: str, dir_fd: int, dev: int, ino: int, n: int,  # noqa: PLR0917
             at: int) -> bytes | None:  # fmt: skip
    try:
        fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (dev, ino):
            return None  # replaced since it was indexed; its own event follows
        text = os.pread(fd, n, at)
    except OSError:
        return None
    finally:
        os.close(fd)
    return text if len(text) == n else None


def read_texts(directory: PinnedDir, names: Sequence[str] | npt.NDArray[np.bytes_],
               lengths: Sequence[int] | npt.NDArray[np.integer[Any]],
               tick: Callable[[], None] = lambda: None, *,
               offsets: Sequence[int] | npt.NDArray[np.integer[Any]] | None = None,
               ) -> Iterator[bytes | None]:  # fmt: skip
    """The texts of many files (`lengths[i]` text bytes of `names[i]`, str or
    an index.NAME array, starting at byte `offsets[i]`: the rows'
    `layouts.text_offsets(layout)`, 52 for every file by default), in order,
    through one directory fd; None for a file gone or short. Unlike
    `read_text` the inode is not compared: callers prove what a text is by
    its SHA-1 (its name). `tick` is called every 256 files (it may raise)."""
    dfd = directory.fd
    for i in range(len(names)):
        if i % 256 == 255:
            tick()
        name = names[i]
        n = int(lengths[i])
        try:
            fd = os.open(name.decode() if isinstance(name, bytes) else name, _OPEN_FLAGS,
                         dir_fd=dfd)  # fmt: skip
        except OSError:
            yield None
            continue
        try:
            text = os.pread(fd, n, PREFIX_BYTES if offsets is None else int(offsets[i]))
        except OSError:
            text = b""
        finally:
            os.close(fd)
        yield text if len(text) == n else None


# -- many files at once (start-up, reconcile) ---------------------------------

# One slot per file: 4 bytes of padding, the first read, 4 more, so the text
# starts at byte 56 (8-aligned words for prefix.batch_keys).
_PAD = 4
_TEXT_AT = _PAD + PREFIX_BYTES
_SLOT = _PAD + FIRST_READ + 4
_CHAIN = np.zeros(256, dtype=bool)  # reason code -> takes part in prefix chains
_CHAIN[[int(r) for r in (Reason.COLD, Reason.CONTINUED, Reason.EVICT, Reason.SHUTDOWN)]] = True


def read_many(directory: PinnedDir, names: Sequence[str] | npt.NDArray[np.bytes_], *,
              batch: int = 2048, tick: Callable[[], None] = lambda: None,
              reading: Reading = DETECTING) -> Loaded:  # fmt: skip
    """`read_snapshot` for many names of `directory` (str or an index.NAME
    array), with the same results, at a fraction of the cost: files are
    opened relative to a directory fd, read straight into a reused buffer and
    parsed into index rows by numpy; names become str one batch at a time.
    `tick` is called between batches (it may raise to stop)."""
    every = names_array(names)
    dfd = directory.fd
    buf = np.zeros((min(batch, max(len(every), 1)), _SLOT), dtype=np.uint8)
    views = [memoryview(buf[i, _PAD : _PAD + FIRST_READ]) for i in range(len(buf))]  # type: ignore[arg-type]
    parts: list[tuple[npt.NDArray[np.void], npt.NDArray[np.intp], npt.NDArray[np.int32],
                      npt.NDArray[np.uint32]]] = []  # fmt: skip
    invalid: list[Invalid] = []
    gone: list[str] = []
    for start in range(0, len(every), len(buf)):
        tick()
        part = every[start : start + len(buf)]
        chunk = [n.decode() for n in part.tolist()]
        got = _read_batch(dfd, chunk, views, invalid, gone)
        rows, kept, probe_rows, probe_keys = _parse_batch(buf, chunk, part, got, invalid, dfd,
                                                          reading)  # fmt: skip
        parts.append((rows, start + kept, probe_rows, probe_keys))
        del chunk, got
    rows = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=ROW)
    offsets = np.cumsum([0] + [len(p[0]) for p in parts])
    return Loaded(
        rows=rows,
        names=every[np.concatenate([p[1] for p in parts])] if parts else every[:0],
        invalid=invalid,
        gone=gone,
        probe_rows=np.concatenate([p[2] + int(off) for p, off in zip(parts, offsets, strict=False)])
        if parts else np.zeros(0, dtype=np.int32),
        probe_keys=np.concatenate([p[3] for p in parts]) if parts else np.zeros(0, np.uint32),
    )  # fmt: skip


class _Got:
    """One batch's reads: for each regular file, its slot, bytes read and stat."""

    def __init__(self) -> None:
        self.slot: list[int] = []
        self.nread: list[int] = []
        self.stat: list[os.stat_result] = []


def _read_batch(dfd: int, chunk: Sequence[str], views: list[memoryview],
                invalid: list[Invalid], gone: list[str]) -> _Got:  # fmt: skip
    # The hot loop of a start-up: four syscalls a file and as little Python
    # around them as possible (the names bound locally, no parsing here).
    got = _Got()
    slots, nreads, stats = got.slot, got.nread, got.stat
    open_, fstat, preadv, close, isreg = os.open, os.fstat, os.preadv, os.close, stat.S_ISREG
    flags = _OPEN_FLAGS
    for i, name in enumerate(chunk):
        try:
            fd = open_(name, flags, dir_fd=dfd)
        except FileNotFoundError:
            gone.append(name)
            continue
        except OSError as e:
            why = "not_regular" if e.errno == errno.ELOOP else "unreadable"
            detail = "symlink" if e.errno == errno.ELOOP else f"{e.strerror} (errno {e.errno})"
            invalid.append(Invalid(name, why, detail))
            continue
        try:
            st = fstat(fd)
            if not isreg(st.st_mode):
                kind = "directory" if stat.S_ISDIR(st.st_mode) else "special file"
                invalid.append(Invalid(name, "not_regular", kind, fingerprint(st)))
                continue
            n = preadv(fd, (views[i],), 0)
        except OSError as e:
            invalid.append(Invalid(name, "unreadable", e.strerror or str(e), fingerprint(st)))
            continue
        finally:
            close(fd)
        slots.append(i)
        nreads.append(n)
        stats.append(st)
    return got


def _tails(dfd: int, chunk: Sequence[str], want: list[tuple[int, int]]) -> dict[int, bytes]:
    """The last 8 text bytes of texts longer than the first read: (slot, end)."""
    out = {}
    for i, end in want:
        try:
            fd = os.open(chunk[i], _OPEN_FLAGS, dir_fd=dfd)
        except OSError:
            continue
        try:
            out[i] = os.pread(fd, TAIL_BYTES, end - TAIL_BYTES)
        except OSError:
            pass
        finally:
            os.close(fd)
    return out


def _parse_batch(  # noqa: PLR0915, PLR0917 - one vectorised pass, in the order of the format
                 buf: npt.NDArray[np.uint8], chunk: Sequence[str],
                 part: npt.NDArray[np.bytes_], got: _Got, invalid: list[Invalid],
                 dfd: int, reading: Reading) -> tuple[npt.NDArray[np.void], npt.NDArray[np.intp],
                                    npt.NDArray[np.int32], npt.NDArray[np.uint32]]:  # fmt: skip
    """Rows of the usable files of one batch, their slots in it, and probes."""
    m = len(got.slot)
    slot = np.asarray(got.slot, dtype=np.intp)
    whole = m == len(chunk)  # every name a regular file, in slots 0..m-1: views, no copies
    nread = np.asarray(got.nread, dtype=np.int64)
    st = np.array([(s.st_dev, s.st_ino, s.st_size, wrap_ns(s.st_mtime_ns)) for s in got.stat],
                  dtype=np.int64).reshape(m, 4)  # fmt: skip
    size = st[:, 2]
    # The verdicts of read_header, vectorised over the layout registry.
    found = classify(buf, offset=_PAD, stride=_SLOT, rows=slot, nread=nread, size=size,
                     engine=reading.engine)  # fmt: skip
    ok = found.layout >= 0
    ok[ok] = reading.keeps_mask(found.code[ok], found.columns["abi"][ok])
    for j in np.flatnonzero(~ok):  # the reason, in read_snapshot's words
        i = int(slot[j])
        raw = buf[i, _PAD : _PAD + int(nread[j])].tobytes()
        seen = Fingerprint(*(int(v) for v in st[j]))
        bad = judge_header(chunk[i], raw, int(size[j]), seen, reading)
        invalid.append(bad if isinstance(bad, Invalid) else Invalid(chunk[i], "invalid", "?", seen))
    hdr, code, at = found.columns, found.code, found.text_at
    if not ok.all():
        keep = np.flatnonzero(ok)
        slot, nread, st, code, at = slot[keep], nread[keep], st[keep], code[keep], at[keep]
        hdr = {k: v[keep] for k, v in hdr.items()}
        whole = False
    text = hdr["text_bytes"].astype(np.int64)
    n = len(slot)
    rows = np.zeros(n, dtype=ROW)
    sha, _ok, odd = parse_names(part[slot])  # the caller listed valid snapshot names
    for field in ("sha_hi", "sha_mid", "sha_lo"):  # SHA_FIELDS
        rows[field] = sha[field]
    for column, field in enumerate(("dev", "ino", "size", "mtime_ns")):
        rows[field] = st[:, column]
    for field in ROW_FIELDS:  # every header field the index keeps (the reason below)
        if field != "reason":
            rows[field] = hdr[field]
    rows["layout"] = code
    reason = hdr["reason"]
    known = reason <= max(Reason)
    rows["reason"] = np.where(known, reason, int(Reason.UNKNOWN))
    rows["reason_code"] = np.where(known, -1, reason.astype(np.int16))
    # Texts that start later than a version-1 file's (the 72-byte header):
    # moved to where batch_keys and the tails below read every text.
    for j in np.flatnonzero(at != PREFIX_BYTES):
        i, start = int(slot[j]), _PAD + int(at[j])
        held = max(int(nread[j]) - int(at[j]), 0)
        buf[i, _TEXT_AT : _TEXT_AT + held] = buf[i, start : start + held].copy()
    available = np.maximum(nread - at, 0)
    head, bkey, probe_rows, probe_keys = batch_keys(buf, _TEXT_AT, text, available,
                                                    None if whole else slot)  # fmt: skip
    rows["head"], rows["bkey"] = head, bkey
    # Last 8 text bytes: from the slot when the read held them, else one more pread.
    tail = np.zeros(n, dtype=np.uint64)
    inside = (text >= TAIL_BYTES) & (text <= available)
    flat = buf.reshape(-1)
    words = np.ndarray((len(flat) - 7,), dtype="<u8", buffer=flat, strides=(1,))
    tail[inside] = words[slot[inside] * _SLOT + _TEXT_AT + text[inside] - TAIL_BYTES]
    tail_known = inside.copy()
    outside = np.flatnonzero(~inside)
    if len(outside):
        longer = [(int(slot[j]), int(at[j]) + int(text[j])) for j in outside
                  if text[j] > available[j] and text[j] >= TAIL_BYTES]  # fmt: skip
        extra = _tails(dfd, chunk, longer)
        for j in outside:
            i, length = int(slot[j]), int(text[j])
            if length < TAIL_BYTES and length <= available[j]:
                tail[j] = tail_of(buf[i, _TEXT_AT : _TEXT_AT + length].tobytes(), length)
                tail_known[j] = True
            elif len(extra.get(i, b"")) == TAIL_BYTES:
                tail[j] = int.from_bytes(extra[i], "little")
                tail_known[j] = True
    rows["tail"] = tail
    rows["flags"] = BKEY_KNOWN | np.where(tail_known, TAIL_KNOWN, 0) | np.where(odd, ODD_NAME, 0)
    chain = _CHAIN[rows["reason"]][probe_rows]  # only they supersede or cover
    return (rows, slot, probe_rows[chain].astype(np.int32),
            probe_keys[chain].astype(np.uint32))  # fmt: skip
