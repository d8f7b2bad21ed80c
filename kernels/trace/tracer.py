"""The tracer: runs an NKI-style kernel in Python and records it as an `isa.Program`.

Tracing executes the kernel once per SPMD program id with `NkiTensor` arguments in place of
arrays; every `nisa.*` / `nl.*` call appends an instruction to the stream of its engine
(`tensor`, `vector`, `scalar`, `gpsimd`, DMA queues `dma0..dma15` round robin).  Loops are
plain Python loops, so tracing unrolls them.  Before an instruction is appended, the tracer
looks up the earlier accesses it conflicts with (`hazards`) and makes its stream wait for them
(`sync`); on-chip tensors are placed by the `allocator`, PSUM matmul accumulation follows
`accumulation`.  The result is race-free by construction.

Value-returning operations (`nl.load`, `nl.exp(x)`, the legacy `nisa.*`) are deferred: the
tracer holds at most one and emits it before the next instruction; a statement that writes its
result somewhere at once (`t[i] = nl.load(...)`, `psum[...] += nisa.nc_matmul(...)`) claims it
and emits it into that target instead, as the NKI compiler does, without a temporary tile and a
copy (see `kernels.nki.deferred`).

HBM tensors: array parameters become input tensors named after the parameters; parameters the
kernel writes (and never reads first) become outputs; `nl.ndarray(..., buffer=nl.shared_hbm)`
tensors the kernel returns become outputs, in return order; other HBM tensors are scratch.
"""

from __future__ import annotations

import inspect
import itertools
import re
import weakref
from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np

from isa.access import AccessPattern
from isa.dtypes import DType, from_numpy
from isa.instructions import Instruction, InstructionError, MatMul, Memset, Transpose
from isa.program import Program, ProgramBuilder
from isa.target import INF2, Space, Target, stream_engine
from kernels.nki import context
from kernels.nki.errors import (
    NkiValidationError,
    TracingError,
    UnsupportedConstructError,
)
from kernels.nki.kernel import unwrap
from kernels.nki.tensor import HBM, Buffer, NkiTensor, Storage, resolve_dtype
from kernels.trace.accumulation import AccumulationGroups
from kernels.trace.allocator import Allocator, Block
from kernels.trace.hazards import AccessLog, Region
from kernels.trace.sync import Synchroniser


@dataclass(frozen=True)
class TensorSpec:
    """A tensor argument known by shape and dtype only (for tracing without data)."""

    shape: tuple[int, ...]
    dtype: Any = np.float32

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))


@dataclass
class HbmTensor:
    """A device-memory tensor of the traced program and how the kernel used it."""

    name: str
    shape: tuple[int, ...]
    dtype: DType
    role: str  # "parameter", "constant" (nl.shared_constant), "shared" or "scratch"
    first_access: str | None = None  # "read" or "write", parameters only


@dataclass(frozen=True)
class TracedKernel:
    """A kernel traced for one launch: one Program per SPMD program id, and its interface."""

    name: str
    grid: tuple[int, ...]
    programs: tuple[Program, ...]
    arguments: tuple[tuple[str, Any], ...]  # (input tensor name, the argument it came from)
    outputs: tuple[str, ...]  # returned tensors, in return order
    written_parameters: tuple[str, ...]  # parameters the kernel writes (outputs in place)
    returns: str  # "none", "single" or "tuple"
    sbuf_peak_bytes: int = 0  # highest SBUF byte used per partition, over all instances
    psum_peak_bytes: int = 0

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.arguments if name not in self.written_parameters)


class Tracer:
    """The trace session of one program instance: allocation, hazards, semaphores, streams."""

    def __init__(self, name: str, target: Target = INF2, program_id: tuple[int, ...] = (),
                 grid: tuple[int, ...] = ()) -> None:
        self.target = target
        self.program_id = program_id
        self.grid = grid
        self.builder = ProgramBuilder(name)
        self.allocators = {space: Allocator(space, target) for space in (Space.SBUF, Space.PSUM)}
        self.log = AccessLog()
        self.sync = Synchroniser(self.builder, target)
        self.groups = AccumulationGroups()
        self.hbm: dict[str, HbmTensor] = {}
        self.closed = False
        self.constants: list[tuple[str, np.ndarray]] = []  # nl.shared_constant data, by name
        self._pending: Any = None  # the deferred operation (see kernels.nki.deferred)
        self._dma_turn = 0
        self._unnamed = itertools.count()
        self._sequence = itertools.count()

    # ---- SPMD -------------------------------------------------------------------------------
    def spmd_id(self, axis: int) -> int:
        if not self.grid:
            return 0  # a plain call is the single program of a 1-point grid
        self._check_axis(axis)
        return self.program_id[axis]

    def spmd_size(self, axis: int) -> int:
        if not self.grid:
            return 1
        self._check_axis(axis)
        return self.grid[axis]

    def _check_axis(self, axis: int) -> None:
        if not 0 <= axis < len(self.grid):
            raise NkiValidationError(
                f"program axis {axis} does not exist in the launch grid {list(self.grid)}")

    # ---- tensors ----------------------------------------------------------------------------
    def parameter(self, name: str, shape: tuple[int, ...], dt: DType) -> NkiTensor:
        """An HBM input tensor for a kernel argument."""
        if name in self.hbm:
            raise TracingError(f"two kernel parameters are both named {name}")
        self.hbm[name] = HbmTensor(name, shape, dt, "parameter")
        return NkiTensor.whole(Storage(name, HBM, shape, dt))

    def new_tensor(self, shape: tuple[int, ...], dt: DType, buffer: Buffer, name: str | None,
                   partition_axis: int = 0, place: bool = True) -> NkiTensor:
        """Allocate an on-chip tile (`place=False`: later, see `place`) or declare an HBM
        tensor (`nl.ndarray`); `partition_axis` is the dimension `nl.par_dim` marks."""
        shape = _shape(shape, name)
        if buffer.space is Space.HBM:
            unique = self._hbm_name(name)
            role = "shared" if buffer.name == "shared_hbm" else "scratch"
            self.hbm[unique] = HbmTensor(unique, shape, dt, role)
            return NkiTensor.whole(Storage(unique, buffer, shape, dt))
        if not 0 <= partition_axis < len(shape):
            raise NkiValidationError(f"tensor {name or ''} shape {shape}: no dimension "
                                     f"{partition_axis} to place on partitions")
        if shape[partition_axis] > self.target.partitions:
            raise NkiValidationError(
                f"{buffer.space} tensor {name or 'tile'} {shape} {dt}: partition dimension "
                f"{shape[partition_axis]} must be 1..{self.target.partitions} "
                f"(nl.tile_size.pmax)")
        storage = Storage(name or f"{buffer.name}{next(self._unnamed)}", buffer, shape, dt,
                          partition_axis=partition_axis, placed=False)
        if place:
            self.place(storage)
        return NkiTensor.whole(storage)

    def place(self, storage: Storage) -> None:
        """Allocate an on-chip storage created with `place=False`."""
        if storage.placed:
            raise TracingError(f"tensor {storage.name} is already allocated")
        allocator = self.allocators[storage.space]
        label = f"{storage.name} {storage.shape} {storage.dtype}"
        block = allocator.allocate(storage.partitions, storage.row_bytes, label)
        storage.partition_start, storage.byte_offset = block.partition_start, block.offset
        storage.placed = True
        if storage.space is Space.PSUM:
            self.groups.allocated(_block_region(block))
        weakref.finalize(storage, allocator.release, block)

    def constant(self, values: np.ndarray, dt: DType, name: str | None) -> NkiTensor:
        """An HBM tensor holding `values` (`nl.shared_constant`): an input of the program."""
        unique = self._hbm_name(name or "constant")
        self.hbm[unique] = HbmTensor(unique, tuple(values.shape), dt, "constant")
        self.constants.append((unique, values))
        return NkiTensor.whole(Storage(unique, HBM, tuple(values.shape), dt))

    # ---- deferred value-returning operations ------------------------------------------------
    def defer(self, operation: Any) -> None:
        """Hold `operation` (with `.storage` and `.materialize()`) until it is needed; the one
        held before is emitted first."""
        self.flush()
        self._pending = operation

    def pending(self, storage: Storage) -> Any:
        """The held operation computing `storage`, or None."""
        held = self._pending
        return held if held is not None and held.storage is storage else None

    def claim(self, storage: Storage) -> Any:
        """Take the held operation computing `storage` without emitting it (its caller emits it
        into another target); None if it is not the one held."""
        held = self.pending(storage)
        if held is not None:
            self._pending = None
        return held

    def flush(self) -> None:
        """Emit the held operation, if any, into its own newly allocated result."""
        held, self._pending = self._pending, None
        if held is not None:
            held.materialize()

    def _hbm_name(self, name: str | None) -> str:
        base = re.sub(r"\W", "_", name or "hbm_tensor")
        base = base if base.isidentifier() else f"t_{base}"
        unique, n = base, 1
        while unique in self.hbm:
            unique, n = f"{base}_{n}", n + 1
        return unique

    # ---- instructions -----------------------------------------------------------------------
    def dma_queue(self) -> str:
        """The next DMA queue, round robin: deterministic, and spreads transfers."""
        queue = f"dma{self._dma_turn % self.target.dma_queues}"
        self._dma_turn += 1
        return queue

    def matmul_accumulate(self, dst: AccessPattern, explicit: bool | None, where: str) -> bool:
        return self.groups.matmul(dst, explicit, where)

    def matmul_can_add(self, dst: AccessPattern) -> bool:
        """Whether a matmul into `dst` leaves dst + product there (see accumulation)."""
        return self.groups.can_add(dst)

    def emit(self, instr: Instruction, stream: str, where: str) -> int:
        """Append `instr` to `stream` after waits for every conflicting earlier access."""
        if self.closed:
            raise TracingError(f"{where}: the trace of {self.builder.name} has finished")
        self.flush()  # a held result is computed before anything that follows it
        try:
            instr.validate(self.target, stream_engine(stream))
        except InstructionError as err:
            raise NkiValidationError(f"{where}: {err}") from None
        reads, writes = instr.reads(), instr.writes()
        self._note_parameters(reads, writes, where)
        read_regions = [Region.of(ap) for ap in reads.values()]
        write_regions = [Region.of(ap) for ap in writes.values()]
        if not isinstance(instr, MatMul):
            self._psum_accesses(instr, read_regions, write_regions, where)
        for producer, index in self.log.conflicts(stream, read_regions, write_regions):
            self.sync.order(producer, index, stream)
        index = self.builder.emit(stream, instr)
        self.log.record(stream, index, next(self._sequence), read_regions, write_regions)
        return index

    def _psum_accesses(self, instr: Instruction, reads: list[Region], writes: list[Region],
                       where: str) -> None:
        zero_fill = isinstance(instr, Memset) and instr.value == 0.0
        writer = None if zero_fill else where
        if isinstance(instr, Transpose):
            writer = f"{where} (a transpose)"
        for region in reads:
            if region.memory[0] == Space.PSUM.value:
                self.groups.other_access(region, False, None)
        for region in writes:
            if region.memory[0] == Space.PSUM.value:
                self.groups.other_access(region, True, writer)

    def _note_parameters(self, reads: dict[str, AccessPattern], writes: dict[str, AccessPattern],
                         where: str) -> None:
        """A parameter read first is an input; one written first is an output (in place)."""
        for kind, operands in (("read", reads), ("write", writes)):
            for ap in operands.values():
                tensor = self.hbm.get(ap.tensor) if ap.space is Space.HBM else None
                if tensor is not None and tensor.role == "constant" and kind == "write":
                    raise UnsupportedConstructError(
                        f"{where}: writes {tensor.name}, an nl.shared_constant")
                if tensor is None or tensor.role != "parameter":
                    continue
                if tensor.first_access is None:
                    tensor.first_access = kind
                elif kind == "write" and tensor.first_access == "read":
                    raise UnsupportedConstructError(
                        f"{where}: writes kernel parameter {tensor.name} after reading it; an "
                        f"HBM tensor is either an input or an output here (return a new "
                        f"nl.shared_hbm tensor instead)")

    # ---- the end ----------------------------------------------------------------------------
    def finish(self, returned: Any) -> tuple[Program, tuple[str, ...], str]:
        """Declare HBM tensors by their use and build the program; the session closes."""
        if returned is None:
            results, returns = [], "none"
        elif isinstance(returned, NkiTensor):
            results, returns = [returned], "single"
        elif isinstance(returned, (tuple, list)):
            results, returns = list(returned), "tuple"
        else:
            raise TracingError(f"kernel returned {returned!r}; return HBM tensors (or nothing)")
        names = []
        for value in results:
            if not isinstance(value, NkiTensor) or value.on_chip or not value.is_base:
                raise TracingError(
                    f"kernel returned {value!r}; a kernel returns whole HBM tensors "
                    f"(nl.ndarray(..., buffer=nl.shared_hbm))")
            names.append(value.name)
        for tensor in self.hbm.values():
            if tensor.role == "parameter":
                kind = "output" if tensor.first_access == "write" else "input"
            elif tensor.role == "constant":
                kind = "input"
            else:
                kind = "output" if tensor.name in names else "scratch"
            self.builder.tensor(tensor.name, tensor.shape, tensor.dtype, kind)
        self.closed = True
        # Every instruction was validated when it was emitted, and every wait follows its
        # signal by construction, so the program is not validated again here.
        return self.builder.build(), tuple(names), returns

    @property
    def written_parameters(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.hbm.values()
                     if t.role == "parameter" and t.first_access == "write")


def _shape(shape: Any, name: str | None) -> tuple[int, ...]:
    try:
        dims = tuple(int(n) for n in shape)
    except TypeError:
        dims = (int(shape),)
    if any(n < 1 for n in dims):
        raise NkiValidationError(f"tensor {name or ''} shape {tuple(shape)} needs sizes >= 1")
    return dims


def _block_region(block: Block) -> Region:
    return Region((block.space.value, ""), block.partition_start,
                  block.partition_start + block.partitions, block.offset, block.end)


def _is_tensor_argument(value: Any) -> bool:
    if isinstance(value, (np.generic, NkiTensor)):
        return False  # numpy scalars are constants of the kernel, like Python numbers
    return isinstance(value, (np.ndarray, TensorSpec)) or (
        hasattr(value, "shape") and hasattr(value, "dtype"))


def _argument_dtype(value: Any) -> DType:
    if isinstance(value.dtype, DType):
        return value.dtype
    try:
        return from_numpy(np.dtype(value.dtype))
    except TypeError:
        return resolve_dtype(value.dtype)


def trace_kernel(kernel: Any, args: tuple = (), kwargs: dict | None = None,
                 target: Target = INF2) -> TracedKernel:
    """Trace `kernel` (a `@jit` kernel, a `kernel[grid]` launch or a function) for these
    arguments: arrays (or `TensorSpec`s) become HBM tensors, other values pass through."""
    function, grid = unwrap(kernel)
    signature = inspect.signature(function)
    try:
        bound = signature.bind(*args, **(kwargs or {}))
    except TypeError as err:
        raise TracingError(f"kernel {function.__name__}: {err}") from None
    points = list(itertools.product(*(range(n) for n in grid))) if grid else [()]
    programs, interfaces, peaks = [], set(), [0, 0]
    arguments: list[tuple[str, Any]] = []
    outputs: tuple[str, ...] = ()
    returns = "none"
    written: tuple[str, ...] = ()
    for point in points:
        label = function.__name__ + (f"[{','.join(map(str, point))}]" if grid else "")
        tracer = Tracer(label, target, point, grid)
        arguments = []
        call = _tensor_arguments(tracer, signature, bound, arguments)
        try:
            with context.install(tracer):
                returned = function(*call.args, **call.kwargs)
                tracer.flush()
            program, outputs, returns = tracer.finish(returned)
        finally:
            tracer.closed = True
        arguments += tracer.constants
        written = tracer.written_parameters
        peaks = [max(peaks[0], tracer.allocators[Space.SBUF].peak),
                 max(peaks[1], tracer.allocators[Space.PSUM].peak)]
        programs.append(program)
        interfaces.add((outputs, written, returns))
    if len(interfaces) > 1:
        raise TracingError(
            f"kernel {function.__name__}: program instances of the grid {list(grid)} differ in "
            f"what they return or which parameters they write: {sorted(interfaces)}")
    return TracedKernel(function.__name__, grid, tuple(programs), tuple(arguments), outputs,
                        written, returns, *peaks)


def _tensor_arguments(tracer: Tracer, signature: inspect.Signature,
                      bound: inspect.BoundArguments,
                      arguments: list[tuple[str, Any]]) -> inspect.BoundArguments:
    """A copy of `bound` with array arguments replaced by HBM tensors (recorded in
    `arguments`); *args elements are named `name_0`, `name_1`, ..."""

    def tensor(name: str, value: Any) -> Any:
        if not _is_tensor_argument(value):
            return value
        shape = tuple(int(n) for n in value.shape)
        if not shape or prod(shape) == 0:
            raise TracingError(f"kernel argument {name} has shape {shape}; tensors need sizes "
                               f">= 1 (pass scalars as Python numbers)")
        arguments.append((name, value))
        return tracer.parameter(name, shape, _argument_dtype(value))

    call = inspect.BoundArguments(signature, bound.arguments.copy())
    for name, value in bound.arguments.items():
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            call.arguments[name] = tuple(tensor(f"{name}_{i}", v) for i, v in enumerate(value))
        elif kind is inspect.Parameter.VAR_KEYWORD:
            call.arguments[name] = {k: tensor(k, v) for k, v in value.items()}
        else:
            call.arguments[name] = tensor(name, value)
    return call

