"""A `Program`: device-memory tensors plus one instruction stream per engine and DMA queue.

Streams run concurrently and synchronise only through counting semaphores: `signal s` adds one
to semaphore `s` when every earlier instruction of its stream has completed, `wait s v` blocks
its stream until `s` has been signalled `v` times.  Each semaphore is signalled from one stream
only, which makes the happens-before order of a program exact (the race detector relies on it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import cache, cached_property
from itertools import chain, count
from math import prod
from operator import attrgetter

import numpy as np

from isa.access import AccessPattern
from isa.dtypes import DType, dtype
from isa.instructions import Instruction, InstructionError, Signal, Wait
from isa.target import Engine, Space, Target, stream_engine

TENSOR_KINDS = ("input", "output", "scratch")
OTHER, WAIT, SIGNAL = 0, 1, 2  # InstructionTable.code
_CODE = {Wait: WAIT, Signal: SIGNAL}
_SEM, _SEM_VALUE = attrgetter("sem"), attrgetter("sem", "value")


@cache
def _fields_of(record_type: type) -> Callable[[Instruction], object]:
    """A C-level getter of a record's field values: equal values, equal records."""
    names = [f.name for f in fields(record_type)]
    return attrgetter(*names) if names else type  # no fields: all records of a type are equal


class ProgramError(ValueError):
    """A program that cannot run as written; the message names the stream and instruction."""


@dataclass(frozen=True)
class DramTensor:
    """A named tensor in device memory (HBM)."""

    name: str
    shape: tuple[int, ...]
    dtype: DType
    kind: str = "scratch"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        object.__setattr__(self, "dtype", dtype(self.dtype))
        if not self.name.isidentifier():
            raise ProgramError(f"tensor name {self.name!r} must be an identifier")
        if not self.shape or any(n < 1 for n in self.shape):
            raise ProgramError(f"tensor {self.name} shape {self.shape} must have sizes >= 1")
        if self.kind not in TENSOR_KINDS:
            raise ProgramError(
                f"tensor {self.name} kind {self.kind!r} must be one of {', '.join(TENSOR_KINDS)}")

    @property
    def nbytes(self) -> int:
        return prod(self.shape) * self.dtype.itemsize


@dataclass(frozen=True)
class Stream:
    """The in-order instruction stream of one engine or DMA queue."""

    name: str
    instructions: tuple[Instruction, ...] = ()

    def __post_init__(self) -> None:
        stream_engine(self.name)  # raises on an unknown stream name
        object.__setattr__(self, "instructions", tuple(self.instructions))


@dataclass(frozen=True, eq=False)
class InstructionTable:
    """A program's instructions as arrays over all rows (the streams one after another), for
    the passes that walk big programs: validation, race detection, the timing model.

    `record` numbers each row's instruction by value among the `distinct` ones, so a pass
    works once per distinct instruction and spreads its answers over the rows with numpy.
    Signal number v of semaphore s has its own slot; a wait for (s, v) names that slot.  A
    semaphore's signals come from one stream, so they take consecutive slots in program order.
    Waits that no signal can satisfy name slot `never` (= the number of signals), which no
    signal fills.
    """

    stream_first: np.ndarray  # [streams + 1] first row of each stream
    code: np.ndarray  # int8: OTHER, WAIT or SIGNAL
    record: np.ndarray  # index into `distinct`; -1 for waits and signals
    distinct: tuple[Instruction, ...]  # the distinct instructions other than waits and signals
    sem: np.ndarray  # the semaphore of a wait or signal; -1 otherwise
    value: np.ndarray  # wait: signals it needs; signal: which signal of its semaphore it is
    slot: np.ndarray  # wait: slot of the signal it needs; signal: its own slot; -1 otherwise
    never: int  # slot of waits that cannot be satisfied; slots are 0 .. never

    @property
    def n_slots(self) -> int:
        return self.never + 1

    @property
    def stream_of(self) -> np.ndarray:
        """The stream number of every row."""
        return np.repeat(np.arange(len(self.stream_first) - 1), np.diff(self.stream_first))

    @classmethod
    def of(cls, streams: tuple[Stream, ...]) -> InstructionTable:
        lengths = [len(s.instructions) for s in streams]
        stream_first = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int64)
        records = list(chain.from_iterable(s.instructions for s in streams))
        # One pass over the records, in map() calls that run in C; equal records are found by
        # their field values, per record type (hashing the records themselves would run two
        # Python calls each, on memory a million records no longer keep in the caches).
        kind_of: dict[type, int] = {}  # record type -> the row where it first appears
        kind = np.fromiter(map(kind_of.setdefault, map(type, records), count()), np.int64,
                           len(records))
        code = np.full(len(records), OTHER, np.int8)
        for record_type, number in kind_of.items():
            if record_type in _CODE:
                code[kind == number] = _CODE[record_type]
        record = np.full(len(records), -1, np.int64)
        firsts, numbered = [], []  # per record type: first row of each distinct value; rows
        for record_type, number in kind_of.items():
            if record_type in _CODE:
                continue
            rows = np.flatnonzero(kind == number)
            values = map(_fields_of(record_type), map(records.__getitem__, rows.tolist()))
            memo: dict[object, int] = {}  # a value seen before gets its first place
            first = np.fromiter(map(memo.setdefault, values, count()), np.int64, len(rows))
            places, local = np.unique(first, return_inverse=True)
            numbered.append((rows, local.ravel(), sum(len(f) for f in firsts)))
            firsts.append(rows[places])
        first_rows = np.concatenate([np.zeros(0, np.int64), *firsts])
        order = np.argsort(first_rows, kind="stable")  # number records by first appearance
        rank = np.empty(len(order), np.int64)
        rank[order] = np.arange(len(order))
        for rows, local, offset in numbered:
            record[rows] = rank[offset + local]
        distinct = tuple(map(records.__getitem__, first_rows[order].tolist()))
        sem = np.full(len(records), -1, np.int64)
        value = np.zeros(len(records), np.int64)
        slot = np.full(len(records), -1, np.int64)
        rows = {}
        for sync in (WAIT, SIGNAL):
            rows[sync] = np.flatnonzero(code == sync)
            found = map(records.__getitem__, rows[sync].tolist())
            if sync == WAIT:  # (sem, value) pairs, read in one pass
                pairs = np.fromiter(chain.from_iterable(map(_SEM_VALUE, found)), np.int64,
                                    2 * len(rows[sync])).reshape(-1, 2)
                sem[rows[sync]], value[rows[sync]] = pairs[:, 0], pairs[:, 1]
            else:
                sem[rows[sync]] = np.fromiter(map(_SEM, found), np.int64, len(rows[sync]))
        signals = rows[SIGNAL]
        order = np.argsort(sem[signals], kind="stable")
        slot[signals[order]] = np.arange(len(signals))
        sems, counts = np.unique(sem[signals], return_counts=True)
        base = np.cumsum(counts) - counts
        value[signals[order]] = np.arange(len(signals)) - np.repeat(base, counts) + 1
        waits = rows[WAIT]
        at = np.searchsorted(sems, sem[waits])
        known = at < len(sems)
        known[known] = sems[at[known]] == sem[waits][known]
        needed = value[waits]
        satisfiable = known & (needed >= 1)
        satisfiable[satisfiable] = needed[satisfiable] <= counts[at[satisfiable]]
        slot[waits] = len(signals)
        slot[waits[satisfiable]] = base[at[satisfiable]] + needed[satisfiable] - 1
        return cls(stream_first, code, record, distinct, sem, value, slot, len(signals))

    def signals_of(self, sem: int) -> int:
        """How many times the program signals `sem`."""
        return int(np.count_nonzero((self.code == SIGNAL) & (self.sem == sem)))


@dataclass(frozen=True)
class Program:
    """Tensors in HBM and per-engine instruction streams; immutable and comparable."""

    name: str
    tensors: tuple[DramTensor, ...] = ()
    streams: tuple[Stream, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "tensors", tuple(self.tensors))
        object.__setattr__(self, "streams", tuple(self.streams))
        names = Counter(t.name for t in self.tensors)
        doubled = [n for n, c in names.items() if c > 1]
        if doubled:
            raise ProgramError(f"program {self.name}: tensor {doubled[0]!r} declared twice")
        streams = Counter(s.name for s in self.streams)
        doubled = [n for n, c in streams.items() if c > 1]
        if doubled:
            raise ProgramError(f"program {self.name}: stream {doubled[0]!r} declared twice")

    @property
    def tensor_map(self) -> dict[str, DramTensor]:
        return {t.name: t for t in self.tensors}

    def stream(self, name: str) -> Stream:
        for s in self.streams:
            if s.name == name:
                return s
        raise KeyError(f"program {self.name} has no stream {name!r}")

    @cached_property
    def table(self) -> InstructionTable:
        """The program's instructions as arrays (computed once: programs are immutable)."""
        return InstructionTable.of(self.streams)

    @property
    def instruction_count(self) -> int:
        return sum(len(s.instructions) for s in self.streams)

    def locate(self, stream: str, index: int) -> str:
        """`vector[3] tensor_tensor dst=...`: how errors and reports name an instruction."""
        return f"{stream}[{index}] {self.stream(stream).instructions[index]}"

    def validate(self, target: Target) -> None:
        """Raise ProgramError naming the first illegal stream, instruction, tensor or semaphore."""
        legal = set(target.stream_names)
        tensors = self.tensor_map
        table = self.table
        valid: dict[Engine, set[int]] = {}
        for k, stream in enumerate(self.streams):
            if stream.name not in legal:
                raise ProgramError(
                    f"stream {stream.name!r} does not exist on {target.name} (streams: "
                    f"{', '.join(target.stream_names)})")
            engine = stream_engine(stream.name)
            checked = valid.setdefault(engine, set())
            first = table.stream_first[k]
            code = table.code[first:table.stream_first[k + 1]]
            # Programs repeat instructions: check each distinct one once, in program order, so
            # the first illegal one is the one reported.  Whether a wait or signal is legal
            # does not depend on its semaphore: the first of each kind stands for the rest.
            others = np.flatnonzero(code == OTHER)
            numbers, at = np.unique(table.record[first + others], return_index=True)
            rows = dict(zip(others[at].tolist(), numbers.tolist()))
            for kind in (WAIT, SIGNAL):
                found = np.flatnonzero(code == kind)[:1]
                rows.update((int(r), -1) for r in found)
            for index in sorted(rows):
                number = rows[index]
                if number in checked:
                    continue
                instr = stream.instructions[index]
                try:
                    instr.validate(target, engine)
                except InstructionError as err:
                    raise ProgramError(f"{stream.name}[{index}] {instr}: {err}") from None
                for name, ap in instr.operand_fields().items():
                    if ap.space is Space.HBM:
                        _check_hbm(stream.name, index, instr, name, ap, tensors)
                if number >= 0:
                    checked.add(number)
        self.check_signallers()
        self._check_waits()

    def check_signallers(self) -> None:
        """Raise ProgramError if a semaphore is signalled from more than one stream."""
        table = self.table
        stream_of = table.stream_of
        signals = np.flatnonzero(table.code == SIGNAL)
        sems, first = np.unique(table.sem[signals], return_index=True)
        owner = stream_of[signals[first]][np.searchsorted(sems, table.sem[signals])]
        intruders = signals[stream_of[signals] != owner]
        if intruders.size:
            row = int(intruders[0])
            sem = int(table.sem[row])
            owner_name = self.streams[int(stream_of[signals[table.sem[signals] == sem][0]])].name
            raise ProgramError(
                f"{self._locate_row(row)}: semaphore {sem} is already signalled by stream "
                f"{owner_name}; each semaphore has one signalling stream")

    def _check_waits(self) -> None:
        table = self.table
        hopeless = np.flatnonzero((table.code == WAIT) & (table.slot == table.never))
        if hopeless.size:
            row = int(hopeless[0])
            sem, needed = int(table.sem[row]), int(table.value[row])
            raise ProgramError(
                f"{self._locate_row(row)}: waits for {needed} signals of semaphore {sem} but "
                f"the program signals it {table.signals_of(sem)} times (deadlock)")

    def _locate_row(self, row: int) -> str:
        k = int(np.searchsorted(self.table.stream_first, row, side="right") - 1)
        return self.locate(self.streams[k].name, row - int(self.table.stream_first[k]))


def _check_hbm(stream: str, index: int, instr: Instruction, name: str, ap: AccessPattern,
               tensors: dict[str, DramTensor]) -> None:
    def where() -> str:  # formatted only on failure
        return f"{stream}[{index}] {instr}"

    if ap.tensor not in tensors:
        raise ProgramError(f"{where()}: operand {name} names undeclared tensor {ap.tensor!r}")
    tensor = tensors[ap.tensor]
    if ap.dtype != tensor.dtype:
        raise ProgramError(f"{where()}: operand {name} reads {ap.tensor} as {ap.dtype} but it "
                           f"is declared {tensor.dtype}")
    low, high = ap.byte_span()
    if low < 0 or high > tensor.nbytes:
        raise ProgramError(f"{where()}: operand {name} touches bytes {low}..{high - 1} of "
                           f"tensor {ap.tensor}, which has {tensor.nbytes} bytes")


@dataclass
class ProgramBuilder:
    """Mutable helper that assembles a Program: declare tensors, append, synchronise."""

    name: str
    tensors: list[DramTensor] = field(default_factory=list)
    streams: dict[str, list[Instruction]] = field(default_factory=dict)
    next_semaphore: int = 0
    _signals: Counter = field(default_factory=Counter)

    def tensor(self, name: str, shape: tuple[int, ...], dt: str | DType,
               kind: str = "scratch") -> DramTensor:
        tensor = DramTensor(name, tuple(shape), dtype(dt), kind)
        self.tensors.append(tensor)
        return tensor

    def emit(self, stream: str, instruction: Instruction) -> int:
        """Append to a stream; returns the instruction's index in it."""
        stream_engine(stream)
        instructions = self.streams.setdefault(stream, [])
        instructions.append(instruction)
        return len(instructions) - 1

    def semaphore(self) -> int:
        self.next_semaphore += 1
        return self.next_semaphore - 1

    def signal(self, stream: str, sem: int) -> int:
        """Signal `sem` from `stream`; returns the count a waiter needs to see this signal."""
        self.emit(stream, Signal(sem))
        self._signals[sem] += 1
        return self._signals[sem]

    def sync(self, producer: str, consumer: str, sem: int) -> None:
        """Order everything emitted so far on `producer` before what comes next on `consumer`."""
        self.emit(consumer, Wait(sem, self.signal(producer, sem)))

    def build(self) -> Program:
        return Program(self.name, tuple(self.tensors),
                       tuple(Stream(n, tuple(i)) for n, i in self.streams.items()))
