"""Access patterns: how an instruction operand addresses HBM, SBUF or PSUM.

An on-chip operand covers a contiguous range of partitions (no striding in P) and, within each
partition, the same free-dimension pattern: up to 4 (stride, size) axes in elements from a byte
offset [A2 2.1].  An HBM operand names a device-memory tensor, a row count and row stride (the
"partition" axis of a DMA) and the same kind of free pattern.  Text form (assembly):

    sbuf[0:128]+4096[[1,512]]:bf16        partitions 0..127, byte 4096, 512 contiguous bf16
    psum[0:64]+2048[[1,256]]:fp32
    hbm:a[128x512]+1024[[1,512]]:bf16     tensor a, 128 rows 512 elements apart, from byte 1024
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass
from math import prod

from isa.dtypes import DType, dtype
from isa.target import Space, Target

_INTERNED: weakref.WeakValueDictionary = weakref.WeakValueDictionary()


@dataclass(frozen=True)
class AccessPattern:
    """One operand: memory space, dtype, partition rows and a free-axis pattern."""

    space: Space
    dtype: DType
    partition_start: int
    partitions: int
    offset: int  # bytes: within each partition on chip; from the tensor's base in HBM
    axes: tuple[tuple[int, int], ...]  # (stride in elements, size), outermost first
    tensor: str = ""  # HBM only: the device-memory tensor addressed
    partition_stride: int = 0  # HBM only: elements between consecutive rows

    def __post_init__(self) -> None:
        object.__setattr__(self, "space", Space(self.space))
        object.__setattr__(self, "dtype", dtype(self.dtype))
        axes = tuple((int(s), int(n)) for s, n in self.axes)
        object.__setattr__(self, "axes", axes)
        if not axes:
            raise ValueError("an access pattern needs at least one free axis")
        for _stride, size in axes:
            if size < 1:
                raise ValueError(f"free-axis size {size} must be >= 1 (axes {list(axes)})")
        if self.partitions < 1:
            raise ValueError(f"partition count {self.partitions} must be >= 1")
        if self.offset < 0:
            raise ValueError(f"byte offset {self.offset} must be >= 0")
        if self.offset % self.dtype.itemsize:
            raise ValueError(
                f"byte offset {self.offset} is not aligned to the {self.dtype} element size "
                f"({self.dtype.itemsize} bytes)")
        if self.space is Space.HBM:
            if not self.tensor:
                raise ValueError("an HBM access pattern must name its tensor")
            if self.partition_start != 0:
                raise ValueError(
                    f"HBM rows start at 0 (offset selects), got {self.partition_start}")
            if self.partition_stride < 0:
                raise ValueError(f"HBM row stride {self.partition_stride} must be >= 0")
        else:
            if self.tensor or self.partition_stride:
                raise ValueError(f"{self.space} operands address partitions, not tensors or rows")
            if self.partition_start < 0:
                raise ValueError(f"partition start {self.partition_start} must be >= 0")

    def __new__(cls, *args, **kwargs):
        # Equal operands built from the same arguments are one shared (immutable) object:
        # programs repeat a few tiles thousands of times, and identity makes the equality and
        # hashing that dependence checks and memo tables do nearly free.  Copying and
        # unpickling call __new__ without arguments and get a fresh object.
        if not args and not kwargs:
            return super().__new__(cls)
        try:
            key = (args, tuple(sorted(kwargs.items())))
            shared = _INTERNED.get(key)
        except TypeError:  # unhashable raw arguments (lists): no sharing
            return super().__new__(cls)
        if shared is None:
            shared = super().__new__(cls)
            _INTERNED[key] = shared
        return shared

    def __getstate__(self) -> dict:
        # The cached hash belongs to this process (strings hash differently in each): a copy
        # sent to another process must compute its own.
        state = dict(self.__dict__)
        state.pop("_hash", None)
        return state

    def __eq__(self, other: object) -> bool:
        # Compared often (dependence checks, memo tables): identity and the cached hash first.
        if self is other:
            return True
        if other.__class__ is not AccessPattern:
            return NotImplemented
        return hash(self) == hash(other) and self._fields() == other._fields()

    def _fields(self) -> tuple:
        return (self.space, self.dtype, self.partition_start, self.partitions, self.offset,
                self.axes, self.tensor, self.partition_stride)

    def __hash__(self) -> int:
        # Operands are hashed often (timing-model memo tables); compute the hash once.
        cached = self.__dict__.get("_hash")
        if cached is None:
            cached = hash(self._fields())
            object.__setattr__(self, "_hash", cached)
        return cached

    # ---- shape and size -------------------------------------------------------------------
    @property
    def free_shape(self) -> tuple[int, ...]:
        return tuple(size for _, size in self.axes)

    @property
    def shape(self) -> tuple[int, ...]:
        """Logical shape: (partitions, *free sizes)."""
        return (self.partitions, *self.free_shape)

    @property
    def free_size(self) -> int:
        return prod(self.free_shape)

    @property
    def elements(self) -> int:
        return self.partitions * self.free_size

    @property
    def nbytes(self) -> int:
        """Bytes moved by one full access of this pattern."""
        return self.elements * self.dtype.itemsize

    def element_span(self) -> tuple[int, int]:
        """Lowest and highest element index touched within one row, from the row's origin."""
        base = self.offset // self.dtype.itemsize
        low = base + sum(min(0, s * (n - 1)) for s, n in self.axes)
        high = base + sum(max(0, s * (n - 1)) for s, n in self.axes)
        return low, high

    def byte_span(self) -> tuple[int, int]:
        """[first, last) byte touched: per partition on chip; over the whole tensor in HBM."""
        span = self.__dict__.get("_span")  # asked for by every check and overlap test
        if span is None:
            low, high = self.element_span()
            if self.space is Space.HBM:
                high += self.partition_stride * (self.partitions - 1)
            span = low * self.dtype.itemsize, (high + 1) * self.dtype.itemsize
            object.__setattr__(self, "_span", span)
        return span

    @property
    def partition_end(self) -> int:
        return self.partition_start + self.partitions

    @property
    def innermost_stride_bytes(self) -> int:
        return abs(self.axes[-1][0]) * self.dtype.itemsize

    # ---- validation against the architecture ----------------------------------------------
    def check(self, target: Target) -> None:
        """Raise if this pattern is illegal on `target` (axes, sizes, strides, bounds)."""
        if len(self.axes) > target.max_free_axes:
            raise ValueError(
                f"{self}: {len(self.axes)} free axes exceed the limit of {target.max_free_axes}")
        for stride, size in self.axes:
            if size > target.max_axis_size:
                raise ValueError(f"{self}: axis size {size} exceeds {target.max_axis_size}")
            if abs(stride) > target.max_axis_stride:
                raise ValueError(
                    f"{self}: axis stride {stride} exceeds +-{target.max_axis_stride} elements")
        if self.space is Space.HBM:
            low, _ = self.element_span()
            if low < 0:
                raise ValueError(
                    f"{self}: pattern reaches before the start of tensor {self.tensor}")
            return
        if self.partition_end > target.partitions:
            raise ValueError(
                f"{self}: partitions {self.partition_start}..{self.partition_end - 1} exceed the "
                f"{target.partitions} partitions")
        limit = target.partition_bytes(self.space)
        low, high = self.byte_span()
        if low < 0 or high > limit:
            raise ValueError(
                f"{self}: bytes {low}..{high - 1} fall outside the {limit}-byte {self.space} "
                f"partition")

    # ---- text ---------------------------------------------------------------------------------
    def __str__(self) -> str:
        axes = ",".join(f"[{s},{n}]" for s, n in self.axes)
        if self.space is Space.HBM:
            rows = f"{self.partitions}x{self.partition_stride}"
            return f"hbm:{self.tensor}[{rows}]+{self.offset}[{axes}]:{self.dtype}"
        rows = f"{self.partition_start}:{self.partition_end}"
        return f"{self.space}[{rows}]+{self.offset}[{axes}]:{self.dtype}"

    @staticmethod
    def parse(text: str) -> AccessPattern:
        """Inverse of `str()`; a malformed operand raises naming the text."""
        match = _AP_RE.fullmatch(text.strip())
        if not match:
            raise ValueError(f"malformed access pattern {text!r}; expected e.g. "
                             "sbuf[0:128]+0[[1,512]]:bf16 or hbm:a[128x512]+0[[1,512]]:bf16")
        axes = tuple((int(s), int(n)) for s, n in _AXIS_RE.findall(match["axes"]))
        if match["space"] == "hbm":
            if match["tensor"] is None or match["rows"] is None:
                raise ValueError(f"HBM operand {text!r} needs hbm:NAME[ROWSxSTRIDE]")
            return AccessPattern(Space.HBM, dtype(match["dtype"]), 0, int(match["rows"]),
                                 int(match["offset"]), axes, match["tensor"],
                                 int(match["rstride"]))
        if match["tensor"] is not None or match["start"] is None:
            raise ValueError(f"on-chip operand {text!r} needs {match['space']}[START:END]")
        start, end = int(match["start"]), int(match["end"])
        return AccessPattern(Space(match["space"]), dtype(match["dtype"]), start, end - start,
                             int(match["offset"]), axes)


_AP_RE = re.compile(
    r"(?P<space>sbuf|psum|hbm)(?::(?P<tensor>[A-Za-z_][\w.]*))?"
    r"\[(?:(?P<start>\d+):(?P<end>\d+)|(?P<rows>\d+)x(?P<rstride>\d+))\]"
    r"\+(?P<offset>\d+)\[(?P<axes>(?:\[-?\d+,\d+\],?)+)\]:(?P<dtype>\w+)")
_AXIS_RE = re.compile(r"\[(-?\d+),(\d+)\]")


def sbuf(partitions: int | tuple[int, int], free: int | tuple[int, ...], dt: str | DType,
         offset: int = 0) -> AccessPattern:
    """A dense SBUF tile: `sbuf(128, 512, "bf16")` or `sbuf((64, 64), (4, 128), "fp32", 2048)`."""
    return _dense(Space.SBUF, partitions, free, dt, offset)


def psum(partitions: int | tuple[int, int], free: int | tuple[int, ...], dt: str | DType = "fp32",
         offset: int = 0) -> AccessPattern:
    """A dense PSUM tile, fp32 unless told otherwise."""
    return _dense(Space.PSUM, partitions, free, dt, offset)


def hbm(tensor: str, rows: int, row_stride: int, free: int | tuple[int, ...], dt: str | DType,
        offset: int = 0) -> AccessPattern:
    """`rows` rows of a device-memory tensor, `row_stride` elements apart, each a dense block."""
    sizes = (free,) if isinstance(free, int) else tuple(free)
    return AccessPattern(Space.HBM, dtype(dt), 0, rows, offset, _dense_axes(sizes), tensor,
                         row_stride)


def _dense_axes(sizes: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    strides, step = [], 1
    for size in reversed(sizes):
        strides.append(step)
        step *= size
    return tuple(zip(reversed(strides), sizes))


def _dense(space: Space, partitions: int | tuple[int, int], free: int | tuple[int, ...],
           dt: str | DType, offset: int) -> AccessPattern:
    start, count = (0, partitions) if isinstance(partitions, int) else partitions
    sizes = (free,) if isinstance(free, int) else tuple(free)
    return AccessPattern(space, dtype(dt), start, count, offset, _dense_axes(sizes))
