"""Data types of NeuronCore tensors and the rounding rules used when values are written.

Low-precision floats come from ml_dtypes (bf16, fp8); conversions from fp32 round to nearest even,
as ml_dtypes does.  The dtype list follows the NKI shared API page ([SHARED] in
reference/hardware.md); tf32 is stored as fp32 with its mantissa rounded to 10 bits.
"""

from __future__ import annotations

from dataclasses import dataclass

import ml_dtypes
import numpy as np


@dataclass(frozen=True)
class DType:
    """One element type: its assembly name, numpy storage type and arithmetic class."""

    name: str
    storage: np.dtype
    is_float: bool
    mantissa_bits: int = 0  # explicit mantissa bits for floats narrower than their storage (tf32)

    def __post_init__(self) -> None:
        object.__setattr__(self, "storage", np.dtype(self.storage))

    @property
    def itemsize(self) -> int:
        return self.storage.itemsize

    def __repr__(self) -> str:
        return self.name

    def __str__(self) -> str:
        return self.name


_ALL = (
    DType("fp32", np.float32, True),
    DType("tf32", np.float32, True, mantissa_bits=10),
    DType("bf16", ml_dtypes.bfloat16, True),
    DType("fp16", np.float16, True),
    DType("fp8_e4m3", ml_dtypes.float8_e4m3fn, True),
    DType("fp8_e5m2", ml_dtypes.float8_e5m2, True),
    DType("int8", np.int8, False),
    DType("uint8", np.uint8, False),
    DType("int16", np.int16, False),
    DType("uint16", np.uint16, False),
    DType("int32", np.int32, False),
    DType("uint32", np.uint32, False),
)

DTYPES: dict[str, DType] = {d.name: d for d in _ALL}

fp32 = DTYPES["fp32"]
tf32 = DTYPES["tf32"]
bf16 = DTYPES["bf16"]
fp16 = DTYPES["fp16"]
fp8_e4m3 = DTYPES["fp8_e4m3"]
fp8_e5m2 = DTYPES["fp8_e5m2"]
int8 = DTYPES["int8"]
uint8 = DTYPES["uint8"]
int16 = DTYPES["int16"]
uint16 = DTYPES["uint16"]
int32 = DTYPES["int32"]
uint32 = DTYPES["uint32"]

# numpy storage types that map back to one of ours (tf32 is never inferred from storage).
_BY_STORAGE = {d.storage: d for d in reversed(_ALL) if d.mantissa_bits == 0}
_NUMPY_ALIASES = {np.dtype(np.float64): fp32, np.dtype(np.int64): int32, np.dtype(np.bool_): uint8}


def dtype(value: str | DType | np.dtype | type) -> DType:
    """Resolve a name (`"bf16"`), a DType, or a numpy dtype to a DType; unknown types raise."""
    if isinstance(value, DType):
        return value
    if isinstance(value, str):
        if value in DTYPES:
            return DTYPES[value]
        raise ValueError(f"unknown dtype {value!r}; supported: {', '.join(DTYPES)}")
    try:
        storage = np.dtype(value)
    except TypeError as err:
        raise TypeError(f"cannot interpret {value!r} as a dtype") from err
    if storage in _BY_STORAGE:
        return _BY_STORAGE[storage]
    raise ValueError(
        f"numpy dtype {storage} is not a NeuronCore dtype; supported: {', '.join(DTYPES)}")


def from_numpy(storage: np.dtype) -> DType:
    """The DType a host array is stored as on the device (float64 -> fp32, int64 -> int32)."""
    storage = np.dtype(storage)
    return _NUMPY_ALIASES.get(storage) or dtype(storage)


def _round_mantissa(values: np.ndarray, bits: int) -> np.ndarray:
    """Round fp32 values to `bits` explicit mantissa bits, nearest even (tf32 storage)."""
    drop = 23 - bits
    raw = np.ascontiguousarray(values, np.float32).view(np.uint32).astype(np.uint64)
    half = np.uint64(1 << (drop - 1))
    lsb = (raw >> np.uint64(drop)) & np.uint64(1)
    rounded = (raw + half - np.uint64(1) + lsb) >> np.uint64(drop) << np.uint64(drop)
    finite = np.isfinite(values)
    out = np.where(finite, rounded.astype(np.uint32).view(np.float32), values)
    return out.astype(np.float32)


def cast(values: np.ndarray, to: DType) -> np.ndarray:
    """Convert computed values to the storage of `to`, the way an engine's write port does.

    Floats round to nearest even; engines compute in fp32, so that is one rounding from fp32
    (host float64 values are rounded to fp32 first, as ml_dtypes does, which can round twice).
    Float to integer rounds to nearest even and saturates to the integer range (numpy would wrap
    or be undefined; the hardware's output converters saturate).
    """
    values = np.asarray(values)
    if to.is_float:
        if to.mantissa_bits:
            return _round_mantissa(values.astype(np.float32), to.mantissa_bits)
        if values.dtype == to.storage:
            return values
        # bf16/fp8 from anything: through fp32 so the rounding is a single RNE step.
        if values.dtype.kind in "iu" or values.dtype.itemsize > 4:
            values = values.astype(np.float32)
        return values.astype(to.storage)
    info = np.iinfo(to.storage)
    if not np.issubdtype(values.dtype, np.integer):
        as_float = np.rint(values.astype(np.float64))
        as_float = np.nan_to_num(as_float, nan=0.0, posinf=info.max, neginf=info.min)
        return np.clip(as_float, info.min, info.max).astype(to.storage)
    return np.clip(values.astype(np.int64), info.min, info.max).astype(to.storage)


def compute_view(values: np.ndarray) -> np.ndarray:
    """The value engines compute on: fp32 for every float type, int64 for integers."""
    values = np.asarray(values)
    if np.issubdtype(values.dtype, np.integer):
        return values.astype(np.int64, copy=False)
    return values.astype(np.float32, copy=False)
