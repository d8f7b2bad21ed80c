"""iota: dst[p, i...] = base + channel_multiplier * p + sum_j steps[j] * i_j on GpSimd, with p
counted from the operand's first partition, rounded to dst's dtype."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from isa import InstructionError, Iota, ProgramError, psum, sbuf
from tests.conftest import rounded, run_instruction, validate_alone
from tests.strategies import dtypes, placed

AFFINE = st.integers(-300, 300)


@st.composite
def iotas(draw):
    dst = draw(placed("iota", "dst", "gpsimd", 0, draw(dtypes()), draw(st.integers(1, 64))))
    return Iota(dst, draw(AFFINE), draw(AFFINE), tuple(draw(AFFINE) for _ in dst.axes))


@given(iotas())
def test_iota_matches_the_affine_formula(io):
    out = run_instruction(io, {})["dst"]
    expected = np.empty(io.dst.shape, np.int64)
    for index in itertools.product(*(range(n) for n in io.dst.shape)):
        p, *free = index
        expected[index] = io.base + io.channel_multiplier * p + sum(
            s * i for s, i in zip(io.steps, free))
    expected = rounded(expected, io.dst.dtype)
    words = f"u{io.dst.dtype.itemsize}"
    np.testing.assert_array_equal(out.view(words), expected.view(words))


def test_iota_partition_index_starts_at_the_operand():
    out = run_instruction(Iota(sbuf((64, 3), (2, 2), "int32"), 10, 100, (1, 1000)), {})["dst"]
    # value[p, i, j] = 10 + 100 p + 1 i + 1000 j, p = 0 at partition 64
    np.testing.assert_array_equal(out, [[[10, 1010], [11, 1011]], [[110, 1110], [111, 1111]],
                                        [[210, 1210], [211, 1211]]])


def test_steps_must_match_the_free_axes():
    with pytest.raises(InstructionError, match=r"iota steps \(1,\) need one step per free axis "
                                               r"of sbuf\[0:4\]\+0\[\[8,2\],\[1,8\]\]:int32 "
                                               r"\(2\)"):
        Iota(sbuf(4, (2, 8), "int32"), 0, 1, (1,))


@pytest.mark.parametrize("io, stream, message", [
    (Iota(sbuf(4, 8, "int32"), 0, 1, (1,)), "vector", r"iota runs on gpsimd, not on vector"),
    (Iota(psum(4, 8, "int32"), 0, 1, (1,)), "gpsimd",
     r"iota operand dst=psum\[0:4\]\+0\[\[1,8\]\]:int32: gpsimd cannot use psum here "
     r"\(allowed: sbuf\)"),
    (Iota(sbuf(4, 8, "int32", offset=192 * 1024 - 4), 0, 1, (1,)), "gpsimd",
     r"iota operand dst: .*fall outside the 196608-byte sbuf partition"),
])
def test_validation_errors(io, stream, message):
    with pytest.raises(ProgramError, match=message):
        validate_alone(io, stream)
