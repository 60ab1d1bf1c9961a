"""Giving memory back to the system after a large pass (glibc only).

Shell. A start-up over 100,000 files allocates and frees tens of MiB of
short-lived buffers and strings. glibc keeps freed heap memory and, after the
first large buffer is freed, raises its mmap threshold so later large
buffers come from the heap too, where they fragment it. Without these two
calls the resident size after start-up stays 30-50 MiB above what is live.
Elsewhere (musl, macOS) both are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util

_M_MMAP_THRESHOLD = -3  # mallopt(3)
_MMAP_THRESHOLD = 256 * 1024


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


_LIBC = _libc()


def tune() -> None:
    """Keep buffers of 256 KiB and more out of the heap (mmap, returned on free)."""
    if _LIBC is not None:
        _LIBC.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)


def trim() -> None:
    """Return free heap memory to the system (after a large pass)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
