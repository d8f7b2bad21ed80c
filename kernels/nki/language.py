"""`nki.language` (imported as `nl`): buffers, dtypes, tensor creation, loops, SPMD ids, tile
limits, operator values and the value-returning element-wise functions and reductions.

Loops (`affine_range`, `sequential_range`, `static_range`) are Python ranges: tracing unrolls
them, which is what `static_range` means and a legal schedule of the other two (the tracer
orders loop-carried dependencies by address either way).  A name this module does not define
raises `UnsupportedConstructError` naming it, with the kernel's line, instead of AttributeError.
"""

from __future__ import annotations

from typing import Any

import ml_dtypes
import numpy as np

from isa.instructions import BnStats
from isa.target import INF2
from kernels.nki import context
from kernels.nki import isa as _nisa
from kernels.nki.elementwise import new_tile as _new_tile
from kernels.nki.errors import UnsupportedConstructError, assigned_name
from kernels.nki.ops import OPS, Op
from kernels.nki.tensor import (
    HBM,
    PRIVATE_HBM,
    PSUM,
    SBUF,
    SHARED_HBM,
    Buffer,
    DynSlice,
    NkiTensor,
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


def ndarray(shape: Any, dtype: Any, buffer: Any = None, name: str = "") -> NkiTensor:
    """A new tensor: an SBUF/PSUM tile (allocated now, contents undefined) or an HBM tensor."""
    return context.session().new_tensor(
        tuple(shape) if not isinstance(shape, int) else (shape,), resolve_dtype(dtype),
        _buffer(buffer), name or assigned_name())


def full(shape: Any, fill_value: float, dtype: Any, buffer: Any = None,
         name: str = "") -> NkiTensor:
    """A new on-chip tile filled with `fill_value` (one memset)."""
    tile = ndarray(shape, dtype, buffer, name or assigned_name())
    if not tile.on_chip:
        raise UnsupportedConstructError(
            f"nl.full/zeros/ones into {tile.buffer!r}: fill an SBUF tile and dma_copy it")
    _nisa.memset(dst=tile, value=fill_value)
    return tile


def zeros(shape: Any, dtype: Any, buffer: Any = None, name: str = "") -> NkiTensor:
    return full(shape, 0.0, dtype, buffer, name or assigned_name())


def ones(shape: Any, dtype: Any, buffer: Any = None, name: str = "") -> NkiTensor:
    return full(shape, 1.0, dtype, buffer, name or assigned_name())


def ndarray_like(tensor: NkiTensor, dtype: Any = None, buffer: Any = None,
                 name: str = "") -> NkiTensor:
    return ndarray(tensor.shape, tensor.dt if dtype is None else dtype,
                   tensor.buffer if buffer is None else buffer, name or assigned_name())


empty_like = ndarray_like


def zeros_like(tensor: NkiTensor, dtype: Any = None, buffer: Any = None,
               name: str = "") -> NkiTensor:
    return full(tensor.shape, 0.0, tensor.dt if dtype is None else dtype,
                tensor.buffer if buffer is None else buffer, name or assigned_name())


def load(src: NkiTensor, dtype: Any = None) -> NkiTensor:
    """A new SBUF tile holding `src` (one DMA); its first axis becomes the partition axis."""
    tile = _new_tile(src.shape, src.dt if dtype is None else resolve_dtype(dtype))
    _nisa.dma_copy(dst=tile, src=src)
    return tile


def store(dst: NkiTensor, value: NkiTensor) -> None:
    """dst = value through a DMA queue."""
    _nisa.dma_copy(dst=dst, src=value)


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

