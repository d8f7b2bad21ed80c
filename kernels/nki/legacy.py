"""`nki.isa` in the legacy, value-returning form (neuronxcc.nki.isa, Neuron SDK 2.20-2.26): each
call returns a new tile instead of writing a `dst=`.

    import neuronxcc.nki.isa as nisa            # in a kernel file run by `ncemu nki`
    from kernels.nki import legacy as nisa      # the same from Python

Every function builds a deferred result (`kernels.nki.deferred`) whose instructions are those of
the destination-passing function of the same name in `kernels.nki.isa`, so both API generations
share one set of lowerings, checks and costs.  `nc_matmul` and `nc_transpose` return PSUM tiles
(`psum[...] += nisa.nc_matmul(a, b)` accumulates there); the others return SBUF tiles.  A call
that passes `dst=` is the destination-passing form and goes to `kernels.nki.isa` unchanged.
`mask=` (index-vector predicates, see `kernels.nki.index`) enables some lanes of element-wise
instructions; on matmuls, transposes, iota and affine_select it is not supported.  Signatures
follow the legacy API stubs (aws-neuron-sdk `general/nki/api/nki/isa/__init__.py`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from math import prod
from typing import Any

from isa.dtypes import DType
from isa.target import Space
from kernels.nki import context, deferred
from kernels.nki import isa as _isa
from kernels.nki.elementwise import promote
from kernels.nki.errors import NkiValidationError, UnsupportedConstructError, assigned_name
from kernels.nki.index import COMPARISONS, IndexExpr, Predicate, lanes_of
from kernels.nki.isa import (
    dge_mode,
    engine,
    get_nc_version,
    gpsimd_engine,
    nc_version,
    oob_mode,
    reduce_cmd,
    scalar_engine,
    tensor_engine,
    unknown_engine,
    vector_engine,
)
from kernels.nki.ops import OPS, resolve
from kernels.nki.tensor import PSUM, NkiTensor, resolve_dtype

__all__ = [
    "NkiValidationError", "activation", "activation_reduce", "affine_select", "bn_aggr",
    "bn_stats", "dge_mode", "dma_copy", "engine", "get_nc_version", "gpsimd_engine", "iota",
    "memset", "nc_matmul", "nc_transpose", "nc_version", "oob_mode", "reciprocal", "reduce_cmd",
    "scalar_engine", "tensor_copy", "tensor_engine", "tensor_reduce", "tensor_scalar",
    "tensor_tensor", "tensor_tensor_scan", "unknown_engine", "vector_engine",
]

# affine_select's comparison of the affine value with 0, by predicate operator.
_COMPARE_OPS = {"ge": OPS["greater_equal"], "gt": OPS["greater"], "le": OPS["less_equal"],
                "lt": OPS["less"], "eq": OPS["equal"], "ne": OPS["not_equal"]}
assert set(_COMPARE_OPS) == set(COMPARISONS)


def _destination(current: Callable[..., Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A call with `dst=` is the destination-passing form: `current` handles it."""

    def wrap(legacy: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(legacy)
        def call(*args: Any, **kwargs: Any) -> Any:
            if "dst" in kwargs:
                return current(*args, **kwargs)
            return legacy(*args, **kwargs)

        return call

    return wrap


def _tile(value: Any, role: str, where: str) -> NkiTensor:
    if not isinstance(value, NkiTensor):
        raise NkiValidationError(f"{where}: {role} must be a tile, got {value!r}")
    return value


def _dtype(dtype: Any, default: DType) -> DType:
    return default if dtype is None else resolve_dtype(dtype)


def _no_options(where: str, options: dict[str, Any]) -> None:
    if options:
        raise UnsupportedConstructError(
            f"{where}: keyword argument(s) {', '.join(sorted(options))} are not supported")


def _no_mask(where: str, mask: Any) -> None:
    if mask is not None:
        raise UnsupportedConstructError(f"{where}: mask= is not supported on this instruction")


def _result(shape: tuple[int, ...], dt: DType, produce: Callable[[NkiTensor], None],
            where: str, mask: Any = None, buffer: Any = None) -> NkiTensor:
    """A new deferred tile that `produce(dst)` computes (SBUF unless `buffer`)."""
    if buffer is PSUM:
        return deferred.result(shape, dt, lambda dst, _: produce(dst), where, assigned_name(),
                               mask=mask, buffer=PSUM, spaces=frozenset({Space.PSUM}))
    return deferred.result(shape, dt, lambda dst, _: produce(dst), where, assigned_name(),
                           mask=mask)


# ---- data movement -----------------------------------------------------------------------------
def dma_copy(src: Any = None, dst: Any = None, *, mask: Any = None, **options: Any) -> None:
    """dst = src through a DMA queue (legacy argument order: src first; the other options
    are those of `kernels.nki.isa.dma_copy`)."""
    where = "nisa.dma_copy"
    lanes = lanes_of(mask, where)
    if lanes is not None and lanes.empty:
        return
    with context.masked(lanes):
        _isa.dma_copy(dst=_tile(dst, "dst", where), src=_tile(src, "src", where), **options)


# ---- Tensor engine -------------------------------------------------------------------------------
@_destination(_isa.nc_matmul)
def nc_matmul(stationary: Any, moving: Any, *, is_stationary_onezero: bool = False,
              is_moving_onezero: bool = False, is_transpose: bool = False, mask: Any = None,
              **options: Any) -> NkiTensor:
    """stationary[K, M].T @ moving[K, N] as a new PSUM tile [M, N] (fp32)."""
    where = "nisa.nc_matmul"
    _no_options(where, options)
    _no_mask(where, mask)
    return deferred.matmul(_tile(stationary, "stationary", where),
                           _tile(moving, "moving", where), where, assigned_name())


@_destination(_isa.nc_transpose)
def nc_transpose(data: Any, *, mask: Any = None, dtype: Any = None, engine: Any = engine.unknown,
                 **options: Any) -> NkiTensor:
    """data [P, F...] transposed to a new PSUM tile [F, P] on the Tensor engine."""
    where = "nisa.nc_transpose"
    _no_options(where, options)
    _no_mask(where, mask)
    data = _tile(data, "data", where)
    partitions, free = data.shape[0], prod(data.shape[1:])
    flat = data if data.ndim == 2 else data.reshape(partitions, free)
    return _result((free, partitions), _dtype(dtype, data.dt),
                   lambda dst: _isa.nc_transpose(dst=dst, data=flat, engine=engine), where,
                   buffer=PSUM)


# ---- Vector / Scalar / GpSimd --------------------------------------------------------------------
@_destination(_isa.activation)
def activation(op: Any, data: Any, *, bias: Any = None, scale: Any = 1.0, mask: Any = None,
               dtype: Any = None, **options: Any) -> NkiTensor:
    """op(data * scale + bias) on the Scalar engine."""
    where = "nisa.activation"
    _no_options(where, options)
    resolve(op, "activation", where)
    data = _tile(data, "data", where)
    return _result(data.shape, _dtype(dtype, data.dt),
                   lambda dst: _isa.activation(dst=dst, op=op, data=data, bias=bias,
                                               scale=scale), where, mask)


@_destination(_isa.activation_reduce)
def activation_reduce(op: Any, data: Any, *, reduce_op: Any, reduce_res: Any, bias: Any = None,
                      scale: Any = 1.0, mask: Any = None, dtype: Any = None,
                      **options: Any) -> NkiTensor:
    """`activation`, also summing its result over the free axes into reduce_res [P, 1]."""
    where = "nisa.activation_reduce"
    _no_options(where, options)
    resolve(op, "activation", where)
    data = _tile(data, "data", where)
    _tile(reduce_res, "reduce_res", where)
    return _result(data.shape, _dtype(dtype, data.dt),
                   lambda dst: _isa.activation_reduce(dst=dst, op=op, data=data,
                                                      reduce_op=reduce_op, reduce_res=reduce_res,
                                                      bias=bias, scale=scale), where, mask)


@_destination(_isa.tensor_tensor)
def tensor_tensor(data1: Any, data2: Any, op: Any, *, dtype: Any = None, mask: Any = None,
                  engine: Any = engine.unknown, **options: Any) -> NkiTensor:
    """data1 <op> data2 element-wise."""
    where = "nisa.tensor_tensor"
    _no_options(where, options)
    resolve(op, "alu", where)
    data1, data2 = _tile(data1, "data1", where), _tile(data2, "data2", where)
    return _result(data1.shape, _dtype(dtype, promote(data1.dt, data2.dt)),
                   lambda dst: _isa.tensor_tensor(dst=dst, data1=data1, data2=data2, op=op,
                                                  engine=engine), where, mask)


@_destination(_isa.tensor_scalar)
def tensor_scalar(data: Any, op0: Any, operand0: Any, reverse0: bool = False, op1: Any = None,
                  operand1: Any = None, reverse1: bool = False, *, dtype: Any = None,
                  mask: Any = None, engine: Any = engine.unknown, **options: Any) -> NkiTensor:
    """(data <op0> operand0) <op1> operand1, operands numbers or [P, 1] tiles."""
    where = "nisa.tensor_scalar"
    _no_options(where, options)
    resolve(op0, "alu", where)
    data = _tile(data, "data", where)
    return _result(data.shape, _dtype(dtype, data.dt),
                   lambda dst: _isa.tensor_scalar(dst=dst, data=data, op0=op0, operand0=operand0,
                                                  reverse0=reverse0, op1=op1, operand1=operand1,
                                                  reverse1=reverse1, engine=engine), where, mask)


@_destination(_isa.tensor_copy)
def tensor_copy(src: Any, *, mask: Any = None, dtype: Any = None, engine: Any = engine.unknown,
                **options: Any) -> NkiTensor:
    """A copy of src (cast to dtype)."""
    where = "nisa.tensor_copy"
    _no_options(where, options)
    src = _tile(src, "src", where)
    return _result(src.shape, _dtype(dtype, src.dt),
                   lambda dst: _isa.tensor_copy(dst=dst, src=src, engine=engine), where, mask)


@_destination(_isa.tensor_reduce)
def tensor_reduce(op: Any, data: Any, axis: Any, *, mask: Any = None, dtype: Any = None,
                  negate: bool = False, keepdims: bool = False, **options: Any) -> NkiTensor:
    """op-reduction of data over free `axis` on the Vector engine."""
    where = "nisa.tensor_reduce"
    _no_options(where, options)
    resolve(op, "reduce", where)
    data = _tile(data, "data", where)
    axes = _isa.normalize_axes(axis, data.ndim, where)
    shape = [data.shape[0]]
    for index, size in enumerate(data.shape[1:], start=1):
        if index not in axes:
            shape.append(size)
        elif keepdims:
            shape.append(1)
    return _result(tuple(shape), _dtype(dtype, data.dt),
                   lambda dst: _isa.tensor_reduce(dst=dst, op=op, data=data, axis=axes,
                                                  negate=negate, keepdims=keepdims), where, mask)


@_destination(_isa.tensor_tensor_scan)
def tensor_tensor_scan(data0: Any, data1: Any, initial: Any, op0: Any, op1: Any,
                       reverse0: bool = False, reverse1: bool = False, *, dtype: Any = None,
                       mask: Any = None, **options: Any) -> NkiTensor:
    """Per partition: out[i] = (data0[i] <op0> out[i-1]) <op1> data1[i], out[-1] = initial."""
    where = "nisa.tensor_tensor_scan"
    _no_options(where, options)
    data0, data1 = _tile(data0, "data0", where), _tile(data1, "data1", where)
    return _result(data0.shape, _dtype(dtype, promote(data0.dt, data1.dt)),
                   lambda dst: _isa.tensor_tensor_scan(dst=dst, data0=data0, data1=data1,
                                                       initial=initial, op0=op0, op1=op1,
                                                       reverse0=reverse0, reverse1=reverse1),
                   where, mask)


@_destination(_isa.memset)
def memset(shape: Any, value: Any, dtype: Any, *, mask: Any = None,
           engine: Any = engine.unknown, **options: Any) -> NkiTensor:
    """A new tile of `shape` filled with `value`."""
    where = "nisa.memset"
    _no_options(where, options)
    dims = tuple(int(n) for n in shape)
    return _result(dims, resolve_dtype(dtype),
                   lambda dst: _isa.memset(dst=dst, value=value, engine=engine), where, mask)


def _affine(expr: Any, shape: tuple[int, ...], role: str,
            where: str) -> tuple[list[list[int]], int, int]:
    """(pattern, channel_multiplier, offset) of an index-vector expression over a tile's
    index space: its partition coefficient, one [step, size] per free axis, its constant."""
    if not isinstance(expr, IndexExpr):
        raise UnsupportedConstructError(
            f"{where}: {role} {expr!r} (an affine expression of nl.arange index vectors)")
    space = expr.aligned(shape)
    pattern = [[space.coefficient(axis), size] for axis, size in enumerate(shape) if axis > 0]
    return pattern or [[0, 1]], space.coefficient(0), space.const


def iota(expr: Any, dtype: Any, *, mask: Any = None, **options: Any) -> NkiTensor:
    """A new tile holding the values of an index-vector expression (GpSimd)."""
    where = "nisa.iota"
    _no_options(where, options)
    _no_mask(where, mask)
    if not isinstance(expr, IndexExpr):
        raise UnsupportedConstructError(f"{where}: expr {expr!r} (an nl.arange expression)")
    pattern, multiplier, offset = _affine(expr, expr.shape, "expr", where)
    return _result(expr.shape, resolve_dtype(dtype),
                   lambda dst: _isa.iota(dst=dst, pattern=pattern, offset=offset,
                                         channel_multiplier=multiplier), where)


@_destination(_isa.affine_select)
def affine_select(pred: Any, on_true_tile: Any, on_false_value: Any, *, mask: Any = None,
                  dtype: Any = None, **options: Any) -> NkiTensor:
    """on_true_tile where the index-vector predicate holds, else on_false_value (GpSimd)."""
    where = "nisa.affine_select"
    _no_options(where, options)
    _no_mask(where, mask)
    if not isinstance(pred, Predicate):
        raise UnsupportedConstructError(
            f"{where}: pred {pred!r} (a comparison of nl.arange expressions, e.g. i_p >= i_f)")
    tile = _tile(on_true_tile, "on_true_tile", where)
    pattern, multiplier, offset = _affine(pred.expr, tile.shape, "pred", where)
    compare = _COMPARE_OPS[pred.op]
    return _result(tile.shape, _dtype(dtype, tile.dt),
                   lambda dst: _isa.affine_select(dst=dst, pattern=pattern,
                                                  channel_multiplier=multiplier,
                                                  on_true_tile=tile,
                                                  on_false_value=on_false_value,
                                                  cmp_op=compare, offset=offset), where)


@_destination(_isa.bn_stats)
def bn_stats(data: Any, *, mask: Any = None, dtype: Any = None, **options: Any) -> NkiTensor:
    """[P, 6] (count, mean, count*variance) of the two halves of each partition's data."""
    where = "nisa.bn_stats"
    _no_options(where, options)
    data = _tile(data, "data", where)
    return _result((data.shape[0], 6), _dtype(dtype, data.dt),
                   lambda dst: _isa.bn_stats(dst=dst, data=data), where, mask)


@_destination(_isa.bn_aggr)
def bn_aggr(data: Any, *, mask: Any = None, dtype: Any = None, **options: Any) -> NkiTensor:
    """[P, 2] (mean, variance) from bn_stats results."""
    where = "nisa.bn_aggr"
    _no_options(where, options)
    data = _tile(data, "data", where)
    return _result((data.shape[0], 2), _dtype(dtype, data.dt),
                   lambda dst: _isa.bn_aggr(dst=dst, data=data), where, mask)


@_destination(_isa.reciprocal)
def reciprocal(data: Any, *, dtype: Any = None, mask: Any = None, engine: Any = engine.unknown,
               **options: Any) -> NkiTensor:
    """1 / data: on the Vector engine, or the Scalar engine's activation when asked."""
    where = "nisa.reciprocal"
    _no_options(where, options)
    data = _tile(data, "data", where)

    def produce(dst: NkiTensor) -> None:
        if engine is scalar_engine:
            _isa.activation(dst=dst, op=OPS["reciprocal"], data=data)
        else:
            _isa.reciprocal(dst=dst, data=data)

    return _result(data.shape, _dtype(dtype, data.dt), produce, where, mask)


def __getattr__(name: str) -> Any:
    """Legacy nisa functions we do not implement fail with the construct and the kernel's line."""
    if name.startswith("__"):
        raise AttributeError(name)
    raise UnsupportedConstructError(f"nisa.{name} is not supported by the ncemu kernel language")
