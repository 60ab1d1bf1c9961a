"""cleanup.py: which leaks the opt-in cleanup removes (pure, hand-built facts)."""

from __future__ import annotations

from kvgroomd.core.cleanup import TempFile, orphan_temps, plan, stale_format
from kvgroomd.core.decision import Cause, Fingerprint
from kvgroomd.core.index import Index, Snapshot
from kvgroomd.format.header import Header, Reason

NOW = 1_800_000_000.0


def temp(pid: int, *, alive: bool, age: float) -> TempFile:
    seen = Fingerprint(1, pid, 100, int((NOW - age) * 1e9))
    return TempFile(f"{'a' * 40}.kv.tmp.{pid}", "a" * 40, pid, alive, seen)


def snap(n: int, abi: int) -> Snapshot:
    h = Header(quant_bits=2, reason=Reason.COLD, ext_flags=0, model_id=0, tokens=600, hits=0,
               ctx_size=32768, abi=abi, created_at=int(NOW) - 10, last_used=int(NOW) - 10,
               payload_bytes=10, text_bytes=600)  # fmt: skip
    sha = f"{n:040x}"
    return Snapshot(f"{sha}.kv", sha, h, Fingerprint(1, n, 1000, n))


class TestOrphanTemps:
    def test_only_old_files_of_dead_writers_are_chosen(self) -> None:
        """A temp goes only when its writer is gone and it is older than the minimum age."""
        temps = [temp(10, alive=False, age=7200), temp(11, alive=True, age=7200),
                 temp(12, alive=False, age=60), temp(13, alive=False, age=-30)]  # fmt: skip
        got = orphan_temps(temps, NOW, 3600)
        assert [(d.name, d.cause) for d in got] == [(temps[0].name, Cause.ORPHAN_TEMP)]
        assert got[0].seen == temps[0].seen
        assert got[0].fields["pid"] == 10

    def test_order_of_input_does_not_matter(self) -> None:
        """The same facts in reverse order give the same decisions."""
        temps = [temp(p, alive=False, age=9000) for p in (5, 3, 9)]
        assert orphan_temps(temps, NOW, 0) == orphan_temps(temps[::-1], NOW, 0)


class TestStaleFormat:
    def test_abi0_snapshots_are_chosen_and_current_ones_kept(self) -> None:
        """Only ABI-0 snapshots are stale-format decisions, with the fingerprint seen."""
        index = Index()
        for s in (snap(1, 0), snap(2, 2), snap(3, 0)):
            index.put(s)
        got = stale_format(index, NOW)
        assert [(d.name[:40], d.cause) for d in got] == [
            (f"{1:040x}", Cause.STALE_FORMAT), (f"{3:040x}", Cause.STALE_FORMAT),
        ]  # fmt: skip
        assert got[0].seen == index.fingerprint(got[0].name)

    def test_plan_does_nothing_unless_enabled(self) -> None:
        """With both switches off the plan is empty, whatever leaks exist."""
        index = Index()
        index.put(snap(1, 0))
        temps = [temp(10, alive=False, age=7200)]
        assert plan(temps, index, NOW, orphans=False, orphan_age=0, stale=False) == []
        both = plan(temps, index, NOW, orphans=True, orphan_age=0, stale=True)
        assert [d.cause for d in both] == [Cause.ORPHAN_TEMP, Cause.STALE_FORMAT]
