"""Value-returning `nl.*` operations: each computes a new SBUF tile with one or two instructions.

`nl.add(x, y)` (or `x + y`) is a `tensor_tensor` when both are tiles of one shape and a
`tensor_scalar` when one side is a constant or a per-partition [P, 1] tile; unary functions are
Scalar-engine `activation`s (`nl.copy` a Vector-engine `tensor_copy`); reductions are
`tensor_reduce`s over free axes (`nl.mean` adds a multiply by 1/count).  Results go to a new
SBUF tile named after the variable the kernel assigns it to, computed when first needed
(`kernels.nki.deferred`); operands are checked at once.  `mask=` (legacy) enables only some
lanes.  Numbers combine with numbers in Python, the way NKI folds compile-time constants.
"""

from __future__ import annotations

from math import prod
from typing import Any

import numpy as np

from isa.dtypes import DType, fp32
from isa.semantics import ACTIVATION_FUNCS, ALU
from isa.target import Space
from kernels.nki import context, deferred
from kernels.nki import isa as nisa
from kernels.nki.errors import NkiValidationError, UnsupportedConstructError, assigned_name
from kernels.nki.index import lanes_of
from kernels.nki.ops import OPS, Op
from kernels.nki.tensor import PSUM, SBUF, NkiTensor, View, resolve_dtype

# Type promotion of two operands: floats beat integers, then wider (more precise) beats narrower;
# bf16 with fp16 (neither holds the other) promotes to fp32.
_FLOAT_RANK = {"fp8_e4m3": 0, "fp8_e5m2": 0, "bf16": 1, "fp16": 1, "tf32": 2, "fp32": 3}


def promote(a: DType, b: DType) -> DType:
    if a == b:
        return a
    if a.is_float != b.is_float:
        return a if a.is_float else b
    if a.is_float:
        rank_a, rank_b = _FLOAT_RANK[a.name], _FLOAT_RANK[b.name]
        return fp32 if rank_a == rank_b else (a if rank_a > rank_b else b)
    return a if a.itemsize >= b.itemsize else b


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def _on_chip(tile: NkiTensor, where: str) -> NkiTensor:
    if not tile.on_chip:
        raise NkiValidationError(
            f"{where}: {tile.name} is an HBM tensor; compute on SBUF/PSUM tiles (dma_copy or "
            f"nl.load it first)")
    return tile


def _per_partition(tile: NkiTensor) -> bool:
    return tile.ndim >= 1 and tile.size == tile.shape[0]


def call(op: Op, *args: Any, **kwargs: Any) -> Any:
    """What calling an operator value does (`nl.exp(x)`, `nl.add(x, y)`, `nl.sum(x, axis=1)`)."""
    if op.call == "binary":
        return binary(op.name, *args, **kwargs)
    if op.call == "unary":
        return unary(op, *args, **kwargs)
    if op.call == "reduce":
        return reduce(op, *args, **kwargs)
    raise UnsupportedConstructError(f"{op!r} is an op value only; it cannot be called")


def _emit(produce: deferred.Produce, shape: tuple[int, ...], dt: DType, where: str,
          dst: NkiTensor | None, mask: Any) -> NkiTensor:
    """Into `dst` now, or into a new deferred SBUF tile."""
    if dst is None:
        return deferred.result(shape, dt, produce, where, assigned_name(), mask=mask)
    lanes = lanes_of(mask, where)
    if lanes is None or not lanes.empty:
        with context.masked(lanes):
            produce(dst, "write")
    return dst


def binary(name: str, x: Any, y: Any, dtype: Any = None, dst: NkiTensor | None = None,
           mask: Any = None) -> Any:
    """x <op> y element-wise, broadcasting numbers and [P, 1] tiles along the free axes."""
    op, where = OPS[name], f"nl.{name}"
    if _is_number(x) and _is_number(y):
        return ALU[op.alu](np.asarray(x), np.asarray(y)).item()
    for value in (x, y):
        if not (_is_number(value) or isinstance(value, NkiTensor)):
            raise UnsupportedConstructError(f"{where}: operand {value!r} (tiles and numbers only)")
    tiles = [_on_chip(v, where) for v in (x, y) if isinstance(v, NkiTensor)]
    dt = resolve_dtype(dtype) if dtype is not None else (
        promote(tiles[0].dt, tiles[1].dt) if len(tiles) == 2 else _with_number(tiles[0].dt, x, y))
    if isinstance(x, NkiTensor) and isinstance(y, NkiTensor) and x.shape == y.shape:
        return _emit(lambda out, _: nisa.tensor_tensor(dst=out, data1=x, data2=y, op=op),
                     x.shape, dt, where, dst, mask)
    # One side is a number or a per-partition column: tensor_scalar broadcasts it.
    if isinstance(y, NkiTensor) and (_is_number(x) or (_per_partition(x) and
                                                       not _per_partition(y))):
        data, operand, reverse = y, x, True
    elif _is_number(y) or (isinstance(y, NkiTensor) and _per_partition(y)):
        data, operand, reverse = x, y, False
    else:
        raise UnsupportedConstructError(
            f"{where}: broadcasting shapes {x.shape} and {y.shape} (only equal shapes, numbers "
            f"and [P, 1] columns broadcast)")
    if isinstance(operand, NkiTensor) and operand.shape[0] != data.shape[0]:
        raise NkiValidationError(
            f"{where}: column {operand.name} has {operand.shape[0]} partitions, "
            f"{data.name} has {data.shape[0]}")
    return _emit(lambda out, _: nisa.tensor_scalar(dst=out, data=data, op0=op, operand0=operand,
                                                    reverse0=reverse),
                 data.shape, dt, where, dst, mask)


def _with_number(dt: DType, *values: Any) -> DType:
    """A tile combined with a number keeps its dtype, unless an integer tile meets a fraction."""
    fractional = any(_is_number(v) and not float(v).is_integer() for v in values)
    return fp32 if fractional and not dt.is_float else dt


def unary(op: Op, x: Any, dtype: Any = None, dst: NkiTensor | None = None,
          mask: Any = None) -> Any:
    """op(x) element-wise into a new SBUF tile."""
    where = f"nl.{op.name}"
    if _is_number(x):
        if op.activation is None:
            return -x
        return float(ACTIVATION_FUNCS[op.activation](np.float64(x)))
    if not isinstance(x, NkiTensor):
        raise UnsupportedConstructError(f"{where}: operand {x!r} (tiles and numbers only)")
    _on_chip(x, where)

    def produce(out: NkiTensor, _: str) -> None:
        if op is OPS["negative"]:
            nisa.tensor_scalar(dst=out, data=x, op0=OPS["multiply"], operand0=-1.0)
        elif op is OPS["copy"]:
            nisa.tensor_copy(dst=out, src=x)
        else:
            nisa.activation(dst=out, op=op, data=x)

    return _emit(produce, x.shape, resolve_dtype(dtype) if dtype else x.dt, where, dst, mask)


def reduce(op: Op, x: Any, axis: Any, dtype: Any = None, keepdims: bool = False,
           mask: Any = None) -> NkiTensor:
    """A reduction over free axes into a new SBUF tile (`nl.sum`, `nl.max`, `nl.min`,
    `nl.mean`); the partition axis cannot be reduced this way."""
    where = f"nl.{op.name}"
    if not isinstance(x, NkiTensor):
        raise UnsupportedConstructError(f"{where}: operand {x!r} (tiles only)")
    _on_chip(x, where)
    axes = nisa.normalize_axes(axis, x.ndim, where)
    shape = [x.shape[0]]
    for i, size in enumerate(x.shape[1:], start=1):
        if i not in axes:
            shape.append(size)
        elif keepdims:
            shape.append(1)
    mean = op is OPS["mean"]
    dt = resolve_dtype(dtype) if dtype is not None else (
        fp32 if mean and not x.dt.is_float else x.dt)
    lanes = lanes_of(mask, where)
    if mean and lanes is not None and any(a > 0 for a, _, _ in lanes.ranges):
        raise UnsupportedConstructError(f"{where}: a mask on a free axis of a mean")
    count = prod(x.shape[i] for i in axes) if x.ndim > 1 else 1

    def produce(out: NkiTensor, _: str) -> None:
        nisa.tensor_reduce(dst=out, op=OPS["add"] if mean else op, data=x, axis=axes,
                           keepdims=keepdims)
        if mean:
            nisa.tensor_scalar(dst=out, data=out, op0=OPS["multiply"], operand0=1.0 / count)

    return deferred.result(tuple(shape), dt, produce, where, assigned_name(), mask=mask)


def assign(target: NkiTensor, value: Any) -> None:
    """`tensor[index] = value`: a copy (DMA when HBM is involved) or a fill."""
    if isinstance(value, NkiTensor):
        if target.on_chip and value.on_chip:
            nisa.tensor_copy(dst=target, src=value)
        else:
            nisa.dma_copy(dst=target, src=value)
    elif _is_number(value) and target.on_chip:
        nisa.memset(dst=target, value=value)
    else:
        raise UnsupportedConstructError(
            f"assigning {value!r} to {target.name} (tiles, or numbers into on-chip tiles)")


def broadcast_to(src: NkiTensor, shape: Any) -> NkiTensor:
    """`src.broadcast_to(shape)`: size-1 free dimensions repeat by a zero stride (a view); a
    single partition is copied to every partition through the PE array (ones[1, P].T @ src),
    into a new SBUF tile; an HBM view repeats its rows by a zero row stride."""
    where = "broadcast_to"
    try:
        target = tuple(int(n) for n in shape)
    except TypeError:
        raise NkiValidationError(f"{where}: shape {shape!r} must be a tuple of ints") from None
    if target == src.shape:
        return src
    if len(target) != src.ndim or any(n != m and n != 1 for n, m in zip(src.shape, target)):
        raise NkiValidationError(f"{where}: {src.name} of shape {src.shape} does not broadcast "
                                 f"to {target} (size-1 dimensions broadcast)")
    if src.on_chip and src.shape[0] == 1 and target[0] > 1:
        src = _partition_broadcast(src, target[0], where)
    axes = tuple((0, n) if (size == 1 and n > 1) else (stride, size)
                 for (stride, size), n in zip(src.view.axes, target))
    view = View(src.view.offset, axes, src.view.partition)
    return NkiTensor(src.storage, view, src.dt, False, src.bounds)


def _partition_broadcast(src: NkiTensor, partitions: int, where: str) -> NkiTensor:
    """A new SBUF tile with src's single partition on each of `partitions` partitions."""
    if not src.dt.is_float:
        raise UnsupportedConstructError(
            f"{where}: broadcasting the {src.dt} tile {src.name} across partitions (the PE "
            f"array copies float tiles only)")
    free = prod(src.shape[1:])
    chunk = context.session().target.matmul_max_n
    session = context.session()

    def produce(out: NkiTensor, _: str) -> None:
        ones = session.new_tensor((1, partitions), src.dt, SBUF, f"{out.name}_ones")
        nisa.memset(dst=ones, value=1.0)
        flat_src, flat_out = (src, out) if src.ndim == 2 else (src.reshape(1, free),
                                                               out.reshape(partitions, free))
        for start in range(0, free, chunk):
            width = min(chunk, free - start)
            rows = session.new_tensor((partitions, width), fp32, PSUM, f"{out.name}_rows")
            nisa.nc_matmul(dst=rows, stationary=ones,
                           moving=flat_src[:, start:start + width])
            nisa.tensor_copy(dst=flat_out[:, start:start + width], src=rows)

    shape = (partitions, *src.shape[1:])
    return deferred.result(shape, src.dt, produce, where, assigned_name(),
                           spaces=frozenset({Space.SBUF}))
