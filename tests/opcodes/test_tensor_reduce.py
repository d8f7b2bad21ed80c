"""tensor_reduce: dst = reduce(src, op) over the chosen free axes (counted from 1, as in NKI),
optionally negated, on the Vector or GpSimd engine."""

from __future__ import annotations

from math import prod

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from isa import InstructionError, ProgramError, TensorReduce, psum, sbuf
from isa.instructions import REDUCE_OPS
from tests.conftest import assert_matches, rounded, run_instruction, validate_alone
from tests.strategies import FLOAT_DTYPES, INT_DTYPES, free_shapes, placed, random_values, seeds

REFERENCE = {"add": np.sum, "max": np.max, "min": np.min}


def test_reference_covers_every_reduce_op():
    assert set(REFERENCE) == set(REDUCE_OPS)


@st.composite
def reductions(draw):
    engine = draw(st.sampled_from(["vector", "gpsimd"]))
    rows = draw(st.integers(1, 32))
    shape = draw(free_shapes(max_axes=4, max_size=6))
    axes = tuple(draw(st.lists(st.integers(1, len(shape)), min_size=1, max_size=len(shape),
                               unique=True)))
    integer = draw(st.booleans())
    dtypes = INT_DTYPES if integer else FLOAT_DTYPES
    src = draw(placed("tensor_reduce", "src", engine, 0, draw(st.sampled_from(dtypes)), rows,
                      free_shape=shape))
    kept = prod(n for i, n in enumerate(shape, start=1) if i not in axes)
    dst_dtypes = [d for d in dtypes if d.name in ("int32", "int16", "fp32", "bf16")]
    dst = draw(placed("tensor_reduce", "dst", engine, 1, draw(st.sampled_from(dst_dtypes)),
                      rows, kept))
    return engine, TensorReduce(dst, src, draw(st.sampled_from(REDUCE_OPS)), axes,
                                draw(st.booleans()), draw(st.booleans()))


@given(reductions(), seeds())
def test_tensor_reduce_matches_numpy(case, seed):
    engine, tr = case
    src = random_values(tr.src.dtype, tr.src.shape, seed)
    out = run_instruction(tr, {"src": src}, engine)["dst"]
    wide = src.astype(np.float64 if tr.src.dtype.is_float else np.int64)
    expected = REFERENCE[tr.op](wide, axis=tr.axes)  # axes count free axes from 1: src is [P, ...]
    if tr.negate:
        expected = -expected
    expected = rounded(expected.reshape(tr.src.partitions, -1), tr.dst.dtype)
    if tr.dst.dtype.is_float and tr.op == "add":
        # an fp32 sum: a few ulps of the sum of magnitudes (reduced size at most 6^4)
        count = prod(n for i, n in enumerate(tr.src.free_shape, start=1) if i in tr.axes)
        bound = np.abs(wide).sum(axis=tr.axes).reshape(expected.shape) * count * 2.0**-24
        rtol = 1e-2 if tr.dst.dtype.name == "bf16" else 0.0
        error = np.abs(out.reshape(expected.shape).astype(np.float64) - expected.astype(np.float64))
        assert np.all(error <= bound + rtol * np.abs(expected.astype(np.float64)) + 1e-6)
    else:
        assert_matches(out.reshape(expected.shape), expected, tr.dst.dtype)


def test_row_sum_and_column_max_of_a_matrix():
    src = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    rows = TensorReduce(sbuf(2, 3, "fp32", offset=256), sbuf(2, (3, 4), "fp32"), "add", (2,))
    np.testing.assert_array_equal(run_instruction(rows, {"src": src})["dst"], src.sum(axis=2))
    cols = TensorReduce(sbuf(2, 4, "fp32", offset=256), sbuf(2, (3, 4), "fp32"), "max", (1,),
                        negate=True)
    np.testing.assert_array_equal(run_instruction(cols, {"src": src})["dst"], -src.max(axis=1))


# ---- validation ---------------------------------------------------------------------------
SRC = sbuf(4, (3, 5), "fp32")


@pytest.mark.parametrize("args, message", [
    ((sbuf(4, 3, "fp32"), SRC, "mean", (2,)),
     r"unknown reduce op 'mean'; supported: add, max, min"),
    ((sbuf(4, 3, "fp32"), SRC, "add", (0,)),
     r"reduce axes \(0,\) must be distinct free axes in 1\.\.2 of "
     r"sbuf\[0:4\]\+0\[\[5,3\],\[1,5\]\]"),
    ((sbuf(4, 3, "fp32"), SRC, "add", (3,)), r"reduce axes \(3,\) must be distinct free axes in "
                                             r"1\.\.2"),
    ((sbuf(4, 1, "fp32"), SRC, "add", (1, 1)), r"reduce axes \(1, 1\) must be distinct"),
    ((sbuf(4, 1, "fp32"), SRC, "add", ()), r"reduce axes \(\) must be distinct"),
    ((sbuf(4, 5, "fp32"), SRC, "add", (2,)),
     r"tensor_reduce dst sbuf\[0:4\]\+0\[\[1,5\]\]:fp32 must hold \[4, 3\]"),
    ((sbuf(2, 3, "fp32"), SRC, "add", (2,)), r"tensor_reduce dst .* must hold \[4, 3\]"),
])
def test_record_errors(args, message):
    with pytest.raises(InstructionError, match=message):
        TensorReduce(*args)


@pytest.mark.parametrize("tr, stream, message", [
    (TensorReduce(sbuf(4, 3, "fp32", offset=512), SRC, "add", (2,)), "scalar",
     r"tensor_reduce runs on vector/gpsimd, not on scalar"),
    (TensorReduce(psum(4, 3), SRC, "add", (2,)), "gpsimd",
     r"tensor_reduce operand dst=psum.*: gpsimd cannot use psum here"),
])
def test_validation_errors(tr, stream, message):
    with pytest.raises(ProgramError, match=message):
        validate_alone(tr, stream)
