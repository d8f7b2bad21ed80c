"""Tensors of the NKI language: a storage (what `nl.ndarray` owns) seen through a view.

A storage has a name, a buffer (SBUF, PSUM or one of the HBM kinds), a shape, a dtype and, on
chip, a placement (first partition, byte offset in every partition) chosen by the tracer's
allocator.  A view is an affine map from a logical index to an element of the storage: an offset
and one (stride, size) pair per logical dimension, in elements, as NKI's `.ap()` writes it.  On
chip the storage is flattened partition-major (element (p, f) is at p * row + f, `row` being
the elements per partition), so the first pair of an on-chip view is the partition axis and its
stride must be the row length: partitions cannot be strided [A2 2.1].

Indexing (ints, slices with steps, `nl.ds`, `...`) and `.ap(pattern=, offset=)` make new views;
so do the legacy index vectors (`a[i_p + 128 * m, i_f]`, see `kernels.nki.index`), whose bounds
are checked when the view is lowered, after a `mask=` may have narrowed it.  `lower()` turns a
view into the `isa.AccessPattern` an instruction carries, checking bounds, the partition rule
and the free-axis limit with the tensor's name in the message.

`nl.par_dim` places the partition axis after block dimensions (`nl.ndarray((4, nl.par_dim(128),
512))`: four [128, 512] tiles side by side in each partition); such a tensor is a tile once its
block dimensions are indexed away (`buf[i]`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from math import prod
from typing import Any

import numpy as np

from isa.access import AccessPattern
from isa.dtypes import DType, dtype
from isa.target import Space, Target
from kernels.nki import context
from kernels.nki.errors import (
    NkiValidationError,
    TileIndexError,
    TracingError,
    UnsupportedConstructError,
)
from kernels.nki.index import IndexExpr, Lanes, broadcast_shapes


class _RefcountProbe:
    """Measures what `sys.getrefcount` reports inside `__setitem__` / `__iadd__` for a value
    only the calling statement refers to (`t[i] = f()`), and for one also held by a name."""

    def __setitem__(self, key: Any, value: Any) -> None:
        self.seen = sys.getrefcount(value)

    def __iadd__(self, other: Any) -> _RefcountProbe:
        self.seen = sys.getrefcount(other)
        return self


def _temporary_refs() -> int:
    """The reference count that marks a temporary in NkiTensor.__setitem__ / __iadd__; -1 when
    this interpreter does not tell temporaries from named values (nothing is then moved)."""
    probe, named = _RefcountProbe(), object()
    probe[0] = object()
    set_temporary = probe.seen
    probe[0] = named
    set_named = probe.seen
    probe += object()
    add_temporary = probe.seen
    probe += named
    add_named = probe.seen
    if set_temporary == add_temporary and set_temporary < min(set_named, add_named):
        return set_temporary
    return -1


# A result only the statement computing it refers to (`t[i] = nl.load(...)`) may be written
# straight into its target; one also held by a name must keep its own copy.
_TEMPORARY_REFS = _temporary_refs()


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
    partition_axis: int = 0  # on chip: the dimension on partitions (nl.par_dim)
    placed: bool = True  # on chip: False until the tracer allocates a deferred result

    @property
    def space(self) -> Space:
        return self.buffer.space

    @property
    def partitions(self) -> int:
        return self.shape[self.partition_axis]

    @property
    def row_bytes(self) -> int:
        """Bytes per partition on chip (per leading-axis row in HBM)."""
        free = [n for axis, n in enumerate(self.shape) if axis != self.partition_axis]
        return prod(free) * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return prod(self.shape) * self.dtype.itemsize


@dataclass(frozen=True)
class View:
    """offset + sum(stride_k * i_k) over the logical index, in elements of the view's dtype."""

    offset: int
    axes: tuple[tuple[int, int], ...]  # (stride, size) per logical dimension
    partition: int = 0  # on chip: the logical dimension on partitions

    @staticmethod
    def dense(shape: tuple[int, ...], offset: int = 0) -> View:
        strides, step = [], 1
        for size in reversed(shape):
            strides.append(step)
            step *= size
        return View(offset, tuple(zip(reversed(strides), shape)))

    @staticmethod
    def of_storage(storage: Storage) -> View:
        """The whole storage: free dimensions row-major inside a partition, the partition
        dimension stepping one partition (a row of `row_bytes`)."""
        axis = storage.partition_axis
        free = View.dense(tuple(n for k, n in enumerate(storage.shape) if k != axis)).axes
        row = prod(n for k, n in enumerate(storage.shape) if k != axis)
        axes = (*free[:axis], (row, storage.shape[axis]), *free[axis:])
        return View(0, axes, axis)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(size for _, size in self.axes)


class NkiTensor:
    """A view of a storage: what kernels index, pass to `nisa.*` and get back from `nl.*`."""

    __slots__ = ("storage", "view", "dt", "is_base", "bounds", "__weakref__")

    def __init__(self, storage: Storage, view: View, dt: DType, is_base: bool,
                 bounds: tuple[Bound, ...] = ()) -> None:
        self.storage = storage
        self.view = view
        self.dt = dt
        self.is_base = is_base
        self.bounds = bounds  # index-vector ranges still to check when lowered

    @classmethod
    def whole(cls, storage: Storage) -> NkiTensor:
        return cls(storage, View.of_storage(storage), storage.dtype, True)

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
            at = next(k for k, item in enumerate(items) if item is Ellipsis)
            if any(item is Ellipsis for item in items[at + 1:]):
                raise TileIndexError(f"tensor {self.name}: more than one ... in an index")
            items[at:at + 1] = [slice(None)] * (self.ndim - len(items) + 1)
        if len(items) > self.ndim:
            raise TileIndexError(
                f"tensor {self.name} of shape {self.shape} indexed with {len(items)} indices")
        for item in items:
            if isinstance(item, NkiTensor):
                raise UnsupportedConstructError(
                    f"tensor {self.name} indexed by tensor {item.name}: indirect (dynamic) "
                    f"indexing, an indirect DMA, is not supported")
        if any(isinstance(item, IndexExpr) for item in items):
            return self._index_vectors(items)
        items += [slice(None)] * (self.ndim - len(items))
        offset, axes, partition = self.view.offset, [], 0
        moves: list[tuple[int, int]] = []  # per dimension: (start, step); step 0 drops it
        for dim, (item, (stride, size)) in enumerate(zip(items, self.view.axes)):
            partition_axis = self.on_chip and dim == self.view.partition
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
                moves.append((int(item) % size, 0))
            elif isinstance(item, slice):
                start, step, count = _slice(self.name, dim, item, size)
                if partition_axis and step != 1 and count > 1:
                    raise TileIndexError(
                        f"tensor {self.name}: partition axis sliced with step {step}; "
                        f"partitions cannot be strided")
                if partition_axis:
                    partition = len(axes)
                offset += start * stride
                axes.append((stride * step, count))
                moves.append((start, step))
            else:
                raise UnsupportedConstructError(
                    f"tensor {self.name}: index {item!r} of type {type(item).__name__} "
                    f"(supported: int, slice, nl.ds, ..., and nl.arange / nl.mgrid index "
                    f"vectors)")
        bounds = tuple(bound.moved(moves) for bound in self.bounds)
        return NkiTensor(self.storage, View(offset, tuple(axes), partition), self.dt, False,
                         bounds)

    def _index_vectors(self, items: list[Any]) -> NkiTensor:
        """`t[i_p + 128 * m, i_f]`: a view over the index space the index vectors span, one
        dimension per axis of that space; the first axis is the tile's partition axis."""
        if len(items) != self.ndim:
            raise TileIndexError(
                f"tensor {self.name} of shape {self.shape}: index vectors need one index per "
                f"dimension, got {len(items)}")
        self.check_bounds()  # a view indexed again: its own pending ranges are checked now
        space = broadcast_shapes(*(i.shape for i in items if isinstance(i, IndexExpr)))
        strides, offset, bounds = [0] * len(space), self.view.offset, []
        for dim, (item, (stride, size)) in enumerate(zip(items, self.view.axes)):
            if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
                if not 0 <= int(item) < size:
                    raise TileIndexError(
                        f"tensor {self.name}: index {int(item)} is out of range for dimension "
                        f"{dim} of size {size}")
                offset += int(item) * stride
                continue
            if not isinstance(item, IndexExpr):
                raise UnsupportedConstructError(
                    f"tensor {self.name}: index {item!r} mixed with index vectors (index every "
                    f"dimension with an int or an index vector, e.g. nl.arange(n)[None, :] "
                    f"instead of a slice)")
            expr = item.aligned(space)
            if self.on_chip and dim == self.view.partition and any(a != 0 for a, _ in expr.terms):
                raise TileIndexError(
                    f"tensor {self.name}: its partition dimension is indexed by {item!r}, which "
                    f"varies along a free axis; the partition index must use the first axis "
                    f"only (nl.arange(n)[:, None])")
            offset += expr.const * stride
            for axis, coef in expr.terms:
                strides[axis] += coef * stride
            low, high = expr.span()
            if low < 0 or high >= size:
                bounds.append(Bound(dim, size, tuple(expr.coefficient(a) for a in
                                                     range(len(space))), expr.const))
        view = View(offset, tuple(zip(strides, space)), 0)
        return NkiTensor(self.storage, view, self.dt, False, tuple(bounds))

    def check_bounds(self) -> None:
        """Raise if an index-vector view reaches outside a dimension of the tensor it indexes."""
        sizes = self.shape
        for bound in self.bounds:
            low, high = bound.span(sizes)
            if low < 0 or high >= bound.size:
                raise TileIndexError(
                    f"tensor {self.name}: index vectors reach {low}..{high} on dimension "
                    f"{bound.dim} of size {bound.size}; disable the lanes outside it with mask=")

    def masked(self, lanes: Lanes) -> NkiTensor:
        """This view with only the lanes of a mask: each restricted axis of the mask's index
        space narrows the dimension in the same position (dimensions of size 1, such as [P, 1]
        per-partition columns, broadcast and are left alone)."""
        axes, offset, bounds = list(self.view.axes), self.view.offset, self.bounds
        for axis, start, stop in lanes.ranges:
            if axis >= len(axes) or (axes[axis][1] == 1 and lanes.space[axis] != 1):
                continue
            stride, size = axes[axis]
            if size != lanes.space[axis]:
                raise NkiValidationError(
                    f"a mask over an index space of shape {list(lanes.space)} does not fit "
                    f"tensor {self.name} of shape {list(self.shape)} (dimension {axis})")
            offset += start * stride
            axes[axis] = (stride, stop - start)
            bounds = tuple(bound.shifted(axis, start) for bound in bounds)
        return NkiTensor(self.storage, View(offset, tuple(axes), self.view.partition), self.dt,
                         False, bounds)

    def partition_major(self) -> NkiTensor:
        """The whole storage with its partition dimension first (for fills, where the order of
        the elements does not matter)."""
        if not self.is_base or not self.on_chip or self.view.partition == 0:
            return self
        axes = list(self.view.axes)
        first = axes.pop(self.view.partition)
        return NkiTensor(self.storage, View(self.view.offset, (first, *axes), 0), self.dt, False)

    def broadcast_to(self, shape: Any) -> NkiTensor:
        """This tile broadcast to `shape` (see `nl.broadcast_to`)."""
        from kernels.nki import elementwise  # partition broadcasts compute a new tile
        return elementwise.broadcast_to(self, shape)

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
            if self.view.partition != 0:
                raise UnsupportedConstructError(
                    f"tensor {self.name}: reshape of a tensor whose partition dimension is not "
                    f"its first (index its block dimensions first)")
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
        if not self.storage.placed:
            context.session().flush()  # a deferred result is computed when it is first read
            if not self.storage.placed:
                raise TracingError(
                    f"tensor {self.name} was written straight into another tensor by the "
                    f"statement that computed it and has no storage of its own")
        self.check_bounds()
        if self.on_chip:
            return self._lower_on_chip(target, exact)
        return self._lower_hbm(target, exact)

    def _lower_on_chip(self, target: Target, exact: bool) -> AccessPattern:
        row, size = self._row, self.dt.itemsize
        if self.view.partition != 0:
            raise NkiValidationError(
                f"tensor {self.name}: its dimension {self.view.partition} is the partition "
                f"dimension (nl.par_dim); index the block dimension(s) before it to get a tile, "
                f"e.g. {self.name}[i]")
        p_stride, partitions = self.view.axes[0]
        if partitions > 1 and p_stride != row:
            raise TileIndexError(
                f"tensor {self.name}: the first axis of this view steps {p_stride} elements, not "
                f"one partition ({row}); partitions cannot be strided, and the first index must "
                f"address the partition dimension")
        first, column = divmod(self.view.offset, row)
        if first + partitions > self.storage.partitions:
            raise TileIndexError(
                f"tensor {self.name}: partitions {first}..{first + partitions - 1} exceed its "
                f"{self.storage.partitions} partitions")
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
        if isinstance(other, NkiTensor) and sys.getrefcount(other) <= _TEMPORARY_REFS:
            from kernels.nki import deferred
            if deferred.accumulate_deferred(self, other):
                return self  # `psum[...] += nisa.nc_matmul(...)`: the matmul accumulates here
        return self._inplace("add", other)

    def __isub__(self, other: Any) -> NkiTensor:
        return self._inplace("subtract", other)

    def __imul__(self, other: Any) -> NkiTensor:
        return self._inplace("multiply", other)

    def __itruediv__(self, other: Any) -> NkiTensor:
        return self._inplace("divide", other)

    def __setitem__(self, index: Any, value: Any) -> None:
        from kernels.nki import deferred, elementwise
        target = self[index]
        if isinstance(value, NkiTensor):
            if value.same_view(target):
                return  # `t[i] += x` already wrote t[i] in place
            if sys.getrefcount(value) <= _TEMPORARY_REFS and deferred.write_deferred(target,
                                                                                    value):
                return  # `t[i] = nl.load(...)`: the load writes t[i] directly
        elementwise.assign(target, value)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        """numpy ufuncs on tiles (`np.exp(tile)`, `2.0 * tile` via np.float32) are the nl ops
        of the same name, never a conversion of the tile to an array."""
        from kernels.nki.ops import NUMPY_ALIASES, describe
        if method != "__call__" or kwargs or ufunc not in NUMPY_ALIASES:
            raise UnsupportedConstructError(
                f"numpy {describe(ufunc)}.{method} on tensor {self.name}")
        return NUMPY_ALIASES[ufunc](*inputs)


@dataclass(frozen=True)
class Bound:
    """An index-vector view's index into dimension `dim` (of `size`) of the tensor it indexes:
    const + sum(coefs[d] * i_d) over the view's dimensions, checked when the view is lowered."""

    dim: int
    size: int
    coefs: tuple[int, ...]
    const: int

    def span(self, sizes: tuple[int, ...]) -> tuple[int, int]:
        low = self.const + sum(min(0, c * (n - 1)) for c, n in zip(self.coefs, sizes))
        high = self.const + sum(max(0, c * (n - 1)) for c, n in zip(self.coefs, sizes))
        return low, high

    def shifted(self, axis: int, start: int) -> Bound:
        """The same index after dimension `axis` of the view starts `start` lanes later."""
        return Bound(self.dim, self.size, self.coefs, self.const + self.coefs[axis] * start)

    def moved(self, moves: list[tuple[int, int]]) -> Bound:
        """The same index seen through an indexed view: each dimension starts at `start` and
        steps `step` (an int index is step 0 and drops the dimension)."""
        coefs, const = [], self.const
        for coef, (start, step) in zip(self.coefs, moves):
            const += coef * start
            if step:
                coefs.append(coef * step)
        return Bound(self.dim, self.size, tuple(coefs), const)


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
