"""tensor_copy: dst = src cast to dst's dtype (round to nearest even, integers saturate), on the
Vector, Scalar or GpSimd engine.  Copies are exact, so results are compared bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from emulator.memory import UninitializedReadError
from isa import InstructionError, ProgramBuilder, ProgramError, TensorCopy, psum, sbuf
from tests.conftest import execute_functional, rounded, run_instruction, validate_alone
from tests.strategies import dtypes, placed, random_values, seeds


@st.composite
def copies(draw):
    engine = draw(st.sampled_from(["vector", "scalar", "gpsimd"]))
    rows, free = draw(st.integers(1, 64)), draw(st.integers(1, 64))
    src = draw(placed("tensor_copy", "src", engine, 0, draw(dtypes()), rows, free))
    dst = draw(placed("tensor_copy", "dst", engine, 1, draw(dtypes()), rows, free))
    return engine, TensorCopy(dst, src)


@given(copies(), seeds())
def test_copy_casts_like_ml_dtypes(case, seed):
    engine, tc = case
    src = random_values(tc.src.dtype, tc.src.shape, seed, scale=150.0)  # fp8_e4m3 overflows to NaN
    out = run_instruction(tc, {"src": src}, engine)["dst"]
    expected = rounded(src.reshape(tc.src.partitions, -1), tc.dst.dtype)
    words = f"u{tc.dst.dtype.itemsize}"
    assert out.dtype == tc.dst.dtype.storage
    same = out.reshape(expected.shape).view(words) == expected.view(words)
    both_nan = np.isnan(out.reshape(expected.shape).astype(np.float32)) & np.isnan(
        expected.astype(np.float32))
    assert np.all(same | both_nan)


def test_copy_saturates_and_rounds_half_even():
    src = np.array([[300.5, -300.5, 2.5, 3.5, -0.5, 126.5]], np.float32)
    tc = TensorCopy(sbuf(1, 6, "int8", offset=64), sbuf(1, 6, "fp32"))
    np.testing.assert_array_equal(run_instruction(tc, {"src": src})["dst"],
                                  [[127, -128, 2, 4, 0, 126]])


def test_copy_of_unwritten_memory_raises():
    b = ProgramBuilder("uninit")
    b.emit("vector", TensorCopy(sbuf(4, 8, "fp32", offset=64), sbuf(4, 8, "fp32")))
    with pytest.raises(UninitializedReadError, match=r"vector\[0\] tensor_copy .*: read of "
                                                     r"sbuf\[0:4\]\+0\[\[1,8\]\]:fp32"):
        execute_functional(b.build())


# ---- validation ---------------------------------------------------------------------------
def test_shape_mismatch():
    with pytest.raises(InstructionError, match=r"dst sbuf\[0:4\]\+0\[\[1,8\]\]:fp32 has shape "
                                               r"\[4, 8\] but src .* has \[8, 4\]"):
        TensorCopy(sbuf(4, 8, "fp32"), sbuf(8, 4, "fp32", offset=64))


@pytest.mark.parametrize("tc, stream, message", [
    (TensorCopy(sbuf(4, 8, "fp32"), psum(4, 8)), "gpsimd",
     r"gpsimd\[0\] tensor_copy .*: tensor_copy operand src=psum\[0:4\]\+0\[\[1,8\]\]:fp32: "
     r"gpsimd cannot use psum here \(allowed: sbuf\)"),
    (TensorCopy(psum(4, 8), sbuf(4, 8, "fp32")), "gpsimd",
     r"tensor_copy operand dst=psum.*: gpsimd cannot use psum here"),
    (TensorCopy(psum(4, 8), sbuf(4, 8, "fp32")), "tensor",
     r"tensor_copy runs on vector/scalar/gpsimd, not on tensor"),
    (TensorCopy(sbuf((32, 48), 8, "fp32"), sbuf((64, 48), 8, "fp32", offset=64)), "vector",
     r"tensor_copy operand dst: an operand of 48 partitions may start at partition \(0, 64\), "
     r"not 32"),
    (TensorCopy(sbuf(200, 8, "fp32"), sbuf(200, 8, "fp32", offset=64)), "vector",
     r"tensor_copy operand dst: .*partitions 0\.\.199 exceed the 128 partitions"),
    (TensorCopy(sbuf(4, 8, "fp32"), psum(4, 8, offset=16 * 1024)), "scalar",
     r"tensor_copy operand src: .*bytes 16384\.\.16415 fall outside the 16384-byte psum "
     r"partition"),
])
def test_validation_errors(tc, stream, message):
    with pytest.raises(ProgramError, match=message):
        validate_alone(tc, stream)


def test_gpsimd_psum_copy_fails_before_running():
    b = ProgramBuilder("gpsimd_psum")
    b.emit("vector", TensorCopy(psum(4, 8), sbuf(4, 8, "fp32")))
    b.sync("vector", "gpsimd", b.semaphore())
    b.emit("gpsimd", TensorCopy(sbuf(4, 8, "fp32", offset=64), psum(4, 8)))
    with pytest.raises(ProgramError, match=r"gpsimd\[1\] tensor_copy .*gpsimd cannot use psum"):
        execute_functional(b.build())
