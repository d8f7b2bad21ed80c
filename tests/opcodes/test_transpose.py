"""transpose: dst[F, P] = src[P, F].T through the Tensor engine into PSUM (exact: a product with
the identity), cast to dst's dtype."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from isa import INF2, InstructionError, ProgramError, Space, Transpose, psum, sbuf
from tests.conftest import rounded, run_instruction, validate_alone
from tests.strategies import (
    FLOAT_DTYPES,
    access_patterns,
    psum_bank,
    random_values,
    sbuf_slot,
    seeds,
)

WIDE = dataclasses.replace(INF2, name="wide", partitions=256)


@st.composite
def transposes(draw):
    rows, free = draw(st.integers(1, 128)), draw(st.integers(1, 128))
    src = draw(access_patterns(Space.SBUF, draw(st.sampled_from(FLOAT_DTYPES)), rows, free,
                               region=sbuf_slot(0)))
    dst = draw(access_patterns(Space.PSUM, draw(st.sampled_from(FLOAT_DTYPES)), free, rows,
                               region=psum_bank(draw(st.integers(0, 7)))))
    return Transpose(dst, src)


@given(transposes(), seeds())
def test_transpose_matches_numpy(tr, seed):
    src = random_values(tr.src.dtype, tr.src.shape, seed)
    out = run_instruction(tr, {"src": src})["dst"]
    expected = rounded(src.reshape(tr.src.partitions, -1).T, tr.dst.dtype)
    np.testing.assert_array_equal(out.reshape(expected.shape).view(f"u{tr.dst.dtype.itemsize}"),
                                  expected.view(f"u{tr.dst.dtype.itemsize}"))


def test_full_tile():
    tr = Transpose(psum(128, 128), sbuf(128, 128, "fp32"))
    src = random_values("fp32", (128, 128), 3)
    np.testing.assert_array_equal(run_instruction(tr, {"src": src})["dst"], src.T)


def test_shape_mismatch():
    with pytest.raises(InstructionError, match=r"transpose of sbuf\[0:4\]\+0\[\[1,8\]\]:fp32 "
                                               r"\[4, 8\] needs dst \[8, 4\], got "
                                               r"psum\[0:4\]\+0\[\[1,8\]\]:fp32"):
        Transpose(psum(4, 8), sbuf(4, 8, "fp32"))


def test_free_size_over_the_limit():
    with pytest.raises(ProgramError, match=r"transpose free size 129 exceeds 128"):
        validate_alone(Transpose(psum(129, 4), sbuf(4, 129, "fp32")), target=WIDE)


@pytest.mark.parametrize("tr, stream, message", [
    (Transpose(sbuf(8, 4, "fp32", offset=4096), sbuf(4, 8, "fp32")), "tensor",
     r"transpose operand dst=.*: tensor cannot use sbuf here \(allowed: psum\)"),
    (Transpose(psum(8, 4), psum(4, 8, offset=4096)), "tensor",
     r"transpose operand src=.*: tensor cannot use psum here \(allowed: sbuf\)"),
    (Transpose(psum(8, 4), sbuf(4, 8, "fp32")), "vector",
     r"transpose runs on tensor, not on vector"),
    (Transpose(psum(8, 4), sbuf((16, 4), 8, "fp32")), "tensor",
     r"transpose operand src: an operand of 4 partitions may start at partition "
     r"\(0, 32, 64, 96\), not 16"),
])
def test_transpose_validation_errors(tr, stream, message):
    with pytest.raises(ProgramError, match=message):
        validate_alone(tr, stream)
