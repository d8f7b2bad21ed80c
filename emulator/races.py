"""Race detector: conflicting accesses of a Program that its semaphores leave unordered.

Happens-before is program order plus signal->wait edges (one signalling stream per semaphore makes
the v-th signal one instruction), as exact vector clocks; two accesses race when they share bytes
(exactly, strides included), one writes, and neither happens before the other.  PSUM accumulation
groups are checked for interleaving and partial-sum reads.  DESIGN.md, "Two kinds of truth".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from emulator.collector import collector_paused
from emulator.functional import legal_order, round_robin
from isa.access import AccessPattern
from isa.instructions import Instruction, MatMul, Transpose
from isa.program import OTHER, Program
from isa.target import Space

# Racing pairs expanded at once; bounds memory when a program is racy everywhere.
_PAIR_CHUNK = 1 << 22


class RaceError(RuntimeError):
    """Two streams access the same bytes, one writing, with no semaphore chain between them."""


class AccumulationError(RaceError):
    """A PSUM accumulation group is interleaved with another or read before it is complete."""


# ---- records -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Access:
    """One operand of one instruction: who (stream, index), what (read/write) and where."""

    stream: str
    index: int
    instruction: Instruction
    operand: str
    kind: str  # "read" or "write"
    pattern: AccessPattern

    def __post_init__(self) -> None:
        if self.kind not in ("read", "write"):
            raise ValueError(f"access kind {self.kind!r} must be 'read' or 'write'")

    @property
    def where(self) -> str:
        """`vector[3] tensor_copy dst=...`: the form Program.locate uses."""
        return f"{self.stream}[{self.index}] {self.instruction}"

    def __str__(self) -> str:
        return f"{self.where} ({self.kind}s {self.operand})"


@dataclass(frozen=True)
class Region:
    """Bytes two accesses share: partitions and per-partition bytes on chip, or tensor bytes."""

    space: Space
    byte_start: int
    byte_end: int  # exclusive
    byte_count: int  # bytes actually shared in [byte_start, byte_end) (strided overlaps)
    partition_start: int = 0  # on chip only
    partition_end: int = 0
    tensor: str = ""  # HBM only

    def __str__(self) -> str:
        span = f"bytes {self.byte_start}..{self.byte_end - 1}"
        if self.space is Space.HBM:
            return f"hbm tensor {self.tensor} {span} ({self.byte_count} bytes)"
        return (f"{self.space} partitions {self.partition_start}..{self.partition_end - 1} "
                f"{span} ({self.byte_count} bytes per partition)")


@dataclass(frozen=True)
class Race:
    """Two conflicting accesses that no semaphore chain orders; `first` runs first in the
    functional executor's default order (emulator.functional.legal_order)."""

    first: Access
    second: Access
    region: Region

    @property
    def kind(self) -> str:
        """`write-read`, `read-write` or `write-write`, in the order first, second."""
        return f"{self.first.kind}-{self.second.kind}"

    @property
    def message(self) -> str:
        return (f"data race ({self.kind}) on {self.region}: {self.first} and {self.second} "
                f"are not ordered by any chain of semaphores")


HAZARD_KINDS = ("no-open-group", "interleaved-groups", "partial-sum-read", "partial-sum-write")


@dataclass(frozen=True)
class AccumulationHazard:
    """A misuse of a PSUM accumulation group.

    `no-open-group`: an accumulate=True matmul with no group open on its region.
    `interleaved-groups`: it accumulates into a region that overlaps another open group.
    `partial-sum-read` / `-write`: another stream touches a group's region after the group
    started but not after its last accumulate.
    """

    kind: str
    access: Access  # the offending instruction's access
    region: Region
    group_start: Access | None = None  # the accumulate=False matmul that opened the group
    group_last: Access | None = None  # the group's last member (partial-sum kinds)

    def __post_init__(self) -> None:
        if self.kind not in HAZARD_KINDS:
            raise ValueError(f"hazard kind {self.kind!r} must be one of {', '.join(HAZARD_KINDS)}")

    @property
    def message(self) -> str:
        if self.kind == "no-open-group":
            return (f"{self.access.where} accumulates into {self.region} but no accumulation "
                    f"group is open there (no earlier accumulate=False matmul on "
                    f"{self.access.stream} started one on this region)")
        if self.kind == "interleaved-groups":
            return (f"interleaved accumulation groups on {self.region}: {self.access.where} "
                    f"accumulates into a region that overlaps the open group started by "
                    f"{self.group_start.where}")
        verb = "reads a partial sum" if self.kind == "partial-sum-read" else (
            "writes into an open accumulation group")
        return (f"{self.access.where} {verb} on {self.region}: it happens after "
                f"{self.group_start.where} starts the group but not after the group's last "
                f"accumulate {self.group_last.where}")


# ---- happens-before ----------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class HappensBefore:
    """Exact happens-before of a program, as vector clocks.

    A clock counts, per stream, the leading instructions of that stream that happen before an
    instruction: a prefix, because the only way out of a stream is a signal, which waits for
    everything before it.  Clocks change only at waits, so each stream keeps one clock per
    "epoch" (the stretch after a wait) instead of one per instruction.
    """

    streams: tuple[str, ...]
    position: tuple[np.ndarray, ...]  # per stream: each instruction's place in `legal_order`
    epoch: tuple[np.ndarray, ...]  # per stream: each instruction's row of `clocks`
    clocks: np.ndarray  # [epochs, streams]

    def _stream(self, name: str) -> int:
        try:
            return self.streams.index(name)
        except ValueError:
            raise KeyError(f"no stream {name!r}; streams: {', '.join(self.streams)}") from None

    def prefix(self, stream: str, index: int) -> dict[str, int]:
        """For every stream, how many of its leading instructions happen before this one."""
        k = self._stream(stream)
        row = self.clocks[self.epoch[k][index]]
        return {name: (index if j == k else int(row[j])) for j, name in enumerate(self.streams)}

    def before(self, a: tuple[str, int], b: tuple[str, int]) -> bool:
        """True when instruction a = (stream, index) happens before instruction b."""
        (sa, ia), (sb, ib) = a, b
        if sa == sb:
            return ia < ib
        ka, kb = self._stream(sa), self._stream(sb)
        return ia < int(self.clocks[self.epoch[kb][ib], ka])

    def ordered(self, a: tuple[str, int], b: tuple[str, int]) -> bool:
        return self.before(a, b) or self.before(b, a)

    def runs_at(self, stream: str, index: int) -> int:
        """The instruction's place in the functional executor's default order (`legal_order`),
        which is how reports rank races: the first race is the first one that order meets."""
        return int(self.position[self._stream(stream)][index])


def happens_before(program: Program) -> HappensBefore:
    """Vector clocks of every instruction; raises DeadlockError if the program cannot finish
    and ProgramError if a semaphore is signalled from two streams (the v-th signal would not be
    one instruction)."""
    program.check_signallers()
    table = program.table
    position, epoch, clocks, placed = round_robin(table)
    if placed < len(table.code):
        for _ in legal_order(program):  # raises DeadlockError naming the blocked streams
            pass
        raise RuntimeError(f"vector clocks placed {placed} of {len(table.code)} instructions "
                           f"of {program.name}, yet the program finishes")  # pragma: no cover
    first = table.stream_first
    split = [slice(first[k], first[k + 1]) for k in range(len(program.streams))]
    return HappensBefore(tuple(s.name for s in program.streams),
                         tuple(position[s] for s in split), tuple(epoch[s] for s in split),
                         clocks)


# ---- bytes an access touches -------------------------------------------------------------------
@lru_cache(maxsize=1024)  # operands are immutable, and programs reuse a few of them
def touched_bytes(ap: AccessPattern) -> np.ndarray:
    """Sorted distinct byte offsets an access touches: within each of its partitions on chip
    (every partition has the same free pattern), from the tensor's base in HBM (rows included).
    The array is shared: read it, do not change it."""
    size = ap.dtype.itemsize
    axes = list(ap.axes)
    if ap.space is Space.HBM:
        axes.insert(0, (ap.partition_stride, ap.partitions))
    run = 1  # a dense pattern (each axis steps over the whole of the axes inside it) is a range
    for stride, extent in reversed(axes):
        if extent > 1 and stride != run:
            break
        run *= extent
    else:
        return np.arange(ap.offset, ap.offset + run * size, dtype=np.int64)
    elements = np.array([ap.offset // size], np.int64)
    for stride, extent in axes:
        if stride and extent > 1:  # a stride-0 axis repeats elements, it adds no bytes
            elements = (elements[:, None] + stride * np.arange(extent, dtype=np.int64)).ravel()
    return np.unique((elements[:, None] * size + np.arange(size, dtype=np.int64)).ravel())


def _region_of(ap: AccessPattern, common: np.ndarray, first: int = -1, end: int = -1) -> Region:
    if ap.space is Space.HBM:
        return Region(Space.HBM, int(common[0]), int(common[-1]) + 1, len(common), tensor=ap.tensor)
    first = ap.partition_start if first < 0 else first
    end = ap.partition_end if end < 0 else end
    return Region(ap.space, int(common[0]), int(common[-1]) + 1, len(common), first, end)


@dataclass
class _Bytes:
    """Exact overlap of access patterns; byte sets and answers are kept, since compiled
    programs ask about the same few tiles again and again."""

    cache: dict[AccessPattern, np.ndarray] = field(default_factory=dict)
    answers: dict[tuple[AccessPattern, AccessPattern], Region | None] = field(
        default_factory=dict)

    def of(self, ap: AccessPattern) -> np.ndarray:
        found = self.cache.get(ap)
        if found is None:
            found = self.cache[ap] = touched_bytes(ap)
        return found

    def overlap(self, a: AccessPattern, b: AccessPattern) -> Region | None:
        """The bytes a and b share, or None; bounding boxes overlapping is not enough."""
        if a.partition_end <= b.partition_start or b.partition_end <= a.partition_start:
            if a.space is not Space.HBM:
                return None
        (a0, a1), (b0, b1) = a.byte_span(), b.byte_span()
        if a1 <= b0 or b1 <= a0:
            return None
        pair = (a, b)
        if pair not in self.answers:
            self.answers[pair] = self._overlap(a, b)
        return self.answers[pair]

    def _overlap(self, a: AccessPattern, b: AccessPattern) -> Region | None:
        if a.space is not b.space or a.tensor != b.tensor:
            return None
        first = max(a.partition_start, b.partition_start)
        end = min(a.partition_end, b.partition_end)
        if a.space is not Space.HBM and first >= end:
            return None
        bytes_a, bytes_b = self.of(a), self.of(b)
        if a == b:
            return _region_of(a, bytes_a)
        low, high = max(bytes_a[0], bytes_b[0]), min(bytes_a[-1], bytes_b[-1])
        if low > high:
            return None
        # Intersect only the window both spans cover: strided tiles are often far larger.
        window_a = bytes_a[np.searchsorted(bytes_a, low):np.searchsorted(bytes_a, high, "right")]
        window_b = bytes_b[np.searchsorted(bytes_b, low):np.searchsorted(bytes_b, high, "right")]
        common = np.intersect1d(window_a, window_b, assume_unique=True)
        if not len(common):
            return None
        return _region_of(a, common, first, end)


# ---- the access table --------------------------------------------------------------------------
class _Analysis:
    """Happens-before and every operand access of a program, as columns for numpy.

    Accesses are grouped by their access pattern: compiled programs reuse a few tiles many
    times, so the spatial question (which patterns share bytes) is asked once per pair of
    distinct patterns, and the temporal one (which accesses are unordered) per access.
    """

    def __init__(self, program: Program) -> None:
        self.program = program
        self.hb = happens_before(program)
        self.bytes = _Bytes()
        self.instructions = [s.instructions for s in program.streams]
        self._collect_accesses()
        # Per distinct pattern: memory (SBUF, PSUM or one HBM tensor), partitions, byte span.
        memories: dict[tuple[Space, str], int] = {}
        key, first, end, low, high = [], [], [], [], []
        for ap in self.distinct:
            key.append(memories.setdefault((ap.space, ap.tensor), len(memories)))
            lo, hi = ap.byte_span()
            low.append(lo)
            high.append(hi)
            # HBM rows are folded into the byte span; one dummy "partition" keeps the columns.
            on_chip = ap.space is not Space.HBM
            first.append(ap.partition_start if on_chip else 0)
            end.append(ap.partition_end if on_chip else 1)
        self.memories = list(memories)
        self.p_key = np.array(key, np.int64)
        self.p_first = np.array(first, np.int64)
        self.p_end = np.array(end, np.int64)
        self.p_low = np.array(low, np.int64)
        self.p_high = np.array(high, np.int64)
        self.key = self.p_key[self.pattern]
        # Flatten the per-stream arrays so each access finds its instruction's row at once.
        flat = self.program.table.stream_first[self.stream] + self.index
        self.lin = np.concatenate([*self.hb.position, [0]])[flat].astype(np.int64)
        self.epoch = np.concatenate([*self.hb.epoch, [0]])[flat].astype(np.int64)

    def _collect_accesses(self) -> None:
        """One column entry per operand access (reads, then writes, of each instruction in
        program order).  Operands are worked out once per distinct instruction and repeated
        over its rows with array operations."""
        table = self.program.table
        rows = np.flatnonzero(table.code == OTHER)  # waits and signals have no operands
        fact = table.record[rows]
        ids: dict[AccessPattern, int] = {}
        names: dict[str, int] = {}
        counts, write, operand, pattern = [], [], [], []
        for instr in table.distinct:
            accesses = [(False, name, ap) for name, ap in instr.reads().items()]
            accesses += [(True, name, ap) for name, ap in instr.writes().items()]
            counts.append(len(accesses))
            for is_write, name, ap in accesses:
                write.append(is_write)
                operand.append(names.setdefault(name, len(names)))
                pattern.append(ids.setdefault(ap, len(ids)))
        counts = np.array(counts, np.int64)
        first = np.cumsum(counts) - counts
        per_row = counts[fact]
        row = np.repeat(rows, per_row)
        start = np.cumsum(per_row) - per_row
        entry = np.repeat(first[fact] - start, per_row) + np.arange(int(per_row.sum()))
        self.operand_names = list(names)
        self.operand = np.array(operand, np.int64)[entry]
        self.distinct = list(ids)  # pattern id -> AccessPattern
        self.pattern = np.array(pattern, np.int64)[entry]
        self.write = np.array(write, bool)[entry]
        self.stream = table.stream_of[row]
        self.index = row - table.stream_first[self.stream]

    def access(self, a: int) -> Access:
        k, i = int(self.stream[a]), int(self.index[a])
        return Access(self.program.streams[k].name, i, self.instructions[k][i],
                      self.operand_names[self.operand[a]],
                      "write" if self.write[a] else "read", self.distinct[self.pattern[a]])

    # ---- data races ----------------------------------------------------------------------------
    def races(self, limit: int | None) -> list[Race]:
        """Races in order of their second access in `legal_order`, then of their first.

        1. Pairs of distinct patterns whose bounding boxes meet (a sort and sweep per memory),
           kept when two streams and a write are involved.
        2. For each such pair (P, Q) and each access b of Q, the accesses a of P on another
           stream X that ran before b in `legal_order` and do not happen before b form one
           window of X's program order: from b's clock entry for X (everything earlier is
           ordered before b) to the last one that ran before b (b cannot happen before an
           access that ran first).  A read looks only at writes.
        3. Pattern pairs left with a non-empty window get the exact byte test, once each.
        Work: accesses x streams per overlapping pattern pair, plus the races themselves.
        """
        found: list[Race] = []
        if not len(self.stream):
            return found
        later_pattern, earlier_pattern = self._overlapping_patterns()
        rows, earlier_pattern, start, stop, by_index = self._windows(later_pattern,
                                                                     earlier_pattern)
        # 3. The exact test, once per pattern pair that has unordered accesses.
        count = len(self.distinct)
        codes = self.pattern[rows] * count + earlier_pattern
        overlaps: dict[int, Region | None] = {}
        for code in np.unique(codes).tolist():
            q, p = divmod(code, count)
            overlaps[code] = self.bytes.overlap(self.distinct[p], self.distinct[q])
        keep = np.array([overlaps[code] is not None for code in codes.tolist()], bool)
        rows, start, stop = rows[keep], start[keep], stop[keep]
        # 4. Expand windows into pairs, in report order, a bounded chunk at a time.
        order = np.argsort(self.lin[rows], kind="stable")
        rows, start, stop = rows[order], start[order], stop[order]
        row_lin = self.lin[rows]
        sizes = stop - start
        total = np.cumsum(sizes)
        # Few races wanted: expand little at a time, the earliest come first anyway.
        chunk_pairs = _PAIR_CHUNK if limit is None else min(_PAIR_CHUNK, 1024 + 16 * limit)
        done = 0
        while done < len(rows):
            base = int(total[done - 1]) if done else 0
            end = max(done + 1, int(np.searchsorted(total, base + chunk_pairs, "right")))
            # A chunk never splits the accesses of one instruction, so the order holds.
            end = int(np.searchsorted(row_lin, row_lin[end - 1], "right"))
            chunk = slice(done, end)
            done = end
            later = np.repeat(rows[chunk], sizes[chunk])
            earlier = by_index[np.repeat(start[chunk], sizes[chunk]) + _ranks(sizes[chunk])]
            order = np.lexsort((earlier, later, self.lin[earlier], self.lin[later]))
            for a, b in zip(earlier[order].tolist(), later[order].tolist()):
                code = int(self.pattern[b]) * count + int(self.pattern[a])
                found.append(Race(self.access(a), self.access(b), overlaps[code]))
                if limit is not None and len(found) >= limit:
                    return found
        return found

    def _overlapping_patterns(self) -> tuple[np.ndarray, np.ndarray]:
        """Directed pairs (Q, P) of distinct patterns whose bounding boxes meet, (P, P) included,
        both directions otherwise; only pairs that two streams and a write could race on."""
        count = len(self.distinct)
        floor = min(int(self.p_low.min()), 0)  # unvalidated patterns may reach below 0
        span = int(self.p_high.max()) - floor + 1
        by_low = self.p_key * span + self.p_low - floor
        order = np.argsort(by_low, kind="stable")
        # Patterns after i in (memory, low) order that start before i ends overlap i's bytes.
        reach = np.searchsorted(by_low[order],
                                self.p_key[order] * span + self.p_high[order] - floor)
        sizes = reach - np.arange(count)  # includes i itself
        first = order[np.repeat(np.arange(count), sizes)]
        second = order[np.repeat(np.arange(count), sizes) + _ranks(sizes)]
        keep = (np.maximum(self.p_first[first], self.p_first[second])
                < np.minimum(self.p_end[first], self.p_end[second]))
        first, second = first[keep], second[keep]
        # Who touches each pattern: one stream only (which), or several; and any write?
        lowest = np.full(count, np.iinfo(np.int64).max)
        highest = np.full(count, -1)
        written = np.zeros(count, bool)
        np.minimum.at(lowest, self.pattern, self.stream)
        np.maximum.at(highest, self.pattern, self.stream)
        np.logical_or.at(written, self.pattern, self.write)
        lone = lowest == highest
        keep = ((written[first] | written[second])
                & ~(lone[first] & lone[second] & (lowest[first] == lowest[second])))
        first, second = first[keep], second[keep]
        twin = first != second
        return (np.concatenate((first, second[twin])), np.concatenate((second, first[twin])))

    def _windows(self, later_pattern: np.ndarray, earlier_pattern: np.ndarray
                 ) -> tuple[np.ndarray, ...]:
        """For each access b of a `later_pattern` and each (pattern, stream, read/write) segment
        of the paired earlier pattern: the window [start, stop) of that segment that races
        with b.  Returns (b, earlier pattern, start, stop) of the non-empty windows, and the
        accesses in the (pattern, stream, read/write, index) order the windows index."""
        streams = len(self.hb.streams)
        count = len(self.distinct)
        big = int(max(self.lin.max(), self.index.max())) + 2
        segment = (self.pattern * streams + self.stream) * 2 + self.write
        by_index = segment * big + self.index
        order = np.argsort(by_index, kind="stable")
        by_index = by_index[order]
        # Within a segment legal_order positions grow with the index, so this is sorted too.
        by_lin = segment[order] * big + self.lin[order]
        segments, seg_size = np.unique(segment, return_counts=True)
        seg_start = np.cumsum(seg_size) - seg_size  # a segment's accesses, in `order`
        seg_pattern = segments // (2 * streams)
        seg_stream = (segments // 2) % streams
        seg_write = (segments % 2).astype(bool)
        seg_first = np.searchsorted(seg_pattern, np.arange(count), "left")
        seg_count = np.searchsorted(seg_pattern, np.arange(count), "right") - seg_first
        # Every segment of the later pattern against every segment of the earlier one: only
        # pairs on two streams with a write between them can race ...
        pair = np.repeat(np.arange(len(later_pattern)), seg_count[later_pattern])
        q = np.repeat(seg_first[later_pattern], seg_count[later_pattern]) + _ranks(
            seg_count[later_pattern])
        earlier = earlier_pattern[pair]
        row = np.repeat(np.arange(len(q)), seg_count[earlier])
        g = np.repeat(seg_first[earlier], seg_count[earlier]) + _ranks(seg_count[earlier])
        q = q[row]
        keep = (seg_stream[q] != seg_stream[g]) & (seg_write[q] | seg_write[g])
        q, g = q[keep], g[keep]
        # ... and then each access b of the later segment against the earlier one.
        row = np.repeat(np.arange(len(q)), seg_size[q])
        b = order[np.repeat(seg_start[q], seg_size[q]) + _ranks(seg_size[q])]
        g = g[row]
        earlier = seg_pattern[g]
        other = seg_stream[g]
        # The window ends before the segment's first access that runs after b; it is empty
        # unless the access just before that end is not ordered before b.  Most pairs are
        # ordered, so the window's start is looked up only for the others.
        stop = np.searchsorted(by_lin, segments[g] * big + self.lin[b], "left")
        first_unordered = segments[g] * big + self.hb.clocks[self.epoch[b], other]
        keep = (stop > 0) & (by_index[np.maximum(stop - 1, 0)] >= first_unordered)
        start = np.searchsorted(by_index, first_unordered[keep], "left")
        return b[keep], earlier[keep], start, stop[keep], order

    # ---- PSUM accumulation groups --------------------------------------------------------------
    def hazards(self, limit: int | None) -> list[AccumulationHazard]:
        """Accumulation-group hazards in order of the offending instruction in `legal_order`."""
        # Per distinct instruction: 1 if it opens a group (a matmul that overwrites, or a
        # transpose), 0 if it accumulates, -1 if it is neither; and its region's number.
        distinct = self.program.table.distinct
        roles = np.array([(0 if instr.accumulate else 1) if type(instr) is MatMul else
                          1 if type(instr) is Transpose else -1 for instr in distinct], np.int64)
        regions: dict[tuple, int] = {}
        region_of = [regions.setdefault(_canonical(instr.dst), len(regions)) if role >= 0
                     else -1 for instr, role in zip(distinct, roles.tolist())]
        found: list[tuple[int, int, AccumulationHazard]] = []
        for k, instructions in enumerate(self.instructions):
            groups = self._walk_groups(k, instructions, roles, region_of, found)
            self._partial_sums(k, groups, found)
        found.sort(key=lambda item: item[:2])
        hazards = [hazard for _, _, hazard in found]
        return hazards if limit is None else hazards[:limit]

    def _walk_groups(self, k: int, instructions: tuple[Instruction, ...], roles: np.ndarray,
                     region_of: list[int], found: list[tuple[int, int, AccumulationHazard]]
                     ) -> list[_Group]:
        """Follow the groups of one stream in program order; report (a) and (b) hazards.

        An accumulate=False matmul (or a transpose, a matmul against identity) closes every
        open group its destination overlaps and opens a new one; an accumulate=True matmul
        continues the open group on exactly its region.  Open groups are therefore disjoint."""
        name = self.program.streams[k].name
        position = self.hb.position[k]
        table = self.program.table
        first = table.stream_first[k]
        numbers = table.record[first:table.stream_first[k + 1]]
        rows = np.flatnonzero(numbers >= 0)
        rows = rows[roles[numbers[rows]] >= 0]
        open_groups: dict[int, _Group] = {}  # by region number, in opening order
        closed: list[_Group] = []
        closes: dict[tuple[int, ...], tuple[int, ...]] = {}  # (region, *open) -> closed ones
        for i, number in zip(rows.tolist(), numbers[rows].tolist()):
            instr = instructions[i]
            dst = instr.dst
            region = region_of[number]
            if roles[number] == 0:  # an accumulating matmul
                group = open_groups.get(region)
                if group is not None:
                    group.last = i
                    continue
                access = Access(name, i, instr, "dst", "write", dst)
                clash = [(g, r) for g in open_groups.values()
                         if (r := self.bytes.overlap(g.dst, dst)) is not None]
                if clash:
                    group, overlap = min(clash, key=lambda item: item[0].start)
                    start = Access(name, group.start, instructions[group.start], "dst", "write",
                                   group.dst)
                    hazard = AccumulationHazard("interleaved-groups", access, overlap, start)
                else:
                    hazard = AccumulationHazard("no-open-group", access,
                                                _region_of(dst, self.bytes.of(dst)))
                found.append((int(position[i]), 0, hazard))
                continue
            # Which open groups a new one closes depends only on the regions involved (equal
            # regions touch equal bytes): streams cycle through a few, so remember the answer.
            state = (region, *open_groups)
            ended = closes.get(state)
            if ended is None:
                ended = closes[state] = tuple(
                    key for key, group in open_groups.items()
                    if self.bytes.overlap(group.dst, dst) is not None)
            for key in ended:
                closed.append(open_groups.pop(key))
            open_groups[region] = _Group(i, i, dst)
        return closed + list(open_groups.values())

    def _partial_sums(self, k: int, groups: list[_Group],
                      found: list[tuple[int, int, AccumulationHazard]]) -> None:
        """(c): accesses of other streams that happen after a group's first member but not after
        its last.  An access whose latest stream-k predecessor has index q is inside a group
        when start <= q < last; open groups are disjoint, so few are live at any q."""
        groups = sorted((g for g in groups if g.last > g.start), key=lambda g: g.start)
        if not groups:
            return
        keys = {self.memories.index((g.dst.space, g.dst.tensor)) for g in groups
                if (g.dst.space, g.dst.tensor) in self.memories}
        candidates = np.flatnonzero((self.stream != k) & np.isin(self.key, list(keys)))
        latest = self.hb.clocks[self.epoch[candidates], k] - 1
        candidates, latest = candidates[latest >= 0], latest[latest >= 0]
        order = np.lexsort((candidates, latest))
        name = self.program.streams[k].name
        instructions = self.instructions[k]
        live: list[_Group] = []
        next_group = 0
        for a, q in zip(candidates[order].tolist(), latest[order].tolist()):
            while next_group < len(groups) and groups[next_group].start <= q:
                live.append(groups[next_group])
                next_group += 1
            live = [g for g in live if g.last > q]
            for group in live:
                region = self.bytes.overlap(group.dst, self.distinct[self.pattern[a]])
                if region is None:
                    continue
                access = self.access(a)
                start = Access(name, group.start, instructions[group.start], "dst", "write",
                               group.dst)
                last = Access(name, group.last, instructions[group.last], "dst", "write",
                              group.dst)
                kind = "partial-sum-write" if access.kind == "write" else "partial-sum-read"
                found.append((int(self.lin[a]), 1, AccumulationHazard(kind, access, region,
                                                                      start, last)))


@dataclass
class _Group:
    """One accumulation group of a stream: indices of its first and last member."""

    start: int
    last: int
    dst: AccessPattern


def _canonical(ap: AccessPattern) -> tuple:
    """A region's identity: the pattern with size-1 axes dropped and nested contiguous axes
    merged, so `[[1,512]]` and `[[256,2],[1,256]]` name the same group region."""
    axes: list[tuple[int, int]] = []
    for stride, extent in ap.axes:
        if extent == 1:
            continue
        if axes and axes[-1][0] == stride * extent:
            axes[-1] = (stride, axes[-1][1] * extent)
        else:
            axes.append((stride, extent))
    return (ap.space, ap.tensor, ap.partition_start, ap.partitions, ap.partition_stride,
            ap.dtype.itemsize, ap.offset, tuple(axes))


def _ranks(counts: np.ndarray) -> np.ndarray:
    """0..n-1 for each n in counts, concatenated: the position inside each repeated run."""
    total = int(counts.sum())
    starts = np.cumsum(counts) - counts
    return np.arange(total, dtype=np.int64) - np.repeat(starts, counts)


# ---- public entry points -----------------------------------------------------------------------
def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 1:
        raise ValueError(f"limit {limit} must be >= 1 (or None for every race)")


def find_races(program: Program, limit: int | None = 100) -> list[Race]:
    """Up to `limit` data races (None: all), ordered by where their second access runs in the
    functional executor's default order, then their first."""
    _check_limit(limit)
    return _Analysis(program).races(limit)


def find_accumulation_hazards(program: Program,
                              limit: int | None = 100) -> list[AccumulationHazard]:
    """Up to `limit` PSUM accumulation-group hazards (None: all), in order of the offending
    instruction."""
    _check_limit(limit)
    return _Analysis(program).hazards(limit)


@collector_paused()
def check_races(program: Program) -> None:
    """Raise RaceError for the program's first data race, or AccumulationError for its first
    accumulation hazard, whichever the default order reaches first (a hazard on a tie: its
    message says more).  Returns None for a program whose every legal timing computes the same
    values."""
    analysis = _Analysis(program)
    races = analysis.races(1)
    hazards = analysis.hazards(1)
    hb = analysis.hb
    race_at = hb.runs_at(races[0].second.stream, races[0].second.index) if races else None
    if hazards:
        hazard_at = hb.runs_at(hazards[0].access.stream, hazards[0].access.index)
        if race_at is None or hazard_at <= race_at:
            raise AccumulationError(hazards[0].message)
    if races:
        raise RaceError(races[0].message)
