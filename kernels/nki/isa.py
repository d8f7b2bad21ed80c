"""`nki.isa` in the current, destination-passing form: each call records one instruction.

Every function lowers its tile arguments to access patterns, builds the `isa` record of its
opcode and hands it to the trace session with the stream of its engine.  Signatures follow the
public NKI API stubs (aws-neuron-sdk `nki/api/nki/isa/__init__.py`); semantics are the records'
(isa/semantics.py).  What this emulator does not model raises `UnsupportedConstructError` naming
the argument: row/column tiling of the PE array, FP8 double-row mode, indirect DMA, DMA QoS
priority, Vector-engine transposes, scan operand reversal of non-commutative ops, and the
Scalar engine's reduce registers across instructions.
"""

from __future__ import annotations

import enum
from dataclasses import replace
from math import prod
from typing import Any

import numpy as np

from isa.access import AccessPattern
from isa.instructions import (
    Activation,
    AffineSelect,
    AllGather,
    AllReduce,
    BnAggr,
    BnStats,
    DmaCopy,
    Instruction,
    InstructionError,
    Iota,
    MatMul,
    Memset,
    Reciprocal,
    ReduceScatter,
    TensorCopy,
    TensorReduce,
    TensorScalar,
    TensorTensor,
    TensorTensorScan,
    Transpose,
)
from isa.opcodes import OPCODES
from isa.target import Engine, Space
from kernels.nki import context
from kernels.nki.errors import NkiError, NkiValidationError, UnsupportedConstructError
from kernels.nki.ops import OPS, Op, resolve
from kernels.nki.tensor import NkiTensor, merge_axes

__all__ = [
    "NkiValidationError", "activation", "activation_reduce", "affine_select", "all_reduce",
    "bn_aggr", "bn_stats", "dge_mode", "dma_copy", "engine", "get_nc_version", "gpsimd_engine",
    "iota",
    "matmul_perf_mode", "memset", "nc_matmul", "nc_transpose", "nc_version", "oob_mode",
    "reciprocal", "reduce_cmd", "scalar_engine", "tensor_copy", "tensor_engine", "tensor_reduce",
    "tensor_scalar", "tensor_tensor", "tensor_tensor_scan", "unknown_engine", "vector_engine",
]


class engine(enum.Enum):  # noqa: N801 - NKI's name
    """Engines an instruction may be placed on (`engine=`); `unknown` lets the tracer pick."""

    tensor = "tensor"
    vector = "vector"
    scalar = "scalar"
    gpsimd = "gpsimd"
    dma = "dma"
    sync = "sync"
    unknown = "unknown"


tensor_engine = engine.tensor
vector_engine = engine.vector
scalar_engine = engine.scalar
gpsimd_engine = engine.gpsimd
unknown_engine = engine.unknown


class reduce_cmd(enum.Enum):  # noqa: N801
    """Scalar-engine reduce-register commands of `activation`."""

    idle = "idle"
    reset = "reset"
    reduce = "reduce"
    reset_reduce = "reset_reduce"
    load_reduce = "load_reduce"


class dge_mode(enum.Enum):  # noqa: N801
    """DMA descriptor generation; descriptors cost nothing here, so every mode is the same."""

    unknown = "unknown"
    swdge = "swdge"
    hwdge = "hwdge"
    none = "none"


class oob_mode(enum.Enum):  # noqa: N801
    """Out-of-bounds handling of indirect DMA (indirect DMA itself is not supported)."""

    error = "error"
    skip = "skip"


class matmul_perf_mode(enum.Enum):  # noqa: N801
    none = "none"
    double_row = "double_row"  # NeuronCore-v3+ FP8 mode


class nc_version(enum.Enum):  # noqa: N801
    gen2 = 2  # Trn1 / Inf2, the core this emulator models


def get_nc_version() -> nc_version:
    return nc_version.gen2


# ---- helpers ----------------------------------------------------------------------------------
def _tile(value: Any, role: str, where: str) -> NkiTensor:
    if not isinstance(value, NkiTensor):
        raise NkiValidationError(f"{where}: {role} must be a tensor, got {value!r}")
    return value


def _ap(value: Any, role: str, where: str, exact: bool = False) -> AccessPattern:
    tile = _tile(value, role, where)
    # A held value-returning operation is emitted before this instruction is even checked, so
    # that its own errors come first.
    context.session().flush()
    lanes = context.lanes()
    if lanes is not None:  # a legacy mask= narrows every operand to the enabled lanes
        tile = tile.masked(lanes)
    try:
        return tile.lower(context.session().target, exact)
    except NkiError:
        raise
    except ValueError as err:  # an AccessPattern the view cannot express
        raise NkiValidationError(f"{where}: {role}: {err}") from None


def _scalar_or_tile(value: Any, role: str, where: str) -> float | AccessPattern:
    """A compile-time constant, or a per-partition [P, 1] tile."""
    if isinstance(value, NkiTensor):
        return _ap(value, role, where)
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        return float(value)
    raise NkiValidationError(f"{where}: {role} must be a number or a [P, 1] tile, got {value!r}")


def _record(cls: type[Instruction], where: str, **fields: Any) -> Instruction:
    try:
        return cls(**fields)
    except InstructionError as err:
        raise NkiValidationError(f"{where}: {err}") from None


def _requested(requested: Any, where: str) -> Engine | None:
    """The engine an `engine=` argument names (an nisa.engine, an isa Engine or a name);
    None when it leaves the choice to the tracer."""
    if requested is None or requested is engine.unknown or requested == "unknown":
        return None
    value = requested.value if isinstance(requested, (engine, Engine)) else str(requested)
    try:
        return Engine(value)
    except ValueError:
        raise NkiValidationError(f"{where}: unknown engine {requested!r}") from None


def _stream(requested: Any, opcode: str, default: Engine, where: str) -> str:
    """The stream of the engine an instruction runs on: `engine=` or the opcode's default."""
    chosen = _requested(requested, where) or default
    allowed = OPCODES[opcode].engines
    if chosen not in allowed:
        raise NkiValidationError(
            f"{where}: runs on the {' or '.join(map(str, allowed))} engine, not {chosen}")
    return chosen.value


def _emit(instr: Instruction, stream: str, where: str) -> None:
    context.session().emit(instr, stream, where)


def _no(where: str, argument: str, value: Any, default: Any, what: str) -> None:
    """Reject a non-default argument for a feature the emulator does not model."""
    if value != default:
        raise UnsupportedConstructError(f"{where}: {argument}={value!r} ({what})")


def _patterned(value: Any, sizes: tuple[int, ...], role: str, where: str) -> AccessPattern:
    """`value` addressed in the shape of an iota/affine_select pattern: its own free axes when
    they match, else its dense free bytes re-read in the pattern's shape."""
    ap = _ap(value, role, where, exact=True)
    if ap.free_shape == sizes:
        return ap
    dense = merge_axes(ap.axes)
    if len(dense) == 1 and dense[0][0] == 1 and prod(sizes) == ap.free_size:
        strides, step = [], 1
        for size in reversed(sizes):
            strides.append(step)
            step *= size
        return replace(ap, axes=tuple(zip(reversed(strides), sizes)))
    raise NkiValidationError(
        f"{where}: pattern sizes {list(sizes)} do not match the free shape {list(ap.free_shape)} "
        f"of {role} {value.name} (and it is not contiguous)")


def _pattern(pattern: Any, where: str, limit: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(steps, sizes) of an iota/affine_select pattern [[step, num], ...]."""
    try:
        pairs = [(int(step), int(num)) for step, num in pattern]
    except (TypeError, ValueError):
        raise NkiValidationError(f"{where}: pattern {pattern!r} must be [[step, num], ...]") \
            from None
    if not pairs or len(pairs) > limit or any(num < 1 for _, num in pairs):
        raise NkiValidationError(
            f"{where}: pattern {pattern!r} needs 1..{limit} [step, num] pairs with num >= 1")
    return tuple(s for s, _ in pairs), tuple(n for _, n in pairs)


# ---- data movement -----------------------------------------------------------------------------
def dma_copy(dst: Any, src: Any, priority: Any = None, oob_mode: Any = oob_mode.error,
             dge_mode: Any = dge_mode.unknown, engine: Any = engine.unknown,
             name: str | None = None) -> None:
    """dst = src through the next DMA queue, casting when the dtypes differ."""
    where = "nisa.dma_copy"
    _no(where, "priority", priority, None, "DMA QoS priority is NeuronCore-v4 only")
    instr = _record(DmaCopy, where, dst=_ap(dst, "dst", where), src=_ap(src, "src", where))
    _emit(instr, context.session().dma_queue(), where)


def all_reduce(dst: Any, src: Any, ranks: Any, op: str = "add",
               name: str | None = None) -> None:
    """Every rank's dst = the sum (`op`) over `ranks` (global core ids) of their src; HBM
    tensors, issued on the next DMA queue (the ISA's AllReduce collective; not a public NKI
    call: Neuron's collectives live outside NKI kernels)."""
    where = "nisa.all_reduce"
    instr = _record(AllReduce, where, dst=_ap(dst, "dst", where), src=_ap(src, "src", where),
                    ranks=tuple(int(r) for r in ranks), op=op)
    _emit(instr, context.session().dma_queue(), where)


def all_gather(dst: Any, src: Any, ranks: Any, name: str | None = None) -> None:
    """Every rank's dst = the ranks' src blocks concatenated in `ranks` order (the ISA's
    AllGather collective; HBM tensors, issued on the next DMA queue)."""
    where = "nisa.all_gather"
    instr = _record(AllGather, where, dst=_ap(dst, "dst", where), src=_ap(src, "src", where),
                    ranks=tuple(int(r) for r in ranks))
    _emit(instr, context.session().dma_queue(), where)


def reduce_scatter(dst: Any, src: Any, ranks: Any, op: str = "add",
                   name: str | None = None) -> None:
    """Rank i's dst = the sum (`op`) over `ranks` of block i of their src (the ISA's
    ReduceScatter collective; HBM tensors, issued on the next DMA queue)."""
    where = "nisa.reduce_scatter"
    instr = _record(ReduceScatter, where, dst=_ap(dst, "dst", where),
                    src=_ap(src, "src", where), ranks=tuple(int(r) for r in ranks), op=op)
    _emit(instr, context.session().dma_queue(), where)


# ---- Tensor engine -----------------------------------------------------------------------------
def nc_matmul(dst: Any, stationary: Any, moving: Any, is_stationary_onezero: bool = False,
              is_moving_onezero: bool = False, is_transpose: bool = False,
              accumulate: bool | None = None, tile_position: Any = (), tile_size: Any = (),
              perf_mode: Any = matmul_perf_mode.none, name: str | None = None) -> None:
    """dst[M, N] (+)= stationary[K, M].T @ moving[K, N] into PSUM; the first matmul into a
    PSUM region overwrites it, later ones accumulate (see kernels.trace.accumulation)."""
    where = "nisa.nc_matmul"
    _no(where, "tile_position", tuple(tile_position), (), "PE-array tiling is not modelled")
    _no(where, "tile_size", tuple(tile_size), (), "PE-array tiling is not modelled")
    _no(where, "perf_mode", perf_mode, matmul_perf_mode.none, "FP8 double-row is NeuronCore-v3+")
    session = context.session()
    target = session.target
    lhs, rhs = _ap(stationary, "stationary", where), _ap(moving, "moving", where)
    # NKI's own checks first, so the message names the tile-size constant that was exceeded.
    for what, size, limit, constant in (
            ("contraction size K", lhs.partitions, target.matmul_max_k, "nl.tile_size.pmax"),
            ("stationary free size M", lhs.free_size, target.matmul_max_m,
             "nl.tile_size.gemm_stationary_fmax"),
            ("moving free size N", rhs.free_size, target.matmul_max_n,
             "nl.tile_size.gemm_moving_fmax")):
        if size > limit:
            raise NkiValidationError(f"{where}: {what} = {size} exceeds {constant} = {limit}")
    out = _ap(dst, "dst", where)
    if out.space is not Space.PSUM:
        raise NkiValidationError(f"{where}: dst {dst.name} must be a PSUM tile, not {out.space}")
    accumulates = session.matmul_accumulate(out, accumulate, where)
    instr = _record(MatMul, where, dst=out, stationary=lhs, moving=rhs, accumulate=accumulates)
    _emit(instr, "tensor", where)


def matmul_can_add(dst: Any) -> bool:
    """Whether an `nc_matmul` into dst would leave dst + product in it (`psum += ...`)."""
    return context.session().matmul_can_add(_ap(dst, "dst", "nisa.nc_matmul"))


def nc_transpose(dst: Any, data: Any, engine: Any = engine.unknown,
                 name: str | None = None) -> None:
    """dst[F, P] = data[P, F].T on the Tensor engine, into PSUM."""
    where = "nisa.nc_transpose"
    if _requested(engine, where) not in (None, Engine.TENSOR):
        raise UnsupportedConstructError(
            f"{where}: engine={engine} (only the Tensor-engine transpose is modelled)")
    out = _ap(dst, "dst", where)
    if out.space is not Space.PSUM:
        raise UnsupportedConstructError(
            f"{where}: dst {dst.name} is in {out.space}; the Tensor-engine transpose writes PSUM "
            f"(the Vector-engine transpose into SBUF is not modelled)")
    instr = _record(Transpose, where, dst=out, src=_ap(data, "data", where))
    _emit(instr, "tensor", where)


# ---- Vector / Scalar / GpSimd ------------------------------------------------------------------
def activation(dst: Any, op: Any, data: Any, bias: Any = None, scale: Any = 1.0,
               reduce_op: Any = None, reduce_res: Any = None, reduce_cmd: Any = reduce_cmd.idle,
               name: str | None = None) -> None:
    """dst = op(data * scale + bias) on the Scalar engine; with `reduce_res` (and reduce_op
    nl.add), also reduce_res[P, 1] = sum of dst over the free axes.  reduce_cmd idle or
    reset_reduce both mean this instruction's own reduction; commands that carry the reduce
    registers from one instruction to the next are not modelled."""
    where = "nisa.activation"
    func = resolve(op, "activation", where).activation
    if isinstance(bias, NkiTensor):
        bias_ap = _ap(bias, "bias", where)
    elif bias is None or (_scalar_or_tile(bias, "bias", where) == 0.0):
        bias_ap = None  # a zero constant adds nothing
    else:
        raise NkiValidationError(
            f"{where}: bias={bias!r}: NeuronCore-v2 takes the bias as a [P, 1] tile")
    reduce_ap = _reduction(where, reduce_op, reduce_res, reduce_cmd)
    instr = _record(Activation, where, dst=_ap(dst, "dst", where), src=_ap(data, "data", where),
                    func=func, scale=_scalar_or_tile(scale, "scale", where), bias=bias_ap,
                    reduce=reduce_ap)
    _emit(instr, "scalar", where)


def _reduction(where: str, reduce_op: Any, reduce_res: Any, command: Any) -> AccessPattern | None:
    idle = (None, reduce_cmd.idle)
    if reduce_res is None:
        if reduce_op is not None or command not in idle:
            raise UnsupportedConstructError(
                f"{where}: reduce_cmd={command} / reduce_op without reduce_res (the Scalar "
                f"engine's reduce registers are not kept across instructions)")
        return None
    if command not in (*idle, reduce_cmd.reset_reduce):
        raise UnsupportedConstructError(
            f"{where}: reduce_cmd={command} (only one instruction's own reduction, "
            f"reset_reduce, is modelled)")
    op = OPS["add"] if reduce_op is None else resolve(reduce_op, "reduce", where)
    if op.reduce != "add":
        raise NkiValidationError(f"{where}: reduce_op={op!r}; NeuronCore-v2 reduces with nl.add")
    return _ap(reduce_res, "reduce_res", where)


def activation_reduce(dst: Any, op: Any, data: Any, reduce_op: Any, reduce_res: Any,
                      bias: Any = None, scale: Any = 1.0, name: str | None = None) -> None:
    """`activation` with its free-axis reduction into reduce_res (the older spelling)."""
    activation(dst, op, data, bias=bias, scale=scale, reduce_op=reduce_op,
               reduce_res=reduce_res, reduce_cmd=reduce_cmd.reset_reduce)


def tensor_tensor(dst: Any, data1: Any, data2: Any, op: Any, engine: Any = engine.unknown,
                  name: str | None = None) -> None:
    """dst = data1 <op> data2 element-wise (Vector engine; `nl.power` on GpSimd, as NKI)."""
    where = "nisa.tensor_tensor"
    alu_op = resolve(op, "alu", where)
    default = Engine.GPSIMD if alu_op is OPS["power"] else Engine.VECTOR
    instr = _record(TensorTensor, where, dst=_ap(dst, "dst", where),
                    in0=_ap(data1, "data1", where), in1=_ap(data2, "data2", where), op=alu_op.alu)
    _emit(instr, _stream(engine, "tensor_tensor", default, where), where)


def tensor_scalar(dst: Any, data: Any, op0: Any, operand0: Any, reverse0: bool = False,
                  op1: Any = None, operand1: Any = None, reverse1: bool = False,
                  engine: Any = engine.unknown, name: str | None = None) -> None:
    """dst = (data <op0> operand0) <op1> operand1, operands constants or [P, 1] tiles."""
    where = "nisa.tensor_scalar"
    first = resolve(op0, "alu", where).alu
    second = None if op1 is None else resolve(op1, "alu", where).alu
    instr = _record(TensorScalar, where, dst=_ap(dst, "dst", where), src=_ap(data, "data", where),
                    op0=first, operand0=_scalar_or_tile(operand0, "operand0", where),
                    op1=second,
                    operand1=None if operand1 is None else _scalar_or_tile(operand1, "operand1",
                                                                           where),
                    reverse0=bool(reverse0), reverse1=bool(reverse1))
    _emit(instr, _stream(engine, "tensor_scalar", Engine.VECTOR, where), where)


def tensor_copy(dst: Any, src: Any, engine: Any = engine.unknown, name: str | None = None) -> None:
    """dst = src (cast to dst's dtype) on the Vector engine, or `engine=`."""
    where = "nisa.tensor_copy"
    instr = _record(TensorCopy, where, dst=_ap(dst, "dst", where), src=_ap(src, "src", where))
    _emit(instr, _stream(engine, "tensor_copy", Engine.VECTOR, where), where)


def tensor_reduce(dst: Any, op: Any, data: Any, axis: Any, negate: bool = False,
                  keepdims: bool = False, name: str | None = None) -> None:
    """dst = reduce(data, op) over free `axis` (ints counting the partition axis as 0)."""
    where = "nisa.tensor_reduce"
    reducer = resolve(op, "reduce", where)
    if reducer.reduce is None or reducer is OPS["mean"]:
        raise UnsupportedConstructError(f"{where}: op={reducer!r} is not a reduction opcode")
    tile = _tile(data, "data", where)
    axes = normalize_axes(axis, tile.ndim, where)
    src = _ap(tile, "data", where, exact=True)
    if tile.ndim == 1:
        axes = (1,)  # a [P] tile has one free element per partition: axis 1 of its pattern
    instr = _record(TensorReduce, where, dst=_ap(dst, "dst", where), src=src, op=reducer.reduce,
                    axes=axes, negate=bool(negate), keepdims=bool(keepdims))
    _emit(instr, "vector", where)


def normalize_axes(axis: Any, ndim: int, where: str) -> tuple[int, ...]:
    """Free axes (1..ndim-1) from an int or a sequence, negatives counted from the end."""
    items = [axis] if isinstance(axis, (int, np.integer)) else list(axis)
    axes = []
    for item in items:
        value = int(item) + ndim if int(item) < 0 else int(item)
        if value == 0:
            raise UnsupportedConstructError(
                f"{where}: reduction over the partition axis (axis 0); transpose first or use "
                f"nc_matmul with a ones vector")
        if not 0 < value < max(ndim, 2):
            raise NkiValidationError(f"{where}: axis {item} is out of range for {ndim} dims")
        axes.append(value)
    if not axes or len(set(axes)) != len(axes):
        raise NkiValidationError(f"{where}: axis {axis!r} must name distinct free axes")
    return tuple(sorted(axes))


def tensor_tensor_scan(dst: Any, data0: Any, data1: Any, initial: Any, op0: Any, op1: Any,
                       reverse0: bool = False, reverse1: bool = False,
                       name: str | None = None) -> None:
    """Per partition: dst[i] = (data0[i] <op0> dst[i-1]) <op1> data1[i], dst[-1] = initial."""
    where = "nisa.tensor_tensor_scan"
    first, second = resolve(op0, "alu", where), resolve(op1, "alu", where)
    for flag, op, label in ((reverse0, first, "reverse0"), (reverse1, second, "reverse1")):
        if flag and not op.commutative:
            raise UnsupportedConstructError(
                f"{where}: {label}=True with the non-commutative {op!r} (isa scans take their "
                f"operands in one order)")
    instr = _record(TensorTensorScan, where, dst=_ap(dst, "dst", where),
                    in0=_ap(data0, "data0", where), in1=_ap(data1, "data1", where),
                    initial=_scalar_or_tile(initial, "initial", where), op0=first.alu,
                    op1=second.alu)
    _emit(instr, "vector", where)


def memset(dst: Any, value: Any, engine: Any = engine.unknown, name: str | None = None) -> None:
    """dst = value everywhere (Vector engine, or GpSimd)."""
    where = "nisa.memset"
    instr = _record(Memset, where, dst=_ap(dst, "dst", where), value=float(value))
    _emit(instr, _stream(engine, "memset", Engine.VECTOR, where), where)


def iota(dst: Any, pattern: Any, offset: int = 0, channel_multiplier: int = 0,
         name: str | None = None) -> None:
    """dst[p, i...] = offset + channel_multiplier * p + sum(step_j * i_j) on GpSimd."""
    where = "nisa.iota"
    steps, sizes = _pattern(pattern, where, context.session().target.max_free_axes)
    instr = _record(Iota, where, dst=_patterned(dst, sizes, "dst", where), base=int(offset),
                    channel_multiplier=int(channel_multiplier), steps=steps)
    _emit(instr, "gpsimd", where)


def affine_select(dst: Any, pattern: Any, channel_multiplier: int, on_true_tile: Any,
                  on_false_value: float, cmp_op: Op = OPS["equal"], offset: int = 0,
                  name: str | None = None) -> None:
    """dst = on_true_tile where cmp_op(offset + channel_multiplier*p + sum(step*i), 0), else
    on_false_value, on GpSimd."""
    where = "nisa.affine_select"
    compare = resolve(cmp_op, "compare", where).compare
    steps, sizes = _pattern(pattern, where, context.session().target.max_free_axes)
    instr = _record(AffineSelect, where, dst=_patterned(dst, sizes, "dst", where),
                    src=_patterned(on_true_tile, sizes, "on_true_tile", where), cmp=compare,
                    fill=float(on_false_value), base=int(offset),
                    channel_multiplier=int(channel_multiplier), steps=steps)
    _emit(instr, "gpsimd", where)


def bn_stats(dst: Any, data: Any, name: str | None = None) -> None:
    """dst[P, 6] = (count, mean, count*variance) of two halves of each partition's data."""
    where = "nisa.bn_stats"
    instr = _record(BnStats, where, dst=_ap(dst, "dst", where), src=_ap(data, "data", where))
    _emit(instr, "vector", where)


def bn_aggr(dst: Any, data: Any, name: str | None = None) -> None:
    """dst[P, 2] = (mean, variance) aggregated from bn_stats triples."""
    where = "nisa.bn_aggr"
    instr = _record(BnAggr, where, dst=_ap(dst, "dst", where), src=_ap(data, "data", where))
    _emit(instr, "vector", where)


def reciprocal(dst: Any, data: Any, name: str | None = None) -> None:
    """dst = 1 / data on the Vector engine."""
    where = "nisa.reciprocal"
    instr = _record(Reciprocal, where, dst=_ap(dst, "dst", where), src=_ap(data, "data", where))
    _emit(instr, "vector", where)


def __getattr__(name: str) -> Any:
    """nisa functions we do not implement fail with the construct and the kernel's line."""
    if name.startswith("__"):
        raise AttributeError(name)
    raise UnsupportedConstructError(f"nisa.{name} is not supported by the ncemu kernel language")
