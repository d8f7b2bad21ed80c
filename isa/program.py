"""A `Program`: device-memory tensors plus one instruction stream per engine and DMA queue.

Streams run concurrently and synchronise only through counting semaphores: `signal s` adds one
to semaphore `s` when every earlier instruction of its stream has completed, `wait s v` blocks
its stream until `s` has been signalled `v` times.  Each semaphore is signalled from one stream
only, which makes the happens-before order of a program exact (the race detector relies on it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from math import prod

from isa.access import AccessPattern
from isa.dtypes import DType, dtype
from isa.instructions import Instruction, InstructionError, Signal, Wait
from isa.target import Space, Target, stream_engine

TENSOR_KINDS = ("input", "output", "scratch")


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
        signallers: dict[int, str] = {}
        signals: Counter[int] = Counter()
        valid: set[tuple[Instruction, object]] = set()
        for stream in self.streams:
            if stream.name not in legal:
                raise ProgramError(
                    f"stream {stream.name!r} does not exist on {target.name} (streams: "
                    f"{', '.join(target.stream_names)})")
            engine = stream_engine(stream.name)
            for index, instr in enumerate(stream.instructions):
                if (instr, engine) not in valid:  # programs repeat instructions: check once
                    try:
                        instr.validate(target, engine)
                    except InstructionError as err:
                        raise ProgramError(f"{stream.name}[{index}] {instr}: {err}") from None
                    valid.add((instr, engine))
                for name, ap in instr.operand_fields().items():
                    if ap.space is Space.HBM:
                        _check_hbm(stream.name, index, instr, name, ap, tensors)
                if isinstance(instr, Signal):
                    owner = signallers.setdefault(instr.sem, stream.name)
                    if owner != stream.name:
                        raise ProgramError(
                            f"{stream.name}[{index}] {instr}: semaphore {instr.sem} is already "
                            f"signalled by stream {owner}; each semaphore has one signalling "
                            f"stream")
                    signals[instr.sem] += 1
        for stream in self.streams:
            for index, instr in enumerate(stream.instructions):
                if isinstance(instr, Wait) and instr.value > signals[instr.sem]:
                    raise ProgramError(
                        f"{stream.name}[{index}] {instr}: waits for {instr.value} signals of "
                        f"semaphore {instr.sem} but the program signals it {signals[instr.sem]} "
                        f"times (deadlock)")


def _check_hbm(stream: str, index: int, instr: Instruction, name: str, ap: AccessPattern,
               tensors: dict[str, DramTensor]) -> None:
    def where() -> str:  # formatted only on failure: validation runs on every instruction
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
