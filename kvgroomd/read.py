"""Reading snapshot files: lstat, the header and text head, the text.

Shell. Opens with O_NOFOLLOW|O_NONBLOCK (a symlink is never followed, a FIFO
named like a snapshot never blocks) and reports anything that is not a usable
snapshot as `Invalid` with a reason: such a file is logged, never counted,
never deleted.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from kvgroomd.decision import Fingerprint
from kvgroomd.index import BKEY_KNOWN, ODD_NAME, ROW, SHA_FIELDS, TAIL_KNOWN, Snapshot
from kvgroomd.names import SnapshotName
from kvgroomd.prefix import FIRST_READ, TAIL_BYTES, batch_keys, tail_of, text_keys
from kvgroomd.snapshot import (
    KNOWN_ABIS,
    MAGIC,
    PREFIX_BYTES,
    QUANT_BITS,
    VERSION,
    Header,
    Reason,
    Unparsable,
    check_size,
)

_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_TEXT_LEN = struct.Struct("<I")


@dataclass(frozen=True, slots=True)
class Invalid:
    """A snapshot-named entry kvgroomd will not act on, and why."""

    name: str
    why: str  # short | magic | unknown_format | invalid | truncated | not_regular | unreadable
    detail: str
    seen: Fingerprint | None = None


def fingerprint(st: os.stat_result) -> Fingerprint:
    """The identity the deleter re-checks before it unlinks."""
    return Fingerprint(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _open(path: Path) -> int | Invalid | None:
    try:
        return os.open(path, _OPEN_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
            return Invalid(path.name, "not_regular", "symlink")
        return Invalid(path.name, "unreadable", f"{e.strerror} (errno {e.errno})")


def read_snapshot(directory: Path, name: SnapshotName) -> Snapshot | Invalid | None:
    """Parse `<sha>.kv` in `directory`; None when it no longer exists."""
    fd = _open(directory / name.name)
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
            header = Header.parse(raw)
            if isinstance(header, Header):
                header = check_size(header, st.st_size) or header
            if isinstance(header, Unparsable):
                return Invalid(name.name, header.why, header.detail, seen)
            end = PREFIX_BYTES + header.text_bytes
            # A text longer than the first read: its last bytes are one more pread.
            last = raw if end <= len(raw) else os.pread(fd, TAIL_BYTES, end - TAIL_BYTES)
        except OSError as e:
            return Invalid(name.name, "unreadable", e.strerror or str(e), seen)
    finally:
        os.close(fd)
    n = header.text_bytes
    tail: int | None = tail_of(raw[PREFIX_BYTES:end], n)
    if last is not raw:
        tail = int.from_bytes(last, "little") if len(last) == TAIL_BYTES else None
    head, bkey, _probes = text_keys(raw[PREFIX_BYTES:end], n)
    return Snapshot(name.name, name.sha, header, seen, head, tail=tail, bkey=bkey)


def read_text(directory: Path, snap: Snapshot) -> bytes | None:
    """The text of `snap`, if the file is still the same inode and whole."""
    return _text_at(os.path.join(directory, snap.name), None, snap.seen.dev, snap.seen.ino,
                    snap.header.text_bytes)  # fmt: skip


def _text_at(name: str, dir_fd: int | None, dev: int, ino: int, n: int) -> bytes | None:
    try:
        fd = os.open(name, _OPEN_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (dev, ino):
            return None  # replaced since it was indexed; its own event follows
        text = os.pread(fd, n, PREFIX_BYTES)
    except OSError:
        return None
    finally:
        os.close(fd)
    return text if len(text) == n else None


def read_texts(directory: Path, wanted: Sequence[tuple[str, int]],
               tick: Callable[[], None] = lambda: None) -> Iterator[bytes | None]:  # fmt: skip
    """The texts of many (name, text_bytes), in order, through one directory
    fd; None for a file gone or short. Unlike `read_text` the inode is not
    compared: callers prove what a text is by its SHA-1 (its name). `tick`
    is called every 256 files (it may raise)."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, (name, n) in enumerate(wanted):
            if i % 256 == 255:
                tick()
            try:
                fd = os.open(name, _OPEN_FLAGS, dir_fd=dfd)
            except OSError:
                yield None
                continue
            try:
                text = os.pread(fd, n, PREFIX_BYTES)
            except OSError:
                text = b""
            finally:
                os.close(fd)
            yield text if len(text) == n else None
    finally:
        os.close(dfd)


# -- many files at once (start-up, reconcile) ---------------------------------

# One slot per file: 4 bytes of padding, the first read, 4 more, so the text
# starts at byte 56 (8-aligned words for prefix.batch_keys).
_PAD = 4
_TEXT_AT = _PAD + PREFIX_BYTES
_SLOT = _PAD + FIRST_READ + 4
_HEADER = np.dtype(
    [("magic", "S3"), ("version", "u1"), ("quant_bits", "u1"), ("reason", "u1"),
     ("ext_flags", "u1"), ("model_id", "u1"), ("tokens", "<u4"), ("hits", "<u4"),
     ("ctx_size", "<u4"), ("abi", "u1"), ("_reserved", "V3"), ("created_at", "<u8"),
     ("last_used", "<u8"), ("payload_bytes", "<u8"), ("text_bytes", "<u4")]
)  # fmt: skip
assert _HEADER.itemsize == PREFIX_BYTES
_NAME_SHA = SHA_FIELDS
_CHAIN_CODES = [int(r) for r in (Reason.COLD, Reason.CONTINUED, Reason.EVICT, Reason.SHUTDOWN)]


@dataclass
class Loaded:
    """What `read_many` found: index rows (ROW) of the usable snapshots, in
    the order of `names`, the unusable ones, and each row's prefix probes
    (prefix.py) as flat arrays: `probe_keys[j]` belongs to `rows[probe_rows[j]]`.
    Probe keys keep the low 32 bits of prefix.py's keys (half the memory;
    a chance collision only adds a candidate that its SHA-1 then rejects)."""

    rows: npt.NDArray[np.void]
    names: list[str]
    invalid: list[Invalid]
    gone: list[str]  # vanished between the listing and the open
    probe_rows: npt.NDArray[np.int32]
    probe_keys: npt.NDArray[np.uint32]


def read_many(directory: Path, names: Sequence[str], *, batch: int = 2048,
              tick: Callable[[], None] = lambda: None) -> Loaded:  # fmt: skip
    """`read_snapshot` for many names of `directory`, with the same results,
    at a fraction of the cost: files are opened relative to a directory fd,
    read straight into a reused buffer and parsed into index rows by numpy.
    `tick` is called between batches (it may raise to stop)."""
    dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    buf = np.zeros((min(batch, max(len(names), 1)), _SLOT), dtype=np.uint8)
    views = [memoryview(buf[i, _PAD : _PAD + FIRST_READ]) for i in range(len(buf))]  # type: ignore[arg-type]
    parts: list[tuple[npt.NDArray[np.void], list[str], npt.NDArray[np.intp], npt.NDArray[np.uint64]]] = []
    invalid: list[Invalid] = []
    gone: list[str] = []
    try:
        for start in range(0, len(names), len(buf)):
            tick()
            chunk = names[start : start + len(buf)]
            got = _read_batch(dfd, chunk, views, invalid, gone)
            parts.append(_parse_batch(buf, chunk, got, invalid))
    finally:
        os.close(dfd)
    rows = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=ROW)
    offsets = np.cumsum([0] + [len(p[0]) for p in parts])
    return Loaded(
        rows=rows,
        names=[n for p in parts for n in p[1]],
        invalid=invalid,
        gone=gone,
        probe_rows=np.concatenate([p[2] + off for p, off in zip(parts, offsets, strict=False)])
        if parts else np.zeros(0, dtype=np.int32),
        probe_keys=np.concatenate([p[3] for p in parts]) if parts else np.zeros(0, np.uint32),
    )  # fmt: skip


class _Got:
    """One batch's reads: which slots hold a regular file's first bytes."""

    def __init__(self) -> None:
        self.slot: list[int] = []
        self.nread: list[int] = []
        self.dev: list[int] = []
        self.ino: list[int] = []
        self.size: list[int] = []
        self.mtime_ns: list[int] = []
        self.tails: dict[int, bytes] = {}  # slot -> last text bytes, when past the first read


def _read_batch(dfd: int, chunk: Sequence[str], views: list[memoryview],
                invalid: list[Invalid], gone: list[str]) -> _Got:  # fmt: skip
    got = _Got()
    unpack = _TEXT_LEN.unpack_from
    for i, name in enumerate(chunk):
        try:
            fd = os.open(name, _OPEN_FLAGS, dir_fd=dfd)
        except FileNotFoundError:
            gone.append(name)
            continue
        except OSError as e:
            why = "not_regular" if e.errno == errno.ELOOP else "unreadable"
            detail = "symlink" if e.errno == errno.ELOOP else f"{e.strerror} (errno {e.errno})"
            invalid.append(Invalid(name, why, detail))
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                kind = "directory" if stat.S_ISDIR(st.st_mode) else "special file"
                invalid.append(Invalid(name, "not_regular", kind, fingerprint(st)))
                continue
            view = views[i]
            n = os.preadv(fd, (view,), 0)
            if n >= PREFIX_BYTES:
                end = PREFIX_BYTES + unpack(view, 48)[0]
                if end > n and end - PREFIX_BYTES >= TAIL_BYTES:
                    got.tails[i] = os.pread(fd, TAIL_BYTES, end - TAIL_BYTES)
        except OSError as e:
            invalid.append(Invalid(name, "unreadable", e.strerror or str(e), fingerprint(st)))
            continue
        finally:
            os.close(fd)
        got.slot.append(i)
        got.nread.append(n)
        got.dev.append(st.st_dev)
        got.ino.append(st.st_ino)
        got.size.append(st.st_size)
        got.mtime_ns.append(st.st_mtime_ns)
    return got


def _parse_batch(buf: npt.NDArray[np.uint8], chunk: Sequence[str], got: _Got,
                 invalid: list[Invalid]) -> tuple[npt.NDArray[np.void], list[str],
                                                 npt.NDArray[np.intp], npt.NDArray[np.uint64]]:  # fmt: skip
    slot = np.asarray(got.slot, dtype=np.intp)
    nread = np.asarray(got.nread, dtype=np.int64)
    size = np.asarray(got.size, dtype=np.int64)
    hdr = np.ndarray((len(buf),), dtype=_HEADER, buffer=buf, offset=_PAD, strides=(_SLOT,))[slot]
    text = hdr["text_bytes"].astype(np.int64)
    ok = (
        (nread >= PREFIX_BYTES) & (hdr["magic"] == MAGIC) & (hdr["version"] == VERSION)
        & np.isin(hdr["abi"], KNOWN_ABIS) & np.isin(hdr["quant_bits"], QUANT_BITS)
        & (hdr["tokens"] != 0) & (size >= PREFIX_BYTES + text + hdr["payload_bytes"].astype(np.int64))
    )  # fmt: skip
    for j in np.flatnonzero(~ok):  # the reason, in read_snapshot's words
        i = int(slot[j])
        raw = buf[i, _PAD : _PAD + int(nread[j])].tobytes()
        header = Header.parse(raw)
        if isinstance(header, Header):
            header = check_size(header, int(size[j])) or header
        why = header if isinstance(header, Unparsable) else Unparsable("invalid", "?")
        seen = Fingerprint(got.dev[j], got.ino[j], int(size[j]), got.mtime_ns[j])
        invalid.append(Invalid(chunk[i], why.why, why.detail, seen))
    keep = np.flatnonzero(ok)
    slot, hdr, nread, text = slot[keep], hdr[keep], nread[keep], text[keep]
    names = [chunk[i] for i in slot]
    rows = np.zeros(len(keep), dtype=ROW)
    sha = np.frombuffer(bytes.fromhex("".join(n[:40] for n in names)), dtype=_NAME_SHA)
    for field in SHA_FIELDS.names:
        rows[field] = sha[field]
    for field, values in (("dev", got.dev), ("ino", got.ino), ("size", got.size),
                          ("mtime_ns", got.mtime_ns)):  # fmt: skip
        rows[field] = np.asarray(values, dtype=np.int64 if field in ("size", "mtime_ns") else np.uint64)[keep]
    for field in ("created_at", "last_used", "payload_bytes", "tokens", "hits", "ctx_size",
                  "text_bytes", "quant_bits", "model_id", "abi", "ext_flags"):  # fmt: skip
        rows[field] = hdr[field]
    code = hdr["reason"]
    known = code <= max(Reason)
    rows["reason"] = np.where(known, code, int(Reason.UNKNOWN))
    rows["reason_code"] = np.where(known, -1, code.astype(np.int16))
    available = np.maximum(nread - PREFIX_BYTES, 0)
    head, bkey, probe_rows, probe_keys = batch_keys(buf[slot], _TEXT_AT, text, available)
    rows["head"], rows["bkey"] = head, bkey
    # Last 8 text bytes: from the slot when the read held them, else the extra pread.
    tail = np.zeros(len(keep), dtype=np.uint64)
    inside = (text >= TAIL_BYTES) & (text <= available)
    flat = buf.reshape(-1)
    words = np.ndarray((len(flat) - 7,), dtype="<u8", buffer=flat, strides=(1,))
    tail[inside] = words[slot[inside] * _SLOT + _TEXT_AT + text[inside] - TAIL_BYTES]
    tail_known = inside.copy()
    for j in np.flatnonzero(~inside):
        i, n = int(slot[j]), int(text[j])
        if n < TAIL_BYTES and n <= available[j]:
            tail[j] = tail_of(buf[i, _TEXT_AT : _TEXT_AT + n].tobytes(), n)
            tail_known[j] = True
        elif len(got.tails.get(i, b"")) == TAIL_BYTES:
            tail[j] = int.from_bytes(got.tails[i], "little")
            tail_known[j] = True
    rows["tail"] = tail
    joined = "".join(names)
    odd = (np.zeros(len(names), dtype=bool) if joined == joined.lower()
           else np.array([n != n.lower() for n in names], dtype=bool))  # fmt: skip
    rows["flags"] = BKEY_KNOWN | np.where(tail_known, TAIL_KNOWN, 0) | np.where(odd, ODD_NAME, 0)
    chain = np.isin(rows["reason"], _CHAIN_CODES)[probe_rows]  # only they supersede or cover
    return (rows, names, probe_rows[chain].astype(np.int32),
            probe_keys[chain].astype(np.uint32))  # fmt: skip
