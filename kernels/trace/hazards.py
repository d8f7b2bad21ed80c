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
the same tiles.  Each memory's entries are filed under the 4 KiB blocks their byte ranges touch,
so a new access compares itself only with entries that share a block with it.
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


_BLOCK = 4096  # bytes: the log files an access under every block its byte range touches
_WIDE = 64  # blocks: an access touching more is filed once, among the wide ones


class _Entries:
    """One memory's logged reads (or writes), filed by the blocks of their byte ranges, so a
    new access looks only at entries that share a block with it."""

    def __init__(self) -> None:
        self.blocks: dict[int, list[Access]] = {}
        self.wide: list[Access] = []

    @staticmethod
    def _span(region: Region) -> range | None:
        first, last = region.b0 // _BLOCK, (region.b1 - 1) // _BLOCK
        return None if last - first >= _WIDE else range(first, last + 1)

    def add(self, entry: Access) -> None:
        span = self._span(entry.region)
        if span is None:
            self.wide.append(entry)
            return
        for block in span:
            self.blocks.setdefault(block, []).append(entry)

    def near(self, region: Region) -> list[Access]:
        """Every entry that may overlap `region` (each once), a superset of those that do."""
        span = self._span(region)
        if span is None:
            lists = list(self.blocks.values())
        else:
            lists = [found for block in span if (found := self.blocks.get(block))]
        if len(lists) == 1:
            return lists[0] + self.wide
        unique = {id(e): e for entries in lists for e in entries}
        return list(unique.values()) + self.wide

    def drop(self, region: Region, stream: str | None = None) -> None:
        """Forget the entries `region` contains (of `stream` only, if given); their blocks are
        all among region's."""
        def kept(entries: list[Access]) -> list[Access]:
            return [e for e in entries if not (region.contains(e.region)
                                               and (stream is None or e.stream == stream))]

        span = self._span(region)
        for block in (list(self.blocks) if span is None else span):
            entries = self.blocks.get(block)
            if entries:
                self.blocks[block] = kept(entries)
        if self.wide:
            self.wide = kept(self.wide)

    def __len__(self) -> int:
        return len({id(e) for entries in self.blocks.values() for e in entries}) + len(self.wide)


class AccessLog:
    """Accesses that later instructions may conflict with, per memory, readers and writers
    apart (a read only has to look at writers)."""

    def __init__(self) -> None:
        self._writes: dict[tuple[str, str], _Entries] = {}
        self._reads: dict[tuple[str, str], _Entries] = {}

    def conflicts(self, stream: str, reads: list[Region],
                  writes: list[Region]) -> list[tuple[str, int]]:
        """(other stream, last index there this instruction must follow), the stream whose
        instruction was traced last first: its signal is the likeliest to cover the others."""
        needed: dict[str, Access] = {}

        def note(entry: Access) -> None:
            if entry.stream != stream and (entry.stream not in needed
                                           or entry.index > needed[entry.stream].index):
                needed[entry.stream] = entry

        searches = [(self._writes, region) for region in reads]
        searches += [(log, region) for region in writes for log in (self._writes, self._reads)]
        for log, region in searches:
            entries = log.get(region.memory)
            if entries is None:
                continue
            for entry in entries.near(region):
                if entry.region.overlaps(region):
                    note(entry)
        latest_first = sorted(needed.values(), key=lambda e: -e.sequence)
        return [(entry.stream, entry.index) for entry in latest_first]

    def record(self, stream: str, index: int, sequence: int, reads: list[Region],
               writes: list[Region]) -> None:
        """Log an instruction's accesses (after its waits were placed), pruning dominated ones."""
        for region in writes:
            for log in (self._writes, self._reads):
                entries = log.get(region.memory)
                if entries is not None:
                    entries.drop(region)
            self._writes.setdefault(region.memory, _Entries()).add(
                Access(region, stream, index, True, sequence))
        for region in reads:
            if any(w.contains(region) for w in writes):
                continue  # the write of the same instruction dominates this read
            entries = self._reads.setdefault(region.memory, _Entries())
            entries.drop(region, stream)
            entries.add(Access(region, stream, index, False, sequence))

    def __len__(self) -> int:
        return sum(len(v) for log in (self._writes, self._reads) for v in log.values())
