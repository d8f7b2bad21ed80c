"""dtypes: resolution by name / numpy type, and the rounding rules of `cast` (the write port).

References are ml_dtypes / numpy conversions and hand-derived bit patterns, never isa.dtypes.
"""

from __future__ import annotations

import dataclasses

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from isa import DTYPES, cast, dtype
from isa.dtypes import compute_view, from_numpy
from tests.conftest import rounded
from tests.strategies import FLOAT_DTYPES, INT_DTYPES, bit_patterns, dtypes

STORAGE = {
    "fp32": (np.float32, 4), "tf32": (np.float32, 4), "bf16": (ml_dtypes.bfloat16, 2),
    "fp16": (np.float16, 2), "fp8_e4m3": (ml_dtypes.float8_e4m3fn, 1),
    "fp8_e5m2": (ml_dtypes.float8_e5m2, 1), "int8": (np.int8, 1), "uint8": (np.uint8, 1),
    "int16": (np.int16, 2), "uint16": (np.uint16, 2), "int32": (np.int32, 4),
    "uint32": (np.uint32, 4),
}


def same_bits(actual: np.ndarray, expected: np.ndarray) -> None:
    """Bit-identical, except that any NaN equals any NaN."""
    assert actual.dtype == expected.dtype
    if actual.dtype.kind in "iu":
        np.testing.assert_array_equal(actual, expected)
        return
    a32, e32 = actual.astype(np.float32), expected.astype(np.float32)
    np.testing.assert_array_equal(np.isnan(a32), np.isnan(e32))
    words = f"u{actual.dtype.itemsize}"
    keep = ~np.isnan(a32)
    np.testing.assert_array_equal(actual.view(words)[keep], expected.view(words)[keep])


# ---- resolution ---------------------------------------------------------------------------------
def test_dtype_table_is_the_documented_list():
    assert set(DTYPES) == set(STORAGE)
    for name, (storage, itemsize) in STORAGE.items():
        dt = DTYPES[name]
        assert dt.storage == np.dtype(storage) and dt.itemsize == itemsize
        assert dt.is_float == (np.dtype(storage).kind not in "iu")
        assert str(dt) == repr(dt) == name
    assert DTYPES["tf32"].mantissa_bits == 10


@given(dtypes())
def test_dtype_resolves_names_records_and_storage(dt):
    assert dtype(dt.name) is dt
    assert dtype(dt) is dt
    expected = DTYPES["fp32"] if dt.name == "tf32" else dt  # storage never infers tf32
    assert dtype(dt.storage) is expected
    assert from_numpy(dt.storage) is expected


def test_from_numpy_maps_host_only_types():
    assert from_numpy(np.float64).name == "fp32"
    assert from_numpy(np.int64).name == "int32"
    assert from_numpy(np.bool_).name == "uint8"


def test_unknown_dtype_name_raises_naming_it_and_the_supported_list():
    with pytest.raises(ValueError, match=r"unknown dtype 'fp64'; supported: fp32, tf32, bf16"):
        dtype("fp64")


def test_numpy_type_without_a_device_type_raises():
    with pytest.raises(ValueError, match=r"numpy dtype float64 is not a NeuronCore dtype"):
        dtype(np.float64)
    with pytest.raises(ValueError, match=r"numpy dtype complex64 is not a NeuronCore dtype"):
        from_numpy(np.complex64)


def test_uninterpretable_dtype_raises_type_error():
    with pytest.raises(TypeError, match=r"cannot interpret 3\.5 as a dtype"):
        dtype(3.5)


def test_dtype_records_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DTYPES["fp32"].name = "fp64"


@given(dtypes())
def test_compute_view_is_fp32_for_floats_and_int64_for_ints(dt):
    values = np.zeros(3, dt.storage)
    assert compute_view(values).dtype == (np.float32 if dt.is_float else np.int64)


# ---- cast: identity, floats ------------------------------------------------------------------
@given(dtypes().flatmap(lambda dt: st.tuples(st.just(dt), bit_patterns(dt, 16))))
def test_cast_to_own_dtype_keeps_every_bit_pattern(case):
    dt, values = case
    same_bits(cast(values, dt), values)


@given(st.sampled_from([d for d in FLOAT_DTYPES if not d.mantissa_bits]), bit_patterns("fp32", 32))
def test_cast_from_fp32_is_the_ml_dtypes_conversion(dt, values):
    same_bits(cast(values, dt), values.astype(dt.storage))


@pytest.mark.parametrize("value, expected", [
    (1 + 2**-8, 1.0),                 # tie between 1 and 1+2^-7: the even mantissa (1) wins
    (1 + 3 * 2**-8, 1 + 2**-6),       # tie between 1+2^-7 and 1+2^-6: 1+2^-6 is even
    (1 + 2**-8 + 2**-20, 1 + 2**-7),  # just above the tie rounds up
    (-(1 + 2**-8), -1.0),
    (256 + 1, 256.0),                 # 257 is a tie at exponent 8; 256 has the even mantissa
])
def test_bf16_rounds_to_nearest_even(value, expected):
    out = cast(np.array([value], np.float32), DTYPES["bf16"])
    assert out.dtype == ml_dtypes.bfloat16
    assert float(out[0]) == expected
    assert out.view(np.uint16)[0] == np.array([value], np.float32).astype(
        ml_dtypes.bfloat16).view(np.uint16)[0]


@pytest.mark.parametrize("name, value, expected", [
    ("fp8_e4m3", 1 + 2**-4, 1.0),         # 3 mantissa bits: tie goes to even
    ("fp8_e4m3", 1 + 3 * 2**-4, 1.25),
    ("fp8_e4m3", 448.0, 448.0),           # the largest finite e4m3fn value
    ("fp8_e4m3", 500.0, np.nan),          # e4m3fn has no infinity: ml_dtypes overflows to NaN
    ("fp8_e5m2", 1 + 2**-3, 1.0),         # 2 mantissa bits
    ("fp8_e5m2", 1 + 3 * 2**-3, 1.5),
    ("fp8_e5m2", 1e6, np.inf),
    ("fp16", 1 + 2**-11, 1.0),
    ("fp16", 70000.0, np.inf),
])
def test_fp8_and_fp16_round_like_ml_dtypes(name, value, expected):
    dt = DTYPES[name]
    out = cast(np.array([value], np.float32), dt)
    np.testing.assert_array_equal(out.astype(np.float64), [expected])
    same_bits(out, np.array([value], np.float32).astype(dt.storage))


@pytest.mark.parametrize("value, expected", [
    (1 + 2**-11, 1.0),              # 10 explicit mantissa bits: a tie rounds to even
    (1 + 3 * 2**-11, 1 + 2**-9),
    (1 + 2**-11 + 2**-20, 1 + 2**-10),
    (np.inf, np.inf),
])
def test_tf32_rounds_to_ten_mantissa_bits_nearest_even(value, expected):
    out = cast(np.array([value], np.float32), DTYPES["tf32"])
    assert out.dtype == np.float32 and out[0] == expected


def test_tf32_keeps_nan():
    assert np.isnan(cast(np.array([np.nan], np.float32), DTYPES["tf32"])[0])


@given(st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=16))
def test_tf32_matches_an_independent_frexp_rounding(values):
    values = np.array(values, np.float32)
    np.testing.assert_array_equal(cast(values, DTYPES["tf32"]), rounded(values, "tf32"))


@given(st.sampled_from([d for d in FLOAT_DTYPES if not d.mantissa_bits]),
       st.lists(st.integers(-2**31, 2**31 - 1), min_size=1, max_size=16))
def test_int_to_float_goes_through_fp32(dt, values):
    values = np.array(values, np.int64)
    same_bits(cast(values, dt), values.astype(np.float32).astype(dt.storage))


# ---- cast: integers ----------------------------------------------------------------------------
def test_float_to_int_rounds_half_even_and_saturates():
    values = np.array([300.7, -1e10, np.nan, np.inf, -np.inf, 2.5, 3.5, -2.5, 0.49, -0.51],
                      np.float32)
    np.testing.assert_array_equal(cast(values, DTYPES["int8"]),
                                  np.array([127, -128, 0, 127, -128, 2, 4, -2, 0, -1], np.int8))
    np.testing.assert_array_equal(cast(values, DTYPES["uint8"]),
                                  np.array([255, 0, 0, 255, 0, 2, 4, 0, 0, 0], np.uint8))
    np.testing.assert_array_equal(
        cast(np.array([3e9, -3e9], np.float32), DTYPES["int32"]),
        np.array([2**31 - 1, -2**31], np.int32))


@given(st.sampled_from(INT_DTYPES),
       st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=1,
                max_size=16))
def test_float_to_int_is_rint_then_clip(dt, values):
    values = np.array(values, np.float32)
    info = np.iinfo(dt.storage)
    wide = np.rint(values.astype(np.float64))
    expected = np.where(np.isnan(wide), 0, np.clip(np.nan_to_num(wide, posinf=info.max,
                                                                 neginf=info.min),
                                                   info.min, info.max))
    out = cast(values, dt)
    assert out.dtype == dt.storage
    np.testing.assert_array_equal(out, expected.astype(dt.storage))


@given(st.sampled_from(INT_DTYPES), st.lists(st.integers(-2**40, 2**40), min_size=1,
                                             max_size=16))
def test_int_to_int_saturates(dt, values):
    info = np.iinfo(dt.storage)
    out = cast(np.array(values, np.int64), dt)
    assert out.dtype == dt.storage
    np.testing.assert_array_equal(out, [min(max(v, info.min), info.max) for v in values])


def test_uint32_to_int32_saturates_instead_of_wrapping():
    out = cast(np.array([2**32 - 1, 5], np.uint32), DTYPES["int32"])
    np.testing.assert_array_equal(out, np.array([2**31 - 1, 5], np.int32))
