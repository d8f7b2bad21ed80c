"""Layer norm (bn_stats/bn_aggr statistics, or plain reductions) and RMS norm over the last axis
of x [R, C], 128 rows per tile, gamma/beta replicated to every partition once.  APPLY_ENGINE
places the per-row x * rstd (- mean * rstd) on the Vector engine (`tensor_scalar`) or the
Scalar engine (`activation` with per-partition scale and bias), which relieves the Vector engine.
"""

from __future__ import annotations

import numpy as np

from kernels.library.common import cdiv, require, require_sbuf, span
from kernels.nki import NkiTensor, jit
from kernels.nki import isa as nisa
from kernels.nki import language as nl

P_MAX = nl.tile_size.pmax
BN_FMAX = nl.tile_size.bn_stats_fmax
APPLY_ENGINES = ("vector", "scalar")


# ---- goldens -------------------------------------------------------------------------------------
def layernorm_golden(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float = 1e-5,
                     **_layout: object) -> np.ndarray:
    x = x.astype(np.float64)
    centred = x - x.mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(np.square(centred).mean(axis=-1, keepdims=True) + eps)
    return centred * rstd * gamma.astype(np.float64) + beta.astype(np.float64)


def rmsnorm_golden(x: np.ndarray, gamma: np.ndarray, eps: float = 1e-6,
                   **_layout: object) -> np.ndarray:
    x = x.astype(np.float64)
    rstd = 1.0 / np.sqrt(np.square(x).mean(axis=-1, keepdims=True) + eps)
    return x * rstd * gamma.astype(np.float64)


# ---- shared steps --------------------------------------------------------------------------------
def _check(kernel: str, x: NkiTensor, params: dict[str, NkiTensor],
           APPLY_ENGINE: str) -> tuple[int, int]:
    require(len(x.shape) == 2, f"{kernel}: x must be [R, C], got {x.shape}")
    R, C = x.shape
    for name, param in params.items():
        require(tuple(param.shape) == (C,), f"{kernel}: {name} must be [{C}], got {param.shape}")
    require(APPLY_ENGINE in APPLY_ENGINES,
            f"{kernel}: APPLY_ENGINE={APPLY_ENGINE!r} is not one of {APPLY_ENGINES}")
    # Replicated parameters, plus a row tile, an fp32 working tile and the output, double
    # buffered.
    require_sbuf(kernel, f"rows of C={C} elements", C * 4 * (len(params) + 2 * 3))
    return R, C


def _replicate(param: NkiTensor, partitions: int, C: int) -> NkiTensor:
    """param [C] replicated to `partitions` partitions (fp32), one DMA with partition step 0."""
    param_tile = nl.ndarray((partitions, C), dtype=nl.float32, buffer=nl.sbuf)
    nisa.dma_copy(dst=param_tile, src=param.ap([[0, partitions], [1, C]], offset=0))
    return param_tile


def _rstd(variance: NkiTensor, eps: float, p: int) -> NkiTensor:
    """(variance + eps)^-1/2 per partition: one tensor_scalar (add, then power)."""
    rstd = nl.ndarray((p, 1), dtype=nl.float32, buffer=nl.sbuf)
    nisa.tensor_scalar(dst=rstd, data=variance, op0=nl.add, operand0=eps, op1=nl.power,
                       operand1=-0.5)
    return rstd


def _normalise(dst: NkiTensor, x_tile: NkiTensor, rstd: NkiTensor, neg_mean: NkiTensor | None,
               APPLY_ENGINE: str) -> None:
    """dst = (x + neg_mean) * rstd (neg_mean None: x * rstd) on the chosen engine."""
    p = x_tile.shape[0]
    if APPLY_ENGINE == "vector":
        if neg_mean is None:
            nisa.tensor_scalar(dst=dst, data=x_tile, op0=nl.multiply, operand0=rstd)
        else:
            nisa.tensor_scalar(dst=dst, data=x_tile, op0=nl.add, operand0=neg_mean,
                               op1=nl.multiply, operand1=rstd)
        return
    # Scalar engine: copy(x * rstd + bias) with bias = neg_mean * rstd.
    bias = None
    if neg_mean is not None:
        bias = nl.ndarray((p, 1), dtype=nl.float32, buffer=nl.sbuf)
        nisa.tensor_tensor(dst=bias, data1=neg_mean, data2=rstd, op=nl.multiply)
    nisa.activation(dst=dst, op=nl.copy, data=x_tile, scale=rstd, bias=bias)


def _affine_and_store(out: NkiTensor, r0: int, normed: NkiTensor, gamma_tile: NkiTensor,
                      beta_tile: NkiTensor | None) -> None:
    """out rows = normed * gamma (+ beta), rounded to out's dtype by the last step."""
    p, C = normed.shape
    y_tile = nl.ndarray((p, C), dtype=out.dtype, buffer=nl.sbuf)
    if beta_tile is None:
        nisa.tensor_tensor(dst=y_tile, data1=normed, data2=gamma_tile[0:p, :], op=nl.multiply)
    else:
        nisa.tensor_tensor(dst=normed, data1=normed, data2=gamma_tile[0:p, :], op=nl.multiply)
        nisa.tensor_tensor(dst=y_tile, data1=normed, data2=beta_tile[0:p, :], op=nl.add)
    nisa.dma_copy(dst=out[r0:r0 + p, :], src=y_tile)


def _load_rows(x: NkiTensor, r0: int, p: int, C: int) -> NkiTensor:
    x_tile = nl.ndarray((p, C), dtype=x.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=x_tile, src=x[r0:r0 + p, :])
    return x_tile


# ---- layernorm with bn_stats / bn_aggr -----------------------------------------------------------
@jit
def layernorm(x: NkiTensor, gamma: NkiTensor, beta: NkiTensor, eps: float = 1e-5,
              APPLY_ENGINE: str = "vector") -> NkiTensor:
    """Layer normalisation of each row of x [R, C] with bn_stats/bn_aggr statistics."""
    R, C = _check("layernorm", x, {"gamma": gamma, "beta": beta}, APPLY_ENGINE)
    out = nl.ndarray((R, C), dtype=x.dtype, buffer=nl.shared_hbm)
    # gamma and beta on every partition, loaded once.
    gamma_tile = _replicate(gamma, min(R, P_MAX), C)
    beta_tile = _replicate(beta, min(R, P_MAX), C)
    chunks = cdiv(C, BN_FMAX)
    for r in nl.affine_range(cdiv(R, P_MAX)):
        r0, p = span(r, P_MAX, R)
        x_tile = _load_rows(x, r0, p, C)
        # (count, mean, M2) of each chunk of at most bn_stats_fmax elements.
        stats = nl.ndarray((p, 6 * chunks), dtype=nl.float32, buffer=nl.sbuf)
        for i in nl.affine_range(chunks):
            c0, f = span(i, BN_FMAX, C)
            nisa.bn_stats(dst=stats[:, 6 * i:6 * i + 6], data=x_tile[:, c0:c0 + f])
        # Aggregate the chunks into (mean, variance) per row.
        mean_var = nl.ndarray((p, 2), dtype=nl.float32, buffer=nl.sbuf)
        nisa.bn_aggr(dst=mean_var, data=stats)
        # rstd = (var + eps)^-1/2 and -mean.
        rstd = _rstd(mean_var[:, 1:2], eps, p)
        neg_mean = nl.ndarray((p, 1), dtype=nl.float32, buffer=nl.sbuf)
        nisa.tensor_scalar(dst=neg_mean, data=mean_var[:, 0:1], op0=nl.multiply, operand0=-1.0)
        # Normalise, scale by gamma, shift by beta, store.
        normed = nl.ndarray((p, C), dtype=nl.float32, buffer=nl.sbuf)
        _normalise(normed, x_tile, rstd, neg_mean, APPLY_ENGINE)
        _affine_and_store(out, r0, normed, gamma_tile, beta_tile)
    return out


# ---- layernorm from reductions -------------------------------------------------------------------
@jit
def layernorm_naive(x: NkiTensor, gamma: NkiTensor, beta: NkiTensor, eps: float = 1e-5,
                    APPLY_ENGINE: str = "vector") -> NkiTensor:
    """Layer normalisation of each row of x [R, C]: mean and variance by reductions."""
    R, C = _check("layernorm_naive", x, {"gamma": gamma, "beta": beta}, APPLY_ENGINE)
    out = nl.ndarray((R, C), dtype=x.dtype, buffer=nl.shared_hbm)
    gamma_tile = _replicate(gamma, min(R, P_MAX), C)
    beta_tile = _replicate(beta, min(R, P_MAX), C)
    for r in nl.affine_range(cdiv(R, P_MAX)):
        r0, p = span(r, P_MAX, R)
        x_tile = _load_rows(x, r0, p, C)
        # -mean = -sum(x) / C.
        row_sum = nl.ndarray((p, 1), dtype=nl.float32, buffer=nl.sbuf)
        nisa.tensor_reduce(dst=row_sum, op=nl.add, data=x_tile, axis=1)
        neg_mean = nl.ndarray((p, 1), dtype=nl.float32, buffer=nl.sbuf)
        nisa.tensor_scalar(dst=neg_mean, data=row_sum, op0=nl.multiply, operand0=-1.0 / C)
        # Centre the rows, then var = sum((x - mean)^2 / C) from a summing square.
        centred = nl.ndarray((p, C), dtype=nl.float32, buffer=nl.sbuf)
        nisa.tensor_scalar(dst=centred, data=x_tile, op0=nl.add, operand0=neg_mean)
        squares = nl.ndarray((p, C), dtype=nl.float32, buffer=nl.sbuf)
        variance = nl.ndarray((p, 1), dtype=nl.float32, buffer=nl.sbuf)
        nisa.activation(dst=squares, op=nl.square, data=centred, scale=float(C) ** -0.5,
                        reduce_op=nl.add, reduce_res=variance,
                        reduce_cmd=nisa.reduce_cmd.reset_reduce)
        # Normalise the centred rows, scale by gamma, shift by beta, store.
        rstd = _rstd(variance, eps, p)
        _normalise(centred, centred, rstd, None, APPLY_ENGINE)
        _affine_and_store(out, r0, centred, gamma_tile, beta_tile)
    return out


# ---- rmsnorm -------------------------------------------------------------------------------------
@jit
def rmsnorm(x: NkiTensor, gamma: NkiTensor, eps: float = 1e-6,
            APPLY_ENGINE: str = "vector") -> NkiTensor:
    """RMS normalisation of each row of x [R, C]: x * (mean(x^2) + eps)^-1/2 * gamma."""
    R, C = _check("rmsnorm", x, {"gamma": gamma}, APPLY_ENGINE)
    out = nl.ndarray((R, C), dtype=x.dtype, buffer=nl.shared_hbm)
    gamma_tile = _replicate(gamma, min(R, P_MAX), C)
    for r in nl.affine_range(cdiv(R, P_MAX)):
        r0, p = span(r, P_MAX, R)
        x_tile = _load_rows(x, r0, p, C)
        # mean(x^2): the Scalar engine squares x / sqrt(C) and sums the row.
        squares = nl.ndarray((p, C), dtype=nl.float32, buffer=nl.sbuf)
        mean_square = nl.ndarray((p, 1), dtype=nl.float32, buffer=nl.sbuf)
        nisa.activation(dst=squares, op=nl.square, data=x_tile, scale=float(C) ** -0.5,
                        reduce_op=nl.add, reduce_res=mean_square,
                        reduce_cmd=nisa.reduce_cmd.reset_reduce)
        # x * rstd, then * gamma, store.
        rstd = _rstd(mean_square, eps, p)
        _normalise(squares, x_tile, rstd, None, APPLY_ENGINE)
        _affine_and_store(out, r0, squares, gamma_tile, None)
    return out
