"""Row-wise, numerically stable softmax over the last axis of x [R, C], 128 rows per tile: the
negated row maximum (Vector engine), exp(x - max) and its row sum in one Scalar-engine
`activation`, then a reciprocal and a multiply, or one divide (`NORMALIZE`), in fp32.
"""

from __future__ import annotations

import numpy as np

from kernels.library.common import cdiv, require, require_sbuf, span
from kernels.nki import NkiTensor, jit
from kernels.nki import isa as nisa
from kernels.nki import language as nl

P_MAX = nl.tile_size.pmax
NORMALIZATIONS = ("reciprocal", "divide")


def softmax_golden(x: np.ndarray, **_layout: object) -> np.ndarray:
    x = x.astype(np.float64)
    exps = np.exp(x - x.max(axis=-1, keepdims=True))
    return exps / exps.sum(axis=-1, keepdims=True)


@jit
def softmax(x: NkiTensor, NORMALIZE: str = "reciprocal") -> NkiTensor:
    """Softmax over the last axis of x [R, C]."""
    require(len(x.shape) == 2, f"softmax: x must be [R, C], got {x.shape}")
    require(NORMALIZE in NORMALIZATIONS,
            f"softmax: NORMALIZE={NORMALIZE!r} is not one of {NORMALIZATIONS}")
    R, C = x.shape
    # A row tile, its fp32 exponentials and the output tile, double buffered.
    require_sbuf("softmax", f"rows of C={C} elements", 2 * C * (2 * 4 + np.dtype(x.dtype).itemsize))
    out = nl.ndarray((R, C), dtype=x.dtype, buffer=nl.shared_hbm)
    for r in nl.affine_range(cdiv(R, P_MAX)):
        r0, p = span(r, P_MAX, R)
        # Load 128 rows.
        x_tile = nl.ndarray((p, C), dtype=x.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=x_tile, src=x[r0:r0 + p, :])
        # -max of each row (Vector engine).
        neg_max = nl.ndarray((p, 1), dtype=nl.float32, buffer=nl.sbuf)
        nisa.tensor_reduce(dst=neg_max, op=nl.max, data=x_tile, axis=1, negate=True)
        # exp(x - max) and its row sum in one Scalar-engine instruction.
        exps = nl.ndarray((p, C), dtype=nl.float32, buffer=nl.sbuf)
        row_sum = nl.ndarray((p, 1), dtype=nl.float32, buffer=nl.sbuf)
        nisa.activation(dst=exps, op=nl.exp, data=x_tile, bias=neg_max, reduce_op=nl.add,
                        reduce_res=row_sum, reduce_cmd=nisa.reduce_cmd.reset_reduce)
        # Normalise: multiply by 1/sum, or divide by the sum.
        y_tile = nl.ndarray((p, C), dtype=out.dtype, buffer=nl.sbuf)
        if NORMALIZE == "reciprocal":
            inverse = nl.ndarray((p, 1), dtype=nl.float32, buffer=nl.sbuf)
            nisa.reciprocal(dst=inverse, data=row_sum)
            nisa.tensor_scalar(dst=y_tile, data=exps, op0=nl.multiply, operand0=inverse)
        else:
            nisa.tensor_scalar(dst=y_tile, data=exps, op0=nl.divide, operand0=row_sum)
        # Store.
        nisa.dma_copy(dst=out[r0:r0 + p, :], src=y_tile)
    return out
