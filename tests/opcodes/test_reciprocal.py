"""reciprocal: dst = 1 / src at full (fp32) precision on the Vector engine; 1/0 is inf."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from isa import InstructionError, ProgramError, Reciprocal, psum, sbuf
from tests.conftest import assert_matches, rounded, run_instruction, validate_alone
from tests.strategies import FLOAT_DTYPES, INT_DTYPES, placed, random_values, seeds


@st.composite
def reciprocals(draw):
    rows, free = draw(st.integers(1, 64)), draw(st.integers(1, 64))
    src = draw(placed("reciprocal", "src", "vector", 0,
                      draw(st.sampled_from(FLOAT_DTYPES + INT_DTYPES)), rows, free))
    dst = draw(placed("reciprocal", "dst", "vector", 1,
                      draw(st.sampled_from([d for d in FLOAT_DTYPES if d.name != "fp8_e4m3"])),
                      rows, free))
    return Reciprocal(dst, src)


@given(reciprocals(), seeds())
def test_reciprocal_matches_numpy(rc, seed):
    src = random_values(rc.src.dtype, rc.src.shape, seed)
    out = run_instruction(rc, {"src": src})["dst"]
    with np.errstate(divide="ignore"):
        expected = rounded(1.0 / src.astype(np.float64).reshape(rc.src.partitions, -1),
                           rc.dst.dtype)
    assert_matches(out.reshape(expected.shape), expected, rc.dst.dtype, atol=0)


def test_reciprocal_of_zero_and_signs():
    src = np.array([[0.0, -0.0, 4.0, -0.5]], np.float32)
    out = run_instruction(Reciprocal(psum(1, 4, offset=64), psum(1, 4)), {"src": src})["dst"]
    np.testing.assert_array_equal(out, [[np.inf, -np.inf, 0.25, -2.0]])


def test_shape_mismatch():
    with pytest.raises(InstructionError, match=r"dst sbuf\[0:4\]\+0\[\[1,8\]\]:fp32 has shape "
                                               r"\[4, 8\] but src .* has \[4, 9\]"):
        Reciprocal(sbuf(4, 8, "fp32"), sbuf(4, 9, "fp32", offset=64))


@pytest.mark.parametrize("stream", ["scalar", "gpsimd", "tensor", "dma0"])
def test_reciprocal_runs_on_vector_only(stream):
    with pytest.raises(ProgramError, match=rf"reciprocal runs on vector, not on {stream[:3]}"):
        validate_alone(Reciprocal(sbuf(4, 8, "fp32"), sbuf(4, 8, "fp32", offset=64)), stream)


def test_reciprocal_out_of_bounds():
    with pytest.raises(ProgramError, match=r"reciprocal operand src: .*bytes 196604\.\.196635 "
                                           r"fall outside the 196608-byte sbuf partition"):
        validate_alone(Reciprocal(sbuf(4, 8, "fp32"), sbuf(4, 8, "fp32", offset=192 * 1024 - 4)))
