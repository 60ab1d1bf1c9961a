"""How long SIGTERM takes to stop kvgroomd in the middle of a big start-up.

Not a test: timing targets live here, tests check correctness. Creates N
(default 100,000) small sparse snapshots, starts `python -m kvgroomd run`,
sends SIGTERM at a chosen point of the start-up pass, and reports the time to
exit, the exit status, and whether anything was left half-done:

- no `.kvgroomd-unlinking.*` file (a delete cut between rename and unlink),
- every file missing from the directory was logged `snapshot.unlinked`,
- the log ends with `daemon.stopped`, stderr is empty.

Points of the start-up pass:
- read:  `--read-delay` s after `daemon.started` (reading every header),
- sweep: `--sweep-delay` s after it (supersession sweep, after the reads;
         pick a delay past the read phase of your machine),
- evict: supersession off, budget half the directory: after the k-th
         `snapshot.unlinked` line (`--evict-after`), i.e. mid-eviction.

`--shared-head` gives every text the same first 64+ bytes (one system
prompt), the worst case for the supersession sweep's bucketing.

    .venv/bin/python bench/sigterm_scan.py [--files 100000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

from kvgroomd.format.header import Header, Reason

PAYLOAD = 4096  # sparse: apparent size counts against the budget, disk does not
TARGET_S = 2.0  # the promise: SIGTERM -> exit within 2 s
STOP_LIMIT_S = 60.0  # after this long, kill -9 and report the failure


SHARED_HEAD = b"<|begin_of_sentence|>You are a helpful assistant. Answer briefly and cite. "


def make_files(directory: Path, n: int, *, shared_head: bool = False) -> int:
    """n valid `cold` snapshots with distinct texts; returns their total size.
    `shared_head`: every text starts with the same system prompt, as in one
    application's traffic (one supersession bucket for all)."""
    now = int(time.time()) - 3600  # older than protect_new: evictable
    total = 0
    for i in range(n):
        text = b"%08d system prompt and a conversation " % i * 3
        if shared_head:
            text = SHARED_HEAD + text
        h = Header(quant_bits=2, reason=Reason.COLD, ext_flags=0, model_id=0,
                   tokens=600 + i % 1000, hits=i % 3, ctx_size=65536, abi=2,
                   created_at=now, last_used=now, payload_bytes=PAYLOAD,
                   text_bytes=len(text))  # fmt: skip
        name = directory / f"{hashlib.sha1(text).hexdigest()}.kv"
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.write(fd, h.pack() + text)
        size = 52 + len(text) + PAYLOAD
        os.ftruncate(fd, size)
        os.close(fd)
        total += size
    return total


def run_once(directory: Path, *, budget: int | None, supersede: bool,
             delay: float = 0.0, after_unlinks: int = 0) -> dict[str, object]:  # fmt: skip
    """Start the daemon, SIGTERM it at the chosen point, check what it left."""
    cfg = directory.parent / "bench.yaml"
    lines = [f"cache_dir: {directory}", f"supersede: {str(supersede).lower()}",
             "log:", "  format: json"]  # fmt: skip
    if budget is not None:
        lines.append(f"budget: {budget}")
    cfg.write_text("\n".join(lines) + "\n")
    before = set(os.listdir(directory))
    p = subprocess.Popen([sys.executable, "-m", "kvgroomd", "run", "--config", str(cfg)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    events: list[dict[str, object]] = []
    started, enough = threading.Event(), threading.Event()

    def read() -> None:
        assert p.stdout is not None
        unlinks = 0
        for line in p.stdout:
            e = json.loads(line)
            events.append(e)
            started.set()
            unlinks += e["event"] == "snapshot.unlinked"
            if after_unlinks and unlinks >= after_unlinks:
                enough.set()

    reader = threading.Thread(target=read)
    reader.start()
    started.wait(60)  # daemon.started: signal handlers are installed
    if after_unlinks:
        enough.wait(3600)
    time.sleep(delay)
    t0, wall0 = time.monotonic(), time.time()
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(STOP_LIMIT_S)
    except subprocess.TimeoutExpired:
        p.kill()  # report it rather than wait for the pass to end
        p.wait()
    took = time.monotonic() - t0
    reader.join()
    assert p.stderr is not None
    err = p.stderr.read()
    after = set(os.listdir(directory))
    unlinked = {Path(str(e["path"])).name for e in events if e["event"] == "snapshot.unlinked"}
    held = [n for n in after if n.startswith(".kvgroomd-unlinking.")]
    at = {e["event"]: datetime.fromisoformat(str(e["timestamp"])).timestamp() for e in events}
    return {
        "exit": p.returncode, "stop_s": round(took, 3),
        # split: until the pass noticed (daemon.stopping), then the shutdown
        "noticed_s": round(at["daemon.stopping"] - wall0, 3) if "daemon.stopping" in at else None,
        "shutdown_s": (round(at["daemon.stopped"] - at["daemon.stopping"], 3)
                       if "daemon.stopping" in at and "daemon.stopped" in at else None),
        "ready_before_stop": any(e["event"] == "daemon.ready" for e in events),
        "unlinked": len(unlinked), "missing": len(before - after),
        "clean": (not held and unlinked == before - after and not err
                  and events[-1]["event"] == "daemon.stopped"),
    }  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--read-delay", type=float, default=2.0)
    ap.add_argument("--sweep-delay", type=float, default=90.0)
    ap.add_argument("--evict-after", default="1,5000", help="k-th unlink to signal after")
    ap.add_argument("--shared-head", action="store_true", help="one text head for all")
    args = ap.parse_args()
    runs: list[tuple[str, dict[str, object]]] = [
        ("read", {"delay": args.read_delay}),
        ("sweep", {"delay": args.sweep_delay}),
        *[("evict", {"after_unlinks": int(k)}) for k in args.evict_after.split(",") if k],
    ]
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="kvgroomd-bench-") as tmp:
        shared = Path(tmp) / "shared"  # read/sweep runs delete nothing: one copy
        for i, (phase, when) in enumerate(runs):
            d = shared if phase != "evict" else Path(tmp) / f"evict-{i}"
            t = time.monotonic()
            if not d.exists():
                d.mkdir()
                total = make_files(d, args.files, shared_head=args.shared_head)
            made = time.monotonic() - t
            r = run_once(d, budget=total // 2 if phase == "evict" else None,
                         supersede=phase != "evict", **when)  # type: ignore[arg-type]
            if phase == "evict":
                shutil.rmtree(d)
            worst = max(worst, float(r["stop_s"]))  # type: ignore[arg-type]
            print(json.dumps({"phase": phase, **when, "files": args.files,
                              "shared_head": args.shared_head,
                              "create_s": round(made, 1), **r}), flush=True)  # fmt: skip
    print(json.dumps({"worst_stop_s": worst, "target_s": TARGET_S, "ok": worst <= TARGET_S}))
    return 0 if worst <= TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
