"""Tensors of the NKI language: a storage (what `nl.ndarray` owns) seen through a view.

A storage has a name, a buffer (SBUF, PSUM or one of the HBM kinds), a shape, a dtype and, on
chip, a placement (first partition, byte offset in every partition) chosen by the tracer's
allocator.  A view is an affine map from a logical index to an element of the storage: an offset
and one (stride, size) pair per logical dimension, in elements, as NKI's `.ap()` writes it.  On
chip the storage is flattened partition-major (element (p, f) is at p * row + f, `row` being
the elements per partition), so the first pair of an on-chip view is the partition axis and its
stride must be the row length: partitions cannot be strided [A2 2.1].

Indexing (ints, slices with steps, `nl.ds`, `...`) and `.ap(pattern=, offset=)` make new views;
`lower()` turns a view into the `isa.AccessPattern` an instruction carries, checking bounds, the
partition rule and the free-axis limit with the tensor's name in the message.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np

from isa.access import AccessPattern
from isa.dtypes import DType, dtype
from isa.target import Space, Target
from kernels.nki.errors import (
    NkiValidationError,
    TileIndexError,
    UnsupportedConstructError,
)


@dataclass(frozen=True)
class Buffer:
    """Where `nl.ndarray(..., buffer=)` places a tensor: a memory space and, in HBM, a role."""

    name: str
    space: Space

    def __repr__(self) -> str:
        return f"nl.{self.name}"


SBUF = Buffer("sbuf", Space.SBUF)
PSUM = Buffer("psum", Space.PSUM)
HBM = Buffer("hbm", Space.HBM)  # device-memory scratch
SHARED_HBM = Buffer("shared_hbm", Space.HBM)  # kernel outputs shared with the caller
PRIVATE_HBM = Buffer("private_hbm", Space.HBM)  # scratch private to one program instance
BUFFERS = {b.name: b for b in (SBUF, PSUM, HBM, SHARED_HBM, PRIVATE_HBM)}


@dataclass(frozen=True)
class DynSlice:
    """`nl.ds(start, size)`: the slice start:start+size of one dimension."""

    start: int
    size: int

    def __post_init__(self) -> None:
        if int(self.start) < 0 or int(self.size) < 1:
            raise TileIndexError(
                f"nl.ds(start={self.start}, size={self.size}): start must be >= 0 and size >= 1")
        object.__setattr__(self, "start", int(self.start))
        object.__setattr__(self, "size", int(self.size))

    def as_slice(self) -> slice:
        return slice(self.start, self.start + self.size)


# NKI's dtype names beside the isa names; numpy types resolve through their storage.
_NKI_DTYPE_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "tfloat32": "tf32",
                    "float8_e4m3": "fp8_e4m3", "float8_e5m2": "fp8_e5m2"}


def resolve_dtype(value: Any) -> DType:
    """An isa DType from an `nl.*` dtype, a numpy type or dtype, or a name (`"bfloat16"`)."""
    if isinstance(value, str):
        value = _NKI_DTYPE_NAMES.get(value, value)
    try:
        return dtype(value)
    except (TypeError, ValueError) as err:
        raise NkiValidationError(f"unsupported dtype {value!r}: {err}") from None


def public_dtype(dt: DType) -> Any:
    """What `tensor.dtype` shows: the numpy storage dtype (tf32, which has none, as itself)."""
    return dt if dt.mantissa_bits else dt.storage


@dataclass(eq=False)
class Storage:
    """What one `nl.ndarray` owns.  On chip, the tracer fills in the placement."""

    name: str
    buffer: Buffer
    shape: tuple[int, ...]
    dtype: DType
    partition_start: int = 0  # on chip: first partition of the allocation
    byte_offset: int = 0  # on chip: first byte of the allocation in each partition

    @property
    def space(self) -> Space:
        return self.buffer.space

    @property
    def row_bytes(self) -> int:
        """Bytes per partition on chip (per leading-axis row in HBM)."""
        return prod(self.shape[1:]) * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return prod(self.shape) * self.dtype.itemsize


@dataclass(frozen=True)
class View:
    """offset + sum(stride_k * i_k) over the logical index, in elements of the view's dtype."""

    offset: int
    axes: tuple[tuple[int, int], ...]  # (stride, size) per logical dimension

    @staticmethod
    def dense(shape: tuple[int, ...], offset: int = 0) -> View:
        strides, step = [], 1
        for size in reversed(shape):
            strides.append(step)
            step *= size
        return View(offset, tuple(zip(reversed(strides), shape)))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(size for _, size in self.axes)


class NkiTensor:
    """A view of a storage: what kernels index, pass to `nisa.*` and get back from `nl.*`."""

    __slots__ = ("storage", "view", "dt", "is_base", "__weakref__")

    def __init__(self, storage: Storage, view: View, dt: DType, is_base: bool) -> None:
        self.storage = storage
        self.view = view
        self.dt = dt
        self.is_base = is_base

    @classmethod
    def whole(cls, storage: Storage) -> NkiTensor:
        return cls(storage, View.dense(storage.shape), storage.dtype, True)

    # ---- what kernels read ------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return self.view.shape

    @property
    def dtype(self) -> Any:
        return public_dtype(self.dt)

    @property
    def buffer(self) -> Buffer:
        return self.storage.buffer

    @property
    def name(self) -> str:
        return self.storage.name

    @property
    def ndim(self) -> int:
        return len(self.view.axes)

    @property
    def size(self) -> int:
        return prod(self.shape)

    @property
    def space(self) -> Space:
        return self.storage.space

    @property
    def on_chip(self) -> bool:
        return self.storage.space is not Space.HBM

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 0

    def __iter__(self):
        raise UnsupportedConstructError(
            f"iterating over tensor {self.name}; index it with slices or nl.ds instead")

    def __repr__(self) -> str:
        return (f"NkiTensor({self.name}, shape={self.shape}, dtype={self.dt}, "
                f"buffer={self.buffer!r})")

    @property
    def _row(self) -> int:
        """Elements of this view's dtype per partition (on chip) of the storage."""
        row_bytes = self.storage.row_bytes
        if row_bytes % self.dt.itemsize:
            raise NkiValidationError(
                f"tensor {self.name}: {row_bytes} bytes per partition do not hold a whole number "
                f"of {self.dt} elements")
        return row_bytes // self.dt.itemsize

    # ---- views ------------------------------------------------------------------------------
    def __getitem__(self, index: Any) -> NkiTensor:
        items = list(index) if isinstance(index, tuple) else [index]
        if any(item is Ellipsis for item in items):
            at = items.index(Ellipsis)
            if Ellipsis in items[at + 1:]:
                raise TileIndexError(f"tensor {self.name}: more than one ... in an index")
            items[at:at + 1] = [slice(None)] * (self.ndim - len(items) + 1)
        if len(items) > self.ndim:
            raise TileIndexError(
                f"tensor {self.name} of shape {self.shape} indexed with {len(items)} indices")
        items += [slice(None)] * (self.ndim - len(items))
        offset, axes = self.view.offset, []
        for dim, (item, (stride, size)) in enumerate(zip(items, self.view.axes)):
            partition_axis = self.on_chip and dim == 0
            if isinstance(item, DynSlice):
                item = item.as_slice()
            if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
                if partition_axis:
                    raise TileIndexError(
                        f"tensor {self.name}: an integer index on the partition axis would drop "
                        f"it; select partition i with the slice i:i+1")
                if not -size <= int(item) < size:
                    raise TileIndexError(
                        f"tensor {self.name}: index {int(item)} is out of range for dimension "
                        f"{dim} of size {size}")
                offset += (int(item) % size) * stride
            elif isinstance(item, slice):
                start, step, count = _slice(self.name, dim, item, size)
                if partition_axis and step != 1 and count > 1:
                    raise TileIndexError(
                        f"tensor {self.name}: partition axis sliced with step {step}; "
                        f"partitions cannot be strided")
                offset += start * stride
                axes.append((stride * step, count))
            else:
                raise UnsupportedConstructError(
                    f"tensor {self.name}: index {item!r} of type {type(item).__name__} "
                    f"(supported: int, slice, nl.ds, ...; index vectors such as nl.arange "
                    f"belong to the legacy API)")
        return NkiTensor(self.storage, View(offset, tuple(axes)), self.dt, False)

    def ap(self, pattern: Any, offset: int = 0, scalar_offset: Any = None,
           vector_offset: Any = None, indirect_dim: int = 0, dtype: Any = None) -> NkiTensor:
        """A hardware access pattern over this tensor: `[[stride, size], ...]` from `offset`
        elements (the first pair is the partition axis on chip, the row axis in HBM)."""
        if scalar_offset is not None or vector_offset is not None:
            raise UnsupportedConstructError(
                f"tensor {self.name}: .ap() with scalar_offset/vector_offset (indirect access)")
        if not self.is_base:
            raise NkiValidationError(
                f"tensor {self.name}: .ap() on an already indexed tensor; call it on the "
                f"nl.ndarray itself")
        dt = self.dt if dtype is None else resolve_dtype(dtype)
        if dt != self.dt and not self.on_chip:
            raise UnsupportedConstructError(
                f"tensor {self.name}: .ap(dtype={dt}) reinterprets a {self.dt} HBM tensor")
        try:
            axes = tuple((int(stride), int(size)) for stride, size in pattern)
        except (TypeError, ValueError):
            raise NkiValidationError(
                f"tensor {self.name}: .ap() pattern {pattern!r} must be [[stride, size], ...]"
            ) from None
        if not axes or any(size < 1 for _, size in axes):
            raise NkiValidationError(
                f"tensor {self.name}: .ap() pattern {pattern!r} needs sizes >= 1")
        if offset < 0:
            raise TileIndexError(f"tensor {self.name}: .ap() offset {offset} must be >= 0")
        view = NkiTensor(self.storage, View(int(offset), axes), dt, False)
        if self.on_chip and axes[0][1] > 1 and axes[0][0] != view._row:
            raise NkiValidationError(
                f"tensor {self.name}: .ap() partition step {axes[0][0]} must be the "
                f"{view._row} elements of a partition; partitions cannot be strided")
        return view

    def reshape(self, *shape: Any) -> NkiTensor:
        """The same elements under a new shape; the view must be dense (row-major)."""
        new = tuple(int(n) for n in (shape[0] if len(shape) == 1 and not isinstance(
            shape[0], (int, np.integer)) else shape))
        if prod(new) != self.size:
            raise NkiValidationError(
                f"tensor {self.name}: cannot reshape {self.shape} ({self.size} elements) to {new}")
        if self.on_chip:
            if not new or new[0] != self.shape[0]:
                raise NkiValidationError(
                    f"tensor {self.name}: reshape {self.shape} -> {new} changes the partition "
                    f"axis")
            if not _dense(self.view.axes[1:]):
                raise UnsupportedConstructError(
                    f"tensor {self.name}: reshape of a strided view {self.view.axes}")
            free = View.dense(new[1:], 0).axes
            return NkiTensor(self.storage, View(self.view.offset, (self.view.axes[0], *free)),
                             self.dt, False)
        if not _dense(self.view.axes):
            raise UnsupportedConstructError(
                f"tensor {self.name}: reshape of a strided view {self.view.axes}")
        return NkiTensor(self.storage, View.dense(new, self.view.offset), self.dt, self.is_base)

    def same_view(self, other: NkiTensor) -> bool:
        return (self.storage is other.storage and self.view == other.view
                and self.dt == other.dt)

    # ---- lowering ---------------------------------------------------------------------------
    def lower(self, target: Target, exact: bool = False) -> AccessPattern:
        """The isa operand of this view.  Free axes are merged (size-1 axes dropped, contiguous
        ones joined) only when the view has more than the hardware allows, unless `exact`."""
        if self.on_chip:
            return self._lower_on_chip(target, exact)
        return self._lower_hbm(target, exact)

    def _lower_on_chip(self, target: Target, exact: bool) -> AccessPattern:
        row, size = self._row, self.dt.itemsize
        p_stride, partitions = self.view.axes[0]
        first, column = divmod(self.view.offset, row)
        if first + partitions > self.storage.shape[0]:
            raise TileIndexError(
                f"tensor {self.name}: partitions {first}..{first + partitions - 1} exceed its "
                f"{self.storage.shape[0]} partitions")
        free = self.view.axes[1:] or ((1, 1),)
        low, high = _span(column, free)
        if low < 0 or high >= row:
            raise TileIndexError(
                f"tensor {self.name}: elements {low}..{high} of a partition are outside its "
                f"{row} elements")
        free = self._fit(free, target, exact)
        return AccessPattern(self.space, self.dt, self.storage.partition_start + first,
                             partitions, self.storage.byte_offset + column * size, free)

    def _lower_hbm(self, target: Target, exact: bool) -> AccessPattern:
        axes = self.view.axes or ((0, 1),)
        row_stride, rows = axes[0]
        if row_stride < 0 and rows > 1:
            raise UnsupportedConstructError(
                f"tensor {self.name}: a negative step on its first axis (HBM rows)")
        free = self._fit(axes[1:] or ((1, 1),), target, exact)
        low, high = _span(self.view.offset, free)
        high += max(row_stride, 0) * (rows - 1)
        total = prod(self.storage.shape)
        if low < 0 or high >= total:
            raise TileIndexError(
                f"tensor {self.name}: elements {low}..{high} are outside its {total} elements")
        return AccessPattern(Space.HBM, self.dt, 0, rows, self.view.offset * self.dt.itemsize,
                             free, self.name, max(row_stride, 0))

    def _fit(self, free: tuple[tuple[int, int], ...], target: Target,
             exact: bool) -> tuple[tuple[int, int], ...]:
        if len(free) > target.max_free_axes and not exact:
            free = merge_axes(free)
        if len(free) > target.max_free_axes:
            raise NkiValidationError(
                f"tensor {self.name}: view {list(self.view.axes)} needs {len(free)} free axes; "
                f"the hardware access pattern has at most {target.max_free_axes}")
        return free

    # ---- arithmetic: element-wise nl ops on tiles -------------------------------------------
    def _binary(self, name: str, other: Any, reverse: bool = False) -> NkiTensor:
        from kernels.nki import elementwise  # element-wise ops need the tracer session
        return elementwise.binary(name, other, self) if reverse else \
            elementwise.binary(name, self, other)

    def _inplace(self, name: str, other: Any) -> NkiTensor:
        from kernels.nki import elementwise
        elementwise.binary(name, self, other, dst=self)
        return self

    def __add__(self, other: Any) -> NkiTensor:
        return self._binary("add", other)

    def __radd__(self, other: Any) -> NkiTensor:
        return self._binary("add", other, reverse=True)

    def __sub__(self, other: Any) -> NkiTensor:
        return self._binary("subtract", other)

    def __rsub__(self, other: Any) -> NkiTensor:
        return self._binary("subtract", other, reverse=True)

    def __mul__(self, other: Any) -> NkiTensor:
        return self._binary("multiply", other)

    def __rmul__(self, other: Any) -> NkiTensor:
        return self._binary("multiply", other, reverse=True)

    def __truediv__(self, other: Any) -> NkiTensor:
        return self._binary("divide", other)

    def __rtruediv__(self, other: Any) -> NkiTensor:
        return self._binary("divide", other, reverse=True)

    def __pow__(self, other: Any) -> NkiTensor:
        return self._binary("power", other)

    def __neg__(self) -> NkiTensor:
        from kernels.nki.ops import OPS
        return OPS["negative"](self)

    def __iadd__(self, other: Any) -> NkiTensor:
        return self._inplace("add", other)

    def __isub__(self, other: Any) -> NkiTensor:
        return self._inplace("subtract", other)

    def __imul__(self, other: Any) -> NkiTensor:
        return self._inplace("multiply", other)

    def __itruediv__(self, other: Any) -> NkiTensor:
        return self._inplace("divide", other)

    def __setitem__(self, index: Any, value: Any) -> None:
        from kernels.nki import elementwise
        target = self[index]
        if isinstance(value, NkiTensor) and value.same_view(target):
            return  # `t[i] += x` already wrote t[i] in place
        elementwise.assign(target, value)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        """numpy ufuncs on tiles (`np.exp(tile)`, `2.0 * tile` via np.float32) are the nl ops
        of the same name, never a conversion of the tile to an array."""
        from kernels.nki.ops import NUMPY_ALIASES, describe
        if method != "__call__" or kwargs or ufunc not in NUMPY_ALIASES:
            raise UnsupportedConstructError(
                f"numpy {describe(ufunc)}.{method} on tensor {self.name}")
        return NUMPY_ALIASES[ufunc](*inputs)


def _slice(name: str, dim: int, item: slice, size: int) -> tuple[int, int, int]:
    """(start, step, count) of a slice of a dimension; out-of-range bounds raise (no clamp)."""
    for bound in (item.start, item.stop):
        if bound is not None and not -size <= int(bound) <= size:
            raise TileIndexError(
                f"tensor {name}: slice {item.start}:{item.stop} is out of range for dimension "
                f"{dim} of size {size}")
    start, stop, step = slice(*(None if v is None else int(v) for v in
                                (item.start, item.stop, item.step))).indices(size)
    count = len(range(start, stop, step))
    if count < 1:
        raise TileIndexError(
            f"tensor {name}: slice {item.start}:{item.stop}:{item.step} of dimension {dim} "
            f"(size {size}) is empty")
    return start, step, count


def _span(offset: int, axes: tuple[tuple[int, int], ...]) -> tuple[int, int]:
    low = offset + sum(min(0, s * (n - 1)) for s, n in axes)
    high = offset + sum(max(0, s * (n - 1)) for s, n in axes)
    return low, high


def _dense(axes: tuple[tuple[int, int], ...]) -> bool:
    """Row-major contiguous: each stride is the product of the sizes inside it."""
    step = 1
    for stride, size in reversed(axes):
        if size > 1 and stride != step:
            return False
        step *= size
    return True


def merge_axes(axes: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    """The same element order with size-1 axes dropped and nested contiguous axes joined."""
    merged: list[tuple[int, int]] = []
    for stride, size in axes:
        if size == 1:
            continue
        if merged and merged[-1][0] == stride * size:
            merged[-1] = (stride, merged[-1][1] * size)
        else:
            merged.append((stride, size))
    return tuple(merged) or ((1, 1),)
