"""`nki.language` (imported as `nl`): buffers, dtypes, tensor creation, loops, SPMD ids, tile
limits, operator values and the value-returning element-wise functions and reductions, and the
legacy (neuronxcc.nki) additions: `nl.load`/`nl.store` with `mask=`, index vectors (`nl.arange`,
`nl.mgrid`), `nl.par_dim`, `nl.matmul`, `nl.transpose`, `nl.load_transpose2d`,
`nl.broadcast_to` and `nl.shared_constant`.  Both API generations share this module.

Loops (`affine_range`, `sequential_range`, `static_range`) are Python ranges: tracing unrolls
them, which is what `static_range` means and a legal schedule of the other two (the tracer
orders loop-carried dependencies by address either way).  A name this module does not define
raises `UnsupportedConstructError` naming it, with the kernel's line, instead of AttributeError.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

from isa.dtypes import from_numpy
from isa.instructions import BnStats
from isa.target import INF2, Space
from kernels.nki import context, deferred
from kernels.nki import index as _index
from kernels.nki import isa as _nisa
from kernels.nki.errors import NkiValidationError, UnsupportedConstructError, assigned_name
from kernels.nki.index import lanes_of
from kernels.nki.ops import OPS, Op
from kernels.nki.tensor import (
    HBM,
    PRIVATE_HBM,
    PSUM,
    SBUF,
    SHARED_HBM,
    Bound,
    Buffer,
    DynSlice,
    NkiTensor,
    View,
    resolve_dtype,
)

# ---- buffers ----------------------------------------------------------------------------------
sbuf = SBUF
psum = PSUM
hbm = HBM
shared_hbm = SHARED_HBM
private_hbm = PRIVATE_HBM

# ---- dtypes: numpy types, so they compare equal to `tensor.dtype` and build host arrays ---------
float32 = np.float32
float16 = np.float16
bfloat16 = ml_dtypes.bfloat16
float8_e4m3 = ml_dtypes.float8_e4m3fn  # the isa's fp8_e4m3 storage type
float8_e5m2 = ml_dtypes.float8_e5m2
tfloat32 = "tfloat32"  # no numpy type: fp32 storage, mantissa rounded to 10 bits
int8 = np.int8
int16 = np.int16
int32 = np.int32
uint8 = np.uint8
uint16 = np.uint16
uint32 = np.uint32
bool_ = np.uint8  # NKI stores booleans as bytes
fp32 = float32


class tile_size:  # noqa: N801 - NKI's name
    """Tile limits of the NeuronCore-v2 (INF2 target)."""

    pmax = INF2.partitions
    psum_fmax = INF2.psum_bank_bytes // 4  # fp32 elements in one PSUM bank
    psum_bank_fmax = psum_fmax
    psum_num_banks = INF2.psum_banks
    gemm_stationary_fmax = INF2.matmul_max_m
    gemm_moving_fmax = INF2.matmul_max_n
    bn_stats_fmax = BnStats.fmax
    # Usable SBUF bytes per partition; nothing is reserved in the emulator.
    total_available_sbuf_size = INF2.sbuf_partition_bytes
    sbuf_size_bytes = INF2.partitions * INF2.sbuf_partition_bytes


# ---- tensors ----------------------------------------------------------------------------------
def _buffer(buffer: Any) -> Buffer:
    if buffer is None:
        return SBUF
    if isinstance(buffer, Buffer):
        return buffer
    raise UnsupportedConstructError(f"buffer={buffer!r} (use nl.sbuf, nl.psum or an nl.*hbm)")


class par_dim(int):  # noqa: N801 - NKI's name
    """`nl.par_dim(n)`: marks the partition dimension of an on-chip tensor among block
    dimensions, `nl.ndarray((4, nl.par_dim(128), 512), ...)` (four [128, 512] tiles)."""

    def __repr__(self) -> str:
        return f"nl.par_dim({int(self)})"


def _no_options(where: str, options: dict[str, Any]) -> None:
    """NKI functions take **kwargs for compiler options; any we do not know fails loudly."""
    if options:
        raise UnsupportedConstructError(
            f"{where}: keyword argument(s) {', '.join(sorted(options))} are not supported")


def ndarray(shape: Any, dtype: Any, buffer: Any = None, name: str = "",
            **options: Any) -> NkiTensor:
    """A new tensor: an SBUF/PSUM tile (allocated now, contents undefined) or an HBM tensor."""
    _no_options("nl.ndarray", options)
    dims = tuple(shape) if not isinstance(shape, (int, np.integer)) else (shape,)
    marked = [axis for axis, n in enumerate(dims) if isinstance(n, par_dim)]
    if len(marked) > 1:
        raise NkiValidationError(f"nl.ndarray shape {dims} marks {len(marked)} nl.par_dim axes")
    return context.session().new_tensor(dims, resolve_dtype(dtype), _buffer(buffer),
                                        name or assigned_name(),
                                        partition_axis=marked[0] if marked else 0)


def full(shape: Any, fill_value: float, dtype: Any, buffer: Any = None,
         name: str = "", **options: Any) -> NkiTensor:
    """A new on-chip tile filled with `fill_value` (one memset)."""
    _no_options("nl.full", options)
    tile = ndarray(shape, dtype, buffer, name or assigned_name())
    if not tile.on_chip:
        raise UnsupportedConstructError(
            f"nl.full/zeros/ones into {tile.buffer!r}: fill an SBUF tile and dma_copy it")
    _nisa.memset(dst=tile.partition_major(), value=fill_value)
    return tile


def zeros(shape: Any, dtype: Any, buffer: Any = None, name: str = "", **options: Any) -> NkiTensor:
    return full(shape, 0.0, dtype, buffer, name or assigned_name(), **options)


def ones(shape: Any, dtype: Any, buffer: Any = None, name: str = "", **options: Any) -> NkiTensor:
    return full(shape, 1.0, dtype, buffer, name or assigned_name(), **options)


def ndarray_like(tensor: NkiTensor, dtype: Any = None, buffer: Any = None,
                 name: str = "") -> NkiTensor:
    return ndarray(tensor.shape, tensor.dt if dtype is None else dtype,
                   tensor.buffer if buffer is None else buffer, name or assigned_name())


empty_like = ndarray_like


def zeros_like(tensor: NkiTensor, dtype: Any = None, buffer: Any = None,
               name: str = "") -> NkiTensor:
    return full(tensor.shape, 0.0, tensor.dt if dtype is None else dtype,
                tensor.buffer if buffer is None else buffer, name or assigned_name())


def _tensor(value: Any, role: str, where: str) -> NkiTensor:
    if not isinstance(value, NkiTensor):
        raise NkiValidationError(f"{where}: {role} must be a tensor, got {value!r}")
    return value


def load(src: NkiTensor, dtype: Any = None, *, mask: Any = None, **options: Any) -> NkiTensor:
    """A new SBUF tile holding `src` (one DMA); its first axis becomes the partition axis.
    `mask=` loads only the enabled lanes (the others stay undefined)."""
    where = "nl.load"
    _no_options(where, options)
    src = _tensor(src, "src", where)
    return deferred.result(
        src.shape, src.dt if dtype is None else resolve_dtype(dtype),
        lambda dst, _: _nisa.dma_copy(dst=dst, src=src), where, assigned_name(), mask=mask,
        spaces=frozenset({Space.SBUF}))


def store(dst: NkiTensor, value: NkiTensor, *, mask: Any = None, **options: Any) -> None:
    """dst = value through a DMA queue (a PSUM value is first copied to SBUF, as NKI does);
    `mask=` stores only the enabled lanes."""
    where = "nl.store"
    _no_options(where, options)
    dst, value = _tensor(dst, "dst", where), _tensor(value, "value", where)
    lanes = lanes_of(mask, where)
    if lanes is not None and lanes.empty:
        return
    with context.masked(lanes):
        if value.space is Space.PSUM:
            staged = context.session().new_tensor(value.shape, value.dt, SBUF,
                                                  f"{value.name}_sbuf")
            _nisa.tensor_copy(dst=staged, src=value)
            value = staged
        _nisa.dma_copy(dst=dst, src=value)


def load_transpose2d(src: NkiTensor, *, mask: Any = None, dtype: Any = None,
                     **options: Any) -> NkiTensor:
    """A new SBUF tile holding the 2-D HBM view `src` [K, M] transposed to [M, K], by one DMA
    reading src column by column."""
    where = "nl.load_transpose2d"
    _no_options(where, options)
    src = _tensor(src, "src", where)
    if src.on_chip or src.ndim != 2:
        raise NkiValidationError(
            f"{where}: src must be a 2-D HBM view, got {src.name} {src.shape} in {src.buffer!r}")
    if mask is not None:
        raise UnsupportedConstructError(f"{where}: mask= on a transposing load")
    (row_step, rows), (col_step, cols) = src.view.axes
    transposed = NkiTensor(src.storage, View(src.view.offset, ((col_step, cols),
                                                               (row_step, rows))),
                           src.dt, False,
                           tuple(Bound(b.dim, b.size, b.coefs[::-1], b.const)
                                 for b in src.bounds))
    return load(transposed, dtype)


def matmul(x: NkiTensor, y: NkiTensor, *, transpose_x: bool = False, mask: Any = None,
           **options: Any) -> NkiTensor:
    """x @ y into a new PSUM tile (fp32); `transpose_x=True` takes x already as x.T [K, M],
    otherwise x [M, K] is first transposed through the PE array.  `psum[...] += nl.matmul(...)`
    accumulates in PSUM."""
    where = "nl.matmul"
    _no_options(where, options)
    if mask is not None:
        raise UnsupportedConstructError(f"{where}: mask= on a matmul")
    x, y = _tensor(x, "x", where), _tensor(y, "y", where)
    name = assigned_name()
    stationary = x if transpose_x else transpose(x)
    return deferred.matmul(stationary, y, where, name)


def transpose(x: NkiTensor, *, dtype: Any = None, mask: Any = None,
              **options: Any) -> NkiTensor:
    """x [P, F] transposed to a new SBUF tile [F, P] through the PE array and PSUM."""
    where = "nl.transpose"
    _no_options(where, options)
    if mask is not None:
        raise UnsupportedConstructError(f"{where}: mask= on a transpose")
    x = _tensor(x, "x", where)
    if not x.on_chip or x.ndim != 2:
        raise NkiValidationError(
            f"{where}: x must be a 2-D on-chip tile [P, F], got {x.name} {x.shape}")
    partitions, free = x.shape
    session = context.session()

    def produce(out: NkiTensor, _: str) -> None:
        staged = session.new_tensor((free, partitions), resolve_dtype(np.float32), PSUM,
                                    f"{out.name}_psum")
        _nisa.nc_transpose(dst=staged, data=x)
        _nisa.tensor_copy(dst=out, src=staged)

    dt = x.dt if dtype is None else resolve_dtype(dtype)
    return deferred.result((free, partitions), dt, produce, where, assigned_name())


def broadcast_to(src: NkiTensor, *, shape: Any, **options: Any) -> NkiTensor:
    """`src` broadcast to `shape` (size-1 dimensions repeat; see NkiTensor.broadcast_to)."""
    _no_options("nl.broadcast_to", options)
    return _tensor(src, "src", "nl.broadcast_to").broadcast_to(shape)


def shared_constant(constant: Any, dtype: Any = None, **options: Any) -> NkiTensor:
    """An HBM tensor holding `constant` (an array known when the kernel is traced); it becomes
    an input of the program."""
    _no_options("nl.shared_constant", options)
    values = np.asarray(constant)
    if values.ndim == 0 or values.size == 0:
        raise NkiValidationError(f"nl.shared_constant needs a non-empty array, got {constant!r}")
    dt = resolve_dtype(dtype) if dtype is not None else from_numpy(values.dtype)
    return context.session().constant(values.astype(dt.storage), dt, assigned_name())


def shared_identity_matrix(n: int, dtype: Any = np.uint8, **options: Any) -> NkiTensor:
    """An HBM identity matrix [n, n] (`nl.shared_constant(np.identity(n))`)."""
    return shared_constant(np.identity(int(n)), dtype, **options)


# ---- index vectors (legacy): nl.arange(n)[:, None], nl.mgrid[0:p, 0:f] --------------------------
arange = _index.arange
mgrid = _index.mgrid


def ds(start: int, size: int) -> DynSlice:
    """The slice start:start+size."""
    return DynSlice(start, size)


# ---- loops: tracing unrolls them ---------------------------------------------------------------
def affine_range(start: int, stop: int | None = None, step: int = 1) -> range:
    return range(start, stop, step) if stop is not None else range(start)


def sequential_range(start: int, stop: int | None = None, step: int = 1) -> range:
    return affine_range(start, stop, step)


def static_range(start: int, stop: int | None = None, step: int = 1) -> range:
    return affine_range(start, stop, step)


# ---- SPMD ---------------------------------------------------------------------------------------
def program_id(axis: int = 0) -> int:
    """This program instance's index along `axis` of the launch grid (0 without a grid)."""
    return context.session().spmd_id(int(axis))


def num_programs(axes: int = 0) -> int:
    """The launch grid's size along `axes` (1 without a grid)."""
    return context.session().spmd_size(int(axes))


def program_ndim() -> int:
    return len(context.session().grid)


# ---- operator values (callable: element-wise functions and reductions) ---------------------------
add: Op = OPS["add"]
subtract: Op = OPS["subtract"]
multiply: Op = OPS["multiply"]
divide: Op = OPS["divide"]
maximum: Op = OPS["maximum"]
minimum: Op = OPS["minimum"]
power: Op = OPS["power"]
equal: Op = OPS["equal"]
not_equal: Op = OPS["not_equal"]
greater: Op = OPS["greater"]
greater_equal: Op = OPS["greater_equal"]
less: Op = OPS["less"]
less_equal: Op = OPS["less_equal"]
bitwise_and: Op = OPS["bitwise_and"]
bitwise_or: Op = OPS["bitwise_or"]
bitwise_xor: Op = OPS["bitwise_xor"]
left_shift: Op = OPS["left_shift"]
right_shift: Op = OPS["right_shift"]
bypass: Op = OPS["bypass"]
sum: Op = OPS["sum"]  # noqa: A001 - NKI's name
max: Op = OPS["max"]  # noqa: A001
min: Op = OPS["min"]  # noqa: A001
mean: Op = OPS["mean"]
exp: Op = OPS["exp"]
log: Op = OPS["log"]
tanh: Op = OPS["tanh"]
sigmoid: Op = OPS["sigmoid"]
relu: Op = OPS["relu"]
gelu: Op = OPS["gelu"]
gelu_apprx_tanh: Op = OPS["gelu_apprx_tanh"]
silu: Op = OPS["silu"]
sqrt: Op = OPS["sqrt"]
rsqrt: Op = OPS["rsqrt"]
reciprocal: Op = OPS["reciprocal"]
square: Op = OPS["square"]
abs: Op = OPS["abs"]  # noqa: A001
copy: Op = OPS["copy"]
negative: Op = OPS["negative"]


def __getattr__(name: str) -> Any:
    """Names of NKI we do not implement fail with the construct and the kernel's line."""
    if name.startswith("__"):
        raise AttributeError(name)
    raise UnsupportedConstructError(f"nl.{name} is not supported by the ncemu kernel language")

