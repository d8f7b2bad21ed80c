"""Instruction records: one frozen, typed dataclass per opcode.

Each record checks what it can on its own in `__post_init__` (types, shapes that must agree,
names of functions and ALU ops) and checks the architecture limits in `validate(target)`.  Which
engines run an opcode and which memories each operand may use are declared once, in
`isa.opcodes.OPCODES`; the engine of an instruction is the stream it is placed in.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Union

from isa.access import AccessPattern
from isa.dtypes import fp32
from isa.semantics import ACTIVATION_FUNCS, AFFINE_COMPARISONS, ALU, BITWISE_ALU, REDUCERS
from isa.target import Engine, Space, Target

AP = AccessPattern
ScalarOrTile = Union[float, AccessPattern]  # an immediate, or a per-partition [P, 1] tile

ALU_OPS = tuple(ALU)
BITWISE_OPS = BITWISE_ALU
REDUCE_OPS = tuple(REDUCERS)
ACTIVATIONS = tuple(ACTIVATION_FUNCS)
AFFINE_CMPS = tuple(AFFINE_COMPARISONS)


class InstructionError(ValueError):
    """An instruction that is illegal in itself or on a target; the message names the value."""


def _require(condition: bool, message: Callable[[], str]) -> None:
    # Messages are built only on failure: records are created and validated by the thousand
    # while tracing, and formatting access patterns would dominate the time.
    if not condition:
        raise InstructionError(message())


def _per_partition(name: str, value: ScalarOrTile | None, partitions: int) -> None:
    """A per-partition operand is a [P, 1] tile matching the data's partitions."""
    if isinstance(value, AccessPattern):
        _require(value.partitions == partitions and value.free_size == 1,
                 lambda: f"{name} {value} must be a per-partition [{partitions}, 1] tile")


def _immediate(record: Instruction, *names: str) -> None:
    """Immediates are stored as float so that 2 and 2.0 print and compare the same."""
    for name in names:
        value = getattr(record, name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            object.__setattr__(record, name, float(value))


def _same_size(name_a: str, a: AP, name_b: str, b: AP) -> None:
    _require(a.partitions == b.partitions and a.free_size == b.free_size,
             lambda: f"{name_a} {a} has shape [{a.partitions}, {a.free_size}] but {name_b} {b} has "
             f"[{b.partitions}, {b.free_size}]")


def record(cls: type) -> type:
    """An instruction record: a frozen dataclass with slots.

    Programs hold up to millions of records; slots keep each one small and its fields next to
    its header, which is what the passes over a big program spend their time reading.
    """
    return dataclass(frozen=True, slots=True)(cls)


@functools.cache
def _field_names(record: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(record))


@record
class Instruction:
    """Base record.  Subclasses set `opcode` and declare their operands as fields."""

    opcode: ClassVar[str] = ""

    def spec(self):  # -> isa.opcodes.OpSpec (imported lazily: the table imports this module)
        from isa.opcodes import OPCODES
        return OPCODES[self.opcode]

    def operand_fields(self) -> dict[str, AccessPattern]:
        """Every access-pattern operand this instruction carries, by field name."""
        found = {}
        for name in _field_names(type(self)):
            value = getattr(self, name)
            if isinstance(value, AccessPattern):
                found[name] = value
        return found

    def accumulates(self) -> bool:
        """True when the instruction reads its destination (PSUM accumulation)."""
        return False

    def reads(self) -> dict[str, AccessPattern]:
        spec = self.spec()
        operands = self.operand_fields()
        found = {name: ap for name, ap in operands.items() if spec.role(name) != "out"}
        if self.accumulates():
            found["dst"] = operands["dst"]
        return found

    def writes(self) -> dict[str, AccessPattern]:
        spec = self.spec()
        return {name: ap for name, ap in self.operand_fields().items() if spec.role(name) == "out"}

    def validate(self, target: Target, engine: Engine | None = None) -> None:
        """Check this instruction against the architecture limits and the engine's ports."""
        spec = self.spec()
        engine = spec.engines[0] if engine is None else engine
        _require(engine in spec.engines,
                 lambda: f"{self.opcode} runs on {'/'.join(map(str, spec.engines))}, not on "
                         f"{engine}")
        _require(engine in target.engines, lambda: f"target {target.name} has no {engine} engine")
        for name, ap in self.operand_fields().items():
            allowed = spec.spaces(name, engine)
            if ap.space not in allowed:
                raise InstructionError(
                    f"{self.opcode} operand {name}={ap}: {engine} cannot use {ap.space} here "
                    f"(allowed: {', '.join(sorted(map(str, allowed))) or 'none'})")
            try:
                ap.check(target)
                if engine is not Engine.DMA and ap.space is not Space.HBM:
                    target.check_partition_range(ap.partition_start, ap.partitions)
            except ValueError as err:
                raise InstructionError(f"{self.opcode} operand {name}: {err}") from None
        self.check_limits(target)

    def check_limits(self, target: Target) -> None:
        """Opcode-specific architecture limits; overridden where an opcode has them."""

    def __str__(self) -> str:
        from isa.assembly import format_instruction
        return format_instruction(self)


# ---- synchronisation -----------------------------------------------------------------------
@record
class Wait(Instruction):
    """Block this stream until semaphore `sem` has been signalled at least `value` times."""

    opcode: ClassVar[str] = "wait"
    sem: int
    value: int

    def __post_init__(self) -> None:
        _require(self.sem >= 0, lambda: f"semaphore index {self.sem} must be >= 0")
        _require(self.value >= 1, lambda: f"wait value {self.value} must be >= 1")

    def check_limits(self, target: Target) -> None:
        _require(self.sem < target.semaphores,
                 lambda: f"semaphore {self.sem} exceeds the {target.semaphores} semaphores of "
                 f"{target.name}")


@record
class Signal(Instruction):
    """Increment semaphore `sem` once every earlier instruction of this stream has completed."""

    opcode: ClassVar[str] = "signal"
    sem: int

    def __post_init__(self) -> None:
        _require(self.sem >= 0, lambda: f"semaphore index {self.sem} must be >= 0")

    def check_limits(self, target: Target) -> None:
        _require(self.sem < target.semaphores,
                 lambda: f"semaphore {self.sem} exceeds the {target.semaphores} semaphores of "
                 f"{target.name}")


# ---- data movement -------------------------------------------------------------------------
@record
class DmaCopy(Instruction):
    """Copy src to dst through a DMA queue, casting when the dtypes differ."""

    opcode: ClassVar[str] = "dma_copy"
    dst: AP
    src: AP

    def __post_init__(self) -> None:
        _require(self.dst.elements == self.src.elements,
                 lambda: f"dma_copy moves {self.src.elements} elements from {self.src} but dst "
                 f"{self.dst} holds {self.dst.elements}")


# ---- Tensor engine -------------------------------------------------------------------------
@record
class MatMul(Instruction):
    """dst[M, N] (+)= stationary[K, M].T @ moving[K, N], fp32 into PSUM."""

    opcode: ClassVar[str] = "matmul"
    dst: AP
    stationary: AP
    moving: AP
    accumulate: bool = False

    def __post_init__(self) -> None:
        k, m, n = self.stationary.partitions, self.stationary.free_size, self.moving.free_size
        _require(self.moving.partitions == k,
                 lambda: f"matmul contraction mismatch: stationary {self.stationary} has K={k} "
                         f"partitions "
                 f"but moving {self.moving} has {self.moving.partitions}")
        _require(self.dst.partitions == m and self.dst.free_size == n,
                 lambda: f"matmul dst {self.dst} must be [M={m}, N={n}], got "
                 f"[{self.dst.partitions}, {self.dst.free_size}]")
        _require(self.dst.dtype == fp32,
                 lambda: f"matmul dst {self.dst} must be fp32 (PSUM accumulates "
                                         f"in fp32), got {self.dst.dtype}")
        _require(self.stationary.dtype.is_float and self.moving.dtype.is_float,
                 lambda: f"matmul operands must be float, got {self.stationary.dtype} and "
                 f"{self.moving.dtype}")

    @property
    def kmn(self) -> tuple[int, int, int]:
        return self.stationary.partitions, self.stationary.free_size, self.moving.free_size

    def accumulates(self) -> bool:
        return self.accumulate

    def check_limits(self, target: Target) -> None:
        k, m, n = self.kmn
        _require(k <= target.matmul_max_k,
                 lambda: f"matmul K={k} exceeds the limit {target.matmul_max_k}")
        _require(m <= target.matmul_max_m,
                 lambda: f"matmul stationary free size M={m} exceeds the limit "
                         f"{target.matmul_max_m}")
        _require(n <= target.matmul_max_n,
                 lambda: f"matmul moving free size N={n} exceeds the limit {target.matmul_max_n}")
        low, high = self.dst.byte_span()
        bank = target.psum_bank_bytes
        _require(low // bank == (high - 1) // bank,
                 lambda: f"matmul dst {self.dst} spans PSUM bytes {low}..{high - 1}, crossing a "
                 f"{bank}-byte bank boundary")


@record
class Transpose(Instruction):
    """dst[F, P] = src[P, F].T on the Tensor engine (a matmul against identity)."""

    opcode: ClassVar[str] = "transpose"
    dst: AP
    src: AP

    def __post_init__(self) -> None:
        _require(self.dst.partitions == self.src.free_size
                 and self.dst.free_size == self.src.partitions,
                 lambda: f"transpose of {self.src} [{self.src.partitions}, "
                         f"{self.src.free_size}] needs "
                 f"dst [{self.src.free_size}, {self.src.partitions}], got {self.dst}")

    def check_limits(self, target: Target) -> None:
        _require(self.src.free_size <= target.transpose_max,
                 lambda: f"transpose free size {self.src.free_size} exceeds {target.transpose_max}")


# ---- Vector / Scalar / GpSimd --------------------------------------------------------------
@record
class Activation(Instruction):
    """dst = func(src * scale + bias); optional add-reduction of dst into reduce[P, 1]."""

    opcode: ClassVar[str] = "activation"
    dst: AP
    src: AP
    func: str = "identity"
    scale: ScalarOrTile = 1.0
    bias: AP | None = None
    reduce: AP | None = None

    def __post_init__(self) -> None:
        _immediate(self, "scale")
        _require(self.func in ACTIVATIONS,
                 lambda: f"unknown activation {self.func!r}; supported: {', '.join(ACTIVATIONS)}")
        _same_size("dst", self.dst, "src", self.src)
        _per_partition("scale", self.scale, self.src.partitions)
        _per_partition("bias", self.bias, self.src.partitions)
        _per_partition("reduce", self.reduce, self.src.partitions)


@record
class TensorTensor(Instruction):
    """dst = in0 <op> in1, element-wise."""

    opcode: ClassVar[str] = "tensor_tensor"
    dst: AP
    in0: AP
    in1: AP
    op: str

    def __post_init__(self) -> None:
        _check_alu("op", self.op, (self.in0, self.in1, self.dst))
        _same_size("dst", self.dst, "in0", self.in0)
        _same_size("in0", self.in0, "in1", self.in1)


@record
class TensorScalar(Instruction):
    """dst = (src <op0> operand0) <op1> operand1, operands immediate or per-partition."""

    opcode: ClassVar[str] = "tensor_scalar"
    dst: AP
    src: AP
    op0: str
    operand0: ScalarOrTile
    op1: str | None = None
    operand1: ScalarOrTile | None = None
    reverse0: bool = False  # operand0 <op0> src instead
    reverse1: bool = False

    def __post_init__(self) -> None:
        _immediate(self, "operand0", "operand1")
        _check_alu("op0", self.op0, (self.src, self.dst), "operand0", self.operand0)
        _same_size("dst", self.dst, "src", self.src)
        _per_partition("operand0", self.operand0, self.src.partitions)
        _require((self.op1 is None) == (self.operand1 is None),
                 lambda: f"op1={self.op1!r} and operand1={self.operand1!r} must be given together")
        if self.op1 is not None:
            _check_alu("op1", self.op1, (self.src, self.dst), "operand1", self.operand1)
            _per_partition("operand1", self.operand1, self.src.partitions)


@record
class TensorReduce(Instruction):
    """dst = reduce(src, op, over free `axes`) (axes count from 1, as in NKI), optional negate."""

    opcode: ClassVar[str] = "tensor_reduce"
    dst: AP
    src: AP
    op: str
    axes: tuple[int, ...]
    negate: bool = False
    keepdims: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "axes", tuple(int(a) for a in self.axes))
        _require(self.op in REDUCE_OPS,
                 lambda: f"unknown reduce op {self.op!r}; supported: {', '.join(REDUCE_OPS)}")
        nfree = len(self.src.axes)
        _require(bool(self.axes) and all(1 <= a <= nfree for a in self.axes)
                 and len(set(self.axes)) == len(self.axes),
                 lambda: f"reduce axes {self.axes} must be distinct free axes in 1..{nfree} of "
                         f"{self.src}")
        kept = [n for i, n in enumerate(self.src.free_shape, start=1) if i not in self.axes]
        size = 1
        for n in kept:
            size *= n
        _require(self.dst.partitions == self.src.partitions and self.dst.free_size == size,
                 lambda: f"tensor_reduce dst {self.dst} must hold [{self.src.partitions}, {size}]")


@record
class TensorCopy(Instruction):
    """dst = src, cast to dst's dtype."""

    opcode: ClassVar[str] = "tensor_copy"
    dst: AP
    src: AP

    def __post_init__(self) -> None:
        _same_size("dst", self.dst, "src", self.src)


@record
class TensorTensorScan(Instruction):
    """Per partition along the free axis: y[i] = (in0[i] <op0> y[i-1]) <op1> in1[i]."""

    opcode: ClassVar[str] = "tensor_tensor_scan"
    dst: AP
    in0: AP
    in1: AP
    initial: ScalarOrTile
    op0: str
    op1: str

    def __post_init__(self) -> None:
        _immediate(self, "initial")
        _check_alu("op0", self.op0, (self.in0, self.dst), "initial", self.initial)
        _check_alu("op1", self.op1, (self.in1, self.dst))
        _same_size("dst", self.dst, "in0", self.in0)
        _same_size("in0", self.in0, "in1", self.in1)
        _per_partition("initial", self.initial, self.in0.partitions)


@record
class Memset(Instruction):
    """dst = value everywhere."""

    opcode: ClassVar[str] = "memset"
    dst: AP
    value: float

    def __post_init__(self) -> None:
        _immediate(self, "value")


@record
class Iota(Instruction):
    """dst[p, i...] = base + channel_multiplier * p + sum(steps[j] * i_j)."""

    opcode: ClassVar[str] = "iota"
    dst: AP
    base: int = 0
    channel_multiplier: int = 0
    steps: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(int(s) for s in self.steps))
        _require(len(self.steps) == len(self.dst.axes),
                 lambda: f"iota steps {self.steps} need one step per free axis of {self.dst} "
                 f"({len(self.dst.axes)})")


@record
class AffineSelect(Instruction):
    """dst = src where (base + channel_multiplier*p + sum(steps*i)) <cmp> 0, else fill."""

    opcode: ClassVar[str] = "affine_select"
    dst: AP
    src: AP
    cmp: str
    fill: float
    base: int = 0
    channel_multiplier: int = 0
    steps: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(int(s) for s in self.steps))
        _immediate(self, "fill")
        _require(self.cmp in AFFINE_CMPS,
                 lambda: f"unknown comparison {self.cmp!r}; supported: {', '.join(AFFINE_CMPS)}")
        _same_size("dst", self.dst, "src", self.src)
        _require(len(self.steps) == len(self.src.axes),
                 lambda: f"affine_select steps {self.steps} need one step per free axis of "
                         f"{self.src}")


@record
class BnStats(Instruction):
    """Per partition: (count, mean, M2) of the first and second halves of src's free axis."""

    opcode: ClassVar[str] = "bn_stats"
    dst: AP
    src: AP
    fmax: ClassVar[int] = 512  # nl.tile_size.bn_stats_fmax [ISA25]

    def __post_init__(self) -> None:
        _require(self.src.free_size <= self.fmax,
                 lambda: f"bn_stats free size {self.src.free_size} exceeds "
                         f"bn_stats_fmax={self.fmax}")
        _require(self.dst.partitions == self.src.partitions and self.dst.free_size == 6,
                 lambda: f"bn_stats dst {self.dst} must be [{self.src.partitions}, 6]")
        _require(self.dst.dtype == fp32, lambda: f"bn_stats dst {self.dst} must be fp32")


@record
class BnAggr(Instruction):
    """Combine (count, mean, M2) triples per partition into (mean, variance)."""

    opcode: ClassVar[str] = "bn_aggr"
    dst: AP
    src: AP

    def __post_init__(self) -> None:
        _require(self.src.free_size % 3 == 0,
                 lambda: f"bn_aggr src {self.src} free size {self.src.free_size} is not a "
                         f"multiple of 3")
        _require(self.dst.partitions == self.src.partitions and self.dst.free_size == 2,
                 lambda: f"bn_aggr dst {self.dst} must be [{self.src.partitions}, 2]")


@record
class Reciprocal(Instruction):
    """dst = 1 / src at full precision on the Vector engine."""

    opcode: ClassVar[str] = "reciprocal"
    dst: AP
    src: AP

    def __post_init__(self) -> None:
        _same_size("dst", self.dst, "src", self.src)


# ---- collectives (DMA queues, across NeuronCores) -------------------------------------------
def _check_group(record: Instruction, reduces: bool) -> None:
    """Normalise a collective's ranks (distinct core indices) and check its reduce op."""
    ranks = tuple(int(r) for r in record.ranks)
    _require(len(ranks) >= 1 and len(set(ranks)) == len(ranks) and min(ranks) >= 0,
             lambda: f"collective ranks {ranks} must be distinct core indices >= 0")
    object.__setattr__(record, "ranks", ranks)
    if reduces:
        _require(record.op in REDUCE_OPS,
                 lambda: f"unknown reduce op {record.op!r}; supported: {', '.join(REDUCE_OPS)}")


@record
class _Collective(Instruction):
    """The operands every group collective has: each rank's src and dst, and the ranks."""

    dst: AP
    src: AP
    ranks: tuple[int, ...]


@record
class AllReduce(_Collective):
    """Every rank's dst = reduction over the ranks of their src (same shapes everywhere)."""

    opcode: ClassVar[str] = "all_reduce"
    op: str = "add"

    def __post_init__(self) -> None:
        _check_group(self, reduces=True)
        _require(self.dst.elements == self.src.elements,
                 lambda: f"all_reduce dst {self.dst} must hold src's {self.src.elements} elements")


@record
class AllGather(_Collective):
    """Every rank's dst = the ranks' src blocks concatenated in rank-list order."""

    opcode: ClassVar[str] = "all_gather"

    def __post_init__(self) -> None:
        _check_group(self, reduces=False)
        _require(self.dst.elements == len(self.ranks) * self.src.elements,
                 lambda: f"all_gather dst {self.dst} must hold {len(self.ranks)} x "
                         f"{self.src.elements} elements")


@record
class ReduceScatter(_Collective):
    """Rank i's dst = reduction over the ranks of block i of their src."""

    opcode: ClassVar[str] = "reduce_scatter"
    op: str = "add"

    def __post_init__(self) -> None:
        _check_group(self, reduces=True)
        _require(self.src.elements == len(self.ranks) * self.dst.elements,
                 lambda: f"reduce_scatter src {self.src} must hold {len(self.ranks)} x "
                         f"{self.dst.elements} elements")


@record
class Send(Instruction):
    """Send src to core `peer`, matched with the peer's Recv of the same tag."""

    opcode: ClassVar[str] = "send"
    src: AP
    peer: int
    tag: int = 0

    def __post_init__(self) -> None:
        _require(self.peer >= 0, lambda: f"send peer {self.peer} must be a core index >= 0")


@record
class Recv(Instruction):
    """Receive into dst what core `peer` sends with the same tag."""

    opcode: ClassVar[str] = "recv"
    dst: AP
    peer: int
    tag: int = 0

    def __post_init__(self) -> None:
        _require(self.peer >= 0, lambda: f"recv peer {self.peer} must be a core index >= 0")


def _check_alu(name: str, op: str, tiles: tuple[AP, ...], operand_name: str = "",
               operand: ScalarOrTile | None = None) -> None:
    """A known ALU op; bitwise ops need integer tiles and an integral operand (if one is given)."""
    _require(op in ALU_OPS,
             lambda: f"unknown ALU op {name}={op!r}; supported: {', '.join(ALU_OPS)}")
    if op in BITWISE_OPS:
        if isinstance(operand, AccessPattern):
            tiles = (*tiles, operand)
        floats = [str(t) for t in tiles if t.dtype.is_float]
        _require(not floats,
                 lambda: f"{name}={op} needs integer tiles, got float {', '.join(floats)}")
        _require(not isinstance(operand, float) or operand.is_integer(),
                 lambda: f"{name}={op} needs an integer {operand_name}, got {operand!r}")
