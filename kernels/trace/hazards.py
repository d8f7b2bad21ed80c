"""Data hazards between instruction streams, tracked by address.

Every operand is reduced to a bounding box: on chip its memory, partition range and per-partition
byte range; in HBM its tensor and byte range.  The log keeps, per memory, the accesses that a
later instruction may still have to wait for.  A new access conflicts with an earlier one on
another stream when their boxes overlap and at least one writes (RAW, WAR, WAW); boxes are a
superset of the bytes touched, so the tracer may order more than needed but never less.

An entry is dropped once a later access dominates it: a write whose box contains an earlier box
(any stream: the writer was itself ordered after every conflicting access, so waiting for the
writer waits for them too), or a later access of the same stream and at least the same kind
whose box contains it (streams run in order).  This keeps the log short in loops that re-use
the same tiles.
"""

from __future__ import annotations

from dataclasses import dataclass

from isa.access import AccessPattern
from isa.target import Space


@dataclass(frozen=True)
class Region:
    """A bounding box of bytes: memory key, partitions [p0, p1), bytes [b0, b1)."""

    memory: tuple[str, str]  # (space, HBM tensor name or "")
    p0: int
    p1: int
    b0: int
    b1: int

    @staticmethod
    def of(ap: AccessPattern) -> Region:
        low, high = ap.byte_span()
        if ap.space is Space.HBM:
            return Region((ap.space.value, ap.tensor), 0, 1, low, high)
        return Region((ap.space.value, ""), ap.partition_start, ap.partition_end, low, high)

    def overlaps(self, other: Region) -> bool:
        return (self.memory == other.memory and self.p0 < other.p1 and other.p0 < self.p1
                and self.b0 < other.b1 and other.b0 < self.b1)

    def contains(self, other: Region) -> bool:
        return (self.memory == other.memory and self.p0 <= other.p0 and other.p1 <= self.p1
                and self.b0 <= other.b0 and other.b1 <= self.b1)


@dataclass(frozen=True)
class Access:
    """One operand access of an instruction already placed in a stream."""

    region: Region
    stream: str
    index: int  # position of the instruction in its stream
    write: bool
    sequence: int  # position of the instruction in the whole trace


class AccessLog:
    """Accesses that later instructions may conflict with, per memory, readers and writers
    apart (a read only has to look at writers)."""

    def __init__(self) -> None:
        self._writes: dict[tuple[str, str], list[Access]] = {}
        self._reads: dict[tuple[str, str], list[Access]] = {}

    def conflicts(self, stream: str, reads: list[Region],
                  writes: list[Region]) -> list[tuple[str, int]]:
        """(other stream, last index there this instruction must follow), the stream whose
        instruction was traced last first: its signal is the likeliest to cover the others."""
        needed: dict[str, Access] = {}

        def note(entry: Access) -> None:
            if entry.stream != stream and (entry.stream not in needed
                                           or entry.index > needed[entry.stream].index):
                needed[entry.stream] = entry

        for region in reads:
            for entry in self._writes.get(region.memory, ()):
                if entry.region.overlaps(region):
                    note(entry)
        for region in writes:
            for log in (self._writes, self._reads):
                for entry in log.get(region.memory, ()):
                    if entry.region.overlaps(region):
                        note(entry)
        latest_first = sorted(needed.values(), key=lambda e: -e.sequence)
        return [(entry.stream, entry.index) for entry in latest_first]

    def record(self, stream: str, index: int, sequence: int, reads: list[Region],
               writes: list[Region]) -> None:
        """Log an instruction's accesses (after its waits were placed), pruning dominated ones."""
        for region in writes:
            for log in (self._writes, self._reads):
                entries = log.setdefault(region.memory, [])
                entries[:] = [e for e in entries if not region.contains(e.region)]
            self._writes[region.memory].append(Access(region, stream, index, True, sequence))
        for region in reads:
            if any(w.contains(region) for w in writes):
                continue  # the write of the same instruction dominates this read
            entries = self._reads.setdefault(region.memory, [])
            entries[:] = [e for e in entries
                          if not (e.stream == stream and region.contains(e.region))]
            entries.append(Access(region, stream, index, False, sequence))

    def __len__(self) -> int:
        return sum(len(v) for log in (self._writes, self._reads) for v in log.values())
