"""Memories of the functional model: SBUF and PSUM of one core, HBM of one chip.

Each memory is a byte array plus a shadow of which bytes were ever written, so that a read of
memory that was never written is reported with the instruction and the region (AWS's simulator
fills new allocations with NaN for the same purpose).  Operands are numpy strided views of the
bytes, so reads and writes cost what numpy's copies cost.  Bounds are checked on every access.
"""

from __future__ import annotations

import numpy as np

from isa.access import AccessPattern
from isa.program import DramTensor
from isa.target import Space, Target


class MemoryAccessError(IndexError):
    """An access outside a memory or of a tensor that does not exist."""


class UninitializedReadError(RuntimeError):
    """A read of bytes that no instruction and no input ever wrote."""


def _written_pattern(itemsize: int) -> np.ndarray:
    """The shadow value of a fully written element: every byte 1 (0x01 repeated)."""
    return np.frombuffer(b"\x01" * itemsize, dtype=f"u{itemsize}")[0]


def _strided(buffer: np.ndarray, storage: np.dtype, first: int, row_stride: int,
             ap: AccessPattern) -> np.ndarray:
    """A writeable view of `buffer` (1-D bytes) shaped like `ap`, element `first` at [0, 0...]."""
    size = storage.itemsize
    # Stride an unsigned view and reinterpret it: numpy cannot build some ml_dtypes types from
    # a raw buffer description (fp8_e5m2 is "<f1").  The constructor also checks the bounds.
    words = buffer.view(f"u{size}")
    strides = (row_stride * size, *(stride * size for stride, _ in ap.axes))
    view = np.ndarray(ap.shape, words.dtype, buffer=words, offset=first * size, strides=strides)
    return view.view(storage)


class OnChipMemory:
    """SBUF or PSUM of one core: partitions x bytes, addressed by access patterns."""

    def __init__(self, space: Space, target: Target) -> None:
        self.space = space
        self.partitions = target.partitions
        self.partition_bytes = target.partition_bytes(space)
        self.data = np.zeros(self.partitions * self.partition_bytes, np.uint8)
        self.written = np.zeros_like(self.data)
        # Operands already bounds-checked, and operands whose bytes are all known written
        # (bytes never become unwritten): programs touch the same tiles again and again.
        self._in_bounds: set[AccessPattern] = set()
        self._initialized: set[AccessPattern] = set()
        self._views: dict[AccessPattern, np.ndarray] = {}  # the buffer is never replaced

    def _check(self, ap: AccessPattern) -> None:
        if ap in self._in_bounds:
            return
        if ap.space is not self.space:
            raise MemoryAccessError(f"{ap} is not in {self.space}")
        low, high = ap.byte_span()
        if ap.partition_end > self.partitions or low < 0 or high > self.partition_bytes:
            raise MemoryAccessError(
                f"{ap} reaches partitions {ap.partition_start}..{ap.partition_end - 1}, bytes "
                f"{low}..{high - 1}; {self.space} has {self.partitions} partitions of "
                f"{self.partition_bytes} bytes")
        self._in_bounds.add(ap)

    def _view(self, buffer: np.ndarray, ap: AccessPattern, storage: np.dtype) -> np.ndarray:
        per_row = self.partition_bytes // storage.itemsize
        first = ap.partition_start * per_row + ap.offset // storage.itemsize
        return _strided(buffer, storage, first, per_row, ap)

    def read(self, ap: AccessPattern, check_initialized: bool = True) -> np.ndarray:
        self._check(ap)
        if check_initialized and ap not in self._initialized:
            shadow = self._view(self.written, ap, np.dtype(f"u{ap.dtype.itemsize}"))
            if not np.all(shadow == _written_pattern(ap.dtype.itemsize)):
                raise UninitializedReadError(f"read of {ap}: some of its bytes were never written")
            self._initialized.add(ap)
        return self._data_view(ap)

    def _data_view(self, ap: AccessPattern) -> np.ndarray:
        view = self._views.get(ap)
        if view is None:
            view = self._views[ap] = self._view(self.data, ap, ap.dtype.storage)
        return view

    def write(self, ap: AccessPattern, values: np.ndarray) -> None:
        self._check(ap)
        self._data_view(ap)[...] = values.reshape(ap.shape)
        if ap not in self._initialized:
            shadow = self._view(self.written, ap, np.dtype(f"u{ap.dtype.itemsize}"))
            shadow[...] = _written_pattern(ap.dtype.itemsize)
            self._initialized.add(ap)


class DeviceMemory:
    """HBM of one chip: named tensors, each a byte buffer with a written-bytes shadow."""

    def __init__(self, capacity_bytes: int | None = None) -> None:
        self.capacity_bytes = capacity_bytes
        self.tensors: dict[str, DramTensor] = {}
        self.data: dict[str, np.ndarray] = {}
        self.written: dict[str, np.ndarray] = {}
        self._initialized: set[AccessPattern] = set()  # operands known fully written

    @property
    def used_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())

    def allocate(self, tensor: DramTensor) -> None:
        if tensor.name in self.tensors:
            if self.tensors[tensor.name] != tensor:
                raise MemoryAccessError(
                    f"tensor {tensor.name} is already allocated as {self.tensors[tensor.name]}")
            return
        capacity = self.capacity_bytes
        if capacity is not None and self.used_bytes + tensor.nbytes > capacity:
            raise MemoryAccessError(
                f"allocating {tensor.name} ({tensor.nbytes} bytes) exceeds device memory: "
                f"{self.used_bytes} of {self.capacity_bytes} bytes already used")
        self.tensors[tensor.name] = tensor
        self.data[tensor.name] = np.zeros(tensor.nbytes, np.uint8)
        self.written[tensor.name] = np.zeros(tensor.nbytes, np.uint8)

    def store(self, name: str, array: np.ndarray) -> None:
        """Place a host array (already in the tensor's dtype and shape) into HBM."""
        tensor = self._tensor(name)
        flat = np.ascontiguousarray(array, dtype=tensor.dtype.storage).reshape(-1)
        self.data[name][...] = flat.view(np.uint8)
        self.written[name][...] = 1

    def load(self, name: str) -> np.ndarray:
        """A copy of a tensor as a host array in its storage dtype."""
        tensor = self._tensor(name)
        return self.data[name].view(tensor.dtype.storage).reshape(tensor.shape).copy()

    def _tensor(self, name: str) -> DramTensor:
        if name not in self.tensors:
            raise MemoryAccessError(f"no tensor {name!r} in device memory")
        return self.tensors[name]

    def _view(self, buffer: np.ndarray, ap: AccessPattern, storage: np.dtype) -> np.ndarray:
        return _strided(buffer, storage, ap.offset // storage.itemsize, ap.partition_stride, ap)

    def _check(self, ap: AccessPattern) -> DramTensor:
        tensor = self._tensor(ap.tensor)
        low, high = ap.byte_span()
        if ap.dtype != tensor.dtype:
            raise MemoryAccessError(f"{ap} reads {tensor.name} ({tensor.dtype}) as {ap.dtype}")
        if low < 0 or high > tensor.nbytes:
            raise MemoryAccessError(
                f"{ap} touches bytes {low}..{high - 1} of {tensor.name} ({tensor.nbytes} bytes)")
        return tensor

    def read(self, ap: AccessPattern, check_initialized: bool = True) -> np.ndarray:
        self._check(ap)
        if check_initialized and ap not in self._initialized:
            shadow = self._view(self.written[ap.tensor], ap, np.dtype(f"u{ap.dtype.itemsize}"))
            if not np.all(shadow == _written_pattern(ap.dtype.itemsize)):
                raise UninitializedReadError(f"read of {ap}: some of its bytes were never written")
            self._initialized.add(ap)  # bytes never become unwritten
        return self._view(self.data[ap.tensor], ap, ap.dtype.storage)

    def write(self, ap: AccessPattern, values: np.ndarray) -> None:
        self._check(ap)
        self._view(self.data[ap.tensor], ap, ap.dtype.storage)[...] = values.reshape(ap.shape)
        if ap not in self._initialized:
            shadow = self._view(self.written[ap.tensor], ap, np.dtype(f"u{ap.dtype.itemsize}"))
            shadow[...] = _written_pattern(ap.dtype.itemsize)
            self._initialized.add(ap)
