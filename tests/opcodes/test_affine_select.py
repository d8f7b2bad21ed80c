"""affine_select: dst = src where (base + channel_multiplier * p + sum_j steps[j] * i_j) <cmp> 0,
else fill, on GpSimd (the causal-mask primitive).  The fill is rounded to dst's dtype like any
written value."""

from __future__ import annotations

import itertools
import operator

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from isa import AffineSelect, InstructionError, ProgramError, psum, sbuf
from isa.instructions import AFFINE_CMPS
from tests.conftest import rounded, run_instruction, validate_alone
from tests.strategies import dtypes, placed, random_values, seeds

COMPARE = {"ge": operator.ge, "gt": operator.gt, "le": operator.le, "lt": operator.lt,
           "eq": operator.eq, "ne": operator.ne}
AFFINE = st.integers(-6, 6)


def test_reference_covers_every_comparison():
    assert set(COMPARE) == set(AFFINE_CMPS)


@st.composite
def selects(draw):
    rows, free = draw(st.integers(1, 32)), draw(st.integers(1, 48))
    dt = draw(dtypes())
    src = draw(placed("affine_select", "src", "gpsimd", 0, dt, rows, free))
    dst = draw(placed("affine_select", "dst", "gpsimd", 1, draw(dtypes()),
                      rows, free))
    fill = draw(st.one_of(st.floats(-1e4, 1e4, width=32), st.sampled_from([-np.inf, 0.0, 2.5])))
    return AffineSelect(dst, src, draw(st.sampled_from(AFFINE_CMPS)), fill, draw(AFFINE),
                        draw(AFFINE), tuple(draw(AFFINE) for _ in src.axes))


@given(selects(), seeds())
def test_affine_select_matches_an_elementwise_loop(sel, seed):
    src = random_values(sel.src.dtype, sel.src.shape, seed)
    out = run_instruction(sel, {"src": src}, "gpsimd")["dst"]
    fill = rounded(np.float64(sel.fill), sel.dst.dtype)
    expected = rounded(src, sel.dst.dtype)
    for index in itertools.product(*(range(n) for n in sel.src.shape)):
        p, *free = index
        affine = sel.base + sel.channel_multiplier * p + sum(s * i for s, i in
                                                             zip(sel.steps, free))
        if not COMPARE[sel.cmp](affine, 0):
            expected[index] = fill
    words = f"u{sel.dst.dtype.itemsize}"
    np.testing.assert_array_equal(out.reshape(expected.shape).view(words),
                                  expected.reshape(expected.shape).view(words))


def test_causal_mask():
    """Keep j <= p (p - j >= 0), fill the rest with -inf: a lower-triangular score matrix."""
    scores = np.arange(16, dtype=np.float32).reshape(4, 4)
    sel = AffineSelect(sbuf(4, 4, "fp32", offset=64), sbuf(4, 4, "fp32"), "ge", -np.inf, 0, 1,
                       (-1,))
    out = run_instruction(sel, {"src": scores})["dst"]
    np.testing.assert_array_equal(out, np.where(np.tril(np.ones((4, 4), bool)), scores, -np.inf))


@pytest.mark.parametrize("fill, expected", [(2.7, 3), (2.5, 2), (3.5, 4), (-np.inf, -128),
                                            (1e9, 127), (np.nan, 0)])
def test_fill_rounds_and_saturates_into_integer_tiles(fill, expected):
    sel = AffineSelect(sbuf(1, 4, "int8", offset=64), sbuf(1, 4, "int32"), "lt", fill, 0, 0,
                       (1,))
    out = run_instruction(sel, {"src": np.array([[1, 2, 3, 4]], np.int32)})["dst"]
    np.testing.assert_array_equal(out, [[expected] * 4])  # 0 < 0 is false: all filled


# ---- validation ---------------------------------------------------------------------------
SRC, DST = sbuf(4, (2, 8), "fp32"), sbuf(4, 16, "fp32", offset=128)


@pytest.mark.parametrize("args, message", [
    ((DST, SRC, "gte", 0.0, 0, 0, (1, 1)),
     r"unknown comparison 'gte'; supported: ge, gt, le, lt, eq, ne"),
    ((DST, SRC, "ge", 0.0, 0, 0, (1,)),
     r"affine_select steps \(1,\) need one step per free axis of "
     r"sbuf\[0:4\]\+0\[\[8,2\],\[1,8\]\]:fp32"),
    ((sbuf(4, 8, "fp32"), SRC, "ge", 0.0, 0, 0, (1, 1)),
     r"dst sbuf\[0:4\]\+0\[\[1,8\]\]:fp32 has shape \[4, 8\] but src .* has \[4, 16\]"),
])
def test_record_errors(args, message):
    with pytest.raises(InstructionError, match=message):
        AffineSelect(*args)


@pytest.mark.parametrize("sel, stream, message", [
    (AffineSelect(DST, SRC, "ge", 0.0, 0, 0, (1, 1)), "vector",
     r"affine_select runs on gpsimd, not on vector"),
    (AffineSelect(DST, psum(4, (2, 8)), "ge", 0.0, 0, 0, (1, 1)), "gpsimd",
     r"affine_select operand src=psum.*: gpsimd cannot use psum here \(allowed: sbuf\)"),
])
def test_validation_errors(sel, stream, message):
    with pytest.raises(ProgramError, match=message):
        validate_alone(sel, stream)
