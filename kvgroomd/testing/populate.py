"""A directory of many snapshots, fast: `populate()` for benchmarks and tests."""

from __future__ import annotations

import os
import random
import struct
import time
from pathlib import Path

from kvgroomd.format.header import ABI_CURRENT, ABI_LEGACY, PREFIX_BYTES, Header, Reason, sha1_hex
from kvgroomd.sim.engine import EngineParams
from kvgroomd.testing.chat import USER, system_prompt, word_pieces

PAYLOAD_MAGIC = b"DSV4"
_SIZES = EngineParams()
CONTINUED_STEP = _SIZES.continued_step
MIN_TOKENS = _SIZES.min_tokens


def size_model(tokens: int) -> int:
    """File size of a DeepSeek V4 Flash snapshot of `tokens` tokens (spec section 6)."""
    return _SIZES.size(tokens)


def populate(
    directory: str | os.PathLike[str],
    n: int,
    seed: int = 0,
    *,
    now: int | None = None,
    abi: int = ABI_CURRENT,
    model_id: int = 0,
    max_text_bytes: int = 2048,
    chain_fraction: float = 0.4,
    span_seconds: int = 7 * 86400,
    legacy_fraction: float = 0.0,
) -> list[Path]:
    """Write `n` sparse snapshots straight into `directory` (no temp, no rename).

    Varied reasons, tokens (512..120k, sized by `size_model`), hits and times;
    about `chain_fraction` of them in prefix chains of `continued` rungs ended
    by an evict/cold/continued. Texts are capped at `max_text_bytes` (so text and
    tokens do not correspond, as with responses-visible keys) to keep 100,000
    files cheap. `legacy_fraction` of them get ABI 0. mtime = last_used.
    """
    rng = random.Random(f"populate-{seed}")
    out_dir = Path(directory)
    out_dir.mkdir(parents=True, exist_ok=True)
    now = int(time.time()) if now is None else now
    # One ASCII corpus to slice from: texts cost a slice, not a generator run.
    corpus = b"".join(word_pieces(random.Random(f"corpus-{seed}"), 16 * max_text_bytes))
    system = b"".join(system_prompt(seed, 64))
    paths: list[Path] = []
    group = 0
    while len(paths) < n:
        group += 1
        rungs = 1
        if rng.random() < chain_fraction:
            rungs = min(rng.randint(2, 5), n - len(paths))
        lead = system + USER + f" ticket {seed}-{group}:".encode()
        body = corpus[rng.randrange(len(corpus) // 2) :]
        if rungs > 1:
            top = rungs * CONTINUED_STEP + rng.randrange(CONTINUED_STEP)
            counts = [k * CONTINUED_STEP for k in range(1, rungs)] + [top]
            reasons = [Reason.CONTINUED] * (rungs - 1) + [
                rng.choice((Reason.EVICT, Reason.EVICT, Reason.CONTINUED, Reason.SHUTDOWN))
            ]
        else:
            counts = [int(min(120_000, MIN_TOKENS + rng.expovariate(1 / 12_000)))]
            reasons = [rng.choices(
                (Reason.COLD, Reason.CONTINUED, Reason.EVICT, Reason.SHUTDOWN, Reason.UNKNOWN),
                weights=(30, 30, 30, 6, 1),
            )[0]]  # fmt: skip
        room = max(max_text_bytes - len(lead), 64)
        for rank, (tokens, reason) in enumerate(zip(counts, reasons, strict=True)):
            # Longer rungs get strictly longer texts: each a prefix of the next.
            frac = tokens / 120_000
            length = len(lead) + min(room - rungs + rank, int(room * frac) + rank + 16)
            text = lead + body[: length - len(lead)]
            created = now - rng.randrange(span_seconds)
            hits = 0 if rng.random() < 0.6 else min(int(rng.expovariate(1 / 4)) + 1, 200)
            last_used = created + rng.randrange(max(now - created, 1)) if hits else created
            file_abi = ABI_LEGACY if rng.random() < legacy_fraction else abi
            file_size = size_model(tokens)
            header = Header(
                quant_bits=2, reason=reason, ext_flags=0,
                model_id=0 if file_abi == ABI_LEGACY else model_id, tokens=tokens,
                hits=hits, ctx_size=rng.choice((32768, 65536, 131072)), abi=file_abi,
                created_at=created, last_used=last_used,
                payload_bytes=file_size - PREFIX_BYTES - len(text), text_bytes=len(text),
            )  # fmt: skip
            path = out_dir / f"{sha1_hex(text)}.kv"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, header.pack() + text + PAYLOAD_MAGIC + struct.pack("<I", 2))
                os.ftruncate(fd, file_size)
            finally:
                os.close(fd)
            os.utime(path, (last_used, last_used))
            paths.append(path)
    return paths
