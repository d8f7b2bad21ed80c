"""memset: dst = value everywhere, on the Vector or GpSimd engine; the value is rounded to dst's
dtype like any write (nearest even, integers saturate, NaN -> 0)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from isa import Memset, ProgramError, psum, sbuf
from tests.conftest import rounded, run_instruction, validate_alone
from tests.strategies import dtypes, placed


@st.composite
def memsets(draw):
    engine = draw(st.sampled_from(["vector", "gpsimd"]))
    dst = draw(placed("memset", "dst", engine, 0, draw(dtypes()), draw(st.integers(1, 128))))
    return engine, Memset(dst, draw(st.floats(allow_nan=True)))


@given(memsets())
def test_memset_writes_the_rounded_value_everywhere(case):
    engine, ms = case
    out = run_instruction(ms, {}, engine)["dst"]
    expected = rounded(np.full(ms.dst.shape, ms.value), ms.dst.dtype)
    assert out.dtype == ms.dst.dtype.storage and out.shape == ms.dst.shape
    if ms.dst.dtype.is_float and np.isnan(expected.astype(np.float32)).any():
        assert np.isnan(out.astype(np.float32)).all()
    else:
        words = f"u{ms.dst.dtype.itemsize}"
        np.testing.assert_array_equal(out.view(words), expected.view(words))


@pytest.mark.parametrize("dt, value, expected", [
    ("int8", 1e9, 127), ("uint8", -3.0, 0), ("int16", 2.5, 2), ("int32", np.nan, 0),
    ("bf16", 1 + 2**-8, 1.0), ("fp8_e4m3", 1000.0, np.nan), ("fp8_e5m2", -1e9, -np.inf),
])
def test_memset_edge_values(dt, value, expected):
    out = run_instruction(Memset(sbuf(4, 3, dt), value), {})["dst"]
    np.testing.assert_array_equal(out.astype(np.float64), np.full((4, 3), expected))


def test_memset_into_psum_from_vector():
    out = run_instruction(Memset(psum((96, 32), 16), -0.25), {}, "vector")["dst"]
    np.testing.assert_array_equal(out, np.full((32, 16), -0.25, np.float32))


@pytest.mark.parametrize("ms, stream, message", [
    (Memset(psum(4, 8), 0.0), "gpsimd",
     r"memset operand dst=psum\[0:4\]\+0\[\[1,8\]\]:fp32: gpsimd cannot use psum here"),
    (Memset(sbuf(4, 8, "fp32"), 0.0), "scalar", r"memset runs on vector/gpsimd, not on scalar"),
    (Memset(sbuf(4, 8, "fp32"), 0.0), "tensor", r"memset runs on vector/gpsimd, not on tensor"),
    (Memset(sbuf(130, 8, "fp32"), 0.0), "vector",
     r"memset operand dst: .*partitions 0\.\.129 exceed the 128 partitions"),
    (Memset(psum(4, 8, offset=16 * 1024 - 4), 0.0), "vector",
     r"memset operand dst: .*bytes 16380\.\.16411 fall outside the 16384-byte psum partition"),
    (Memset(sbuf(4, 8, "fp32", offset=192 * 1024), 0.0), "gpsimd",
     r"bytes 196608\.\.196639 fall outside the 196608-byte sbuf partition"),
    (Memset(sbuf((48, 16), 8, "fp32"), 0.0), "vector",
     r"an operand of 16 partitions may start at partition \(0, 32, 64, 96\), not 48"),
])
def test_validation_errors(ms, stream, message):
    with pytest.raises(ProgramError, match=message):
        validate_alone(ms, stream)
