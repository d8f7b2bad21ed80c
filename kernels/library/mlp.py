"""Transformer MLP block out = act(x @ w1) @ w2 (GELU, its tanh approximation, SiLU or ReLU),
both weights resident in SBUF, TOKEN_TILE tokens per pass, the activation applied by the Scalar
engine on the way out of PSUM so the hidden layer never leaves SBUF.
"""

from __future__ import annotations

import numpy as np

from kernels.library.common import cdiv, require, require_sbuf, span, spans
from kernels.library.elementwise import UNARY_GOLDEN
from kernels.nki import NkiTensor, jit
from kernels.nki import isa as nisa
from kernels.nki import language as nl

P_MAX = nl.tile_size.pmax
N_MAX = nl.tile_size.gemm_moving_fmax
ACTIVATIONS = {"gelu": nl.gelu, "gelu_apprx_tanh": nl.gelu_apprx_tanh, "silu": nl.silu,
               "relu": nl.relu}


def mlp_golden(x: np.ndarray, w1: np.ndarray, w2: np.ndarray, activation: str = "gelu",
               **_layout: object) -> np.ndarray:
    hidden = x.astype(np.float64) @ w1.astype(np.float64)
    return UNARY_GOLDEN[activation](hidden) @ w2.astype(np.float64)


@jit
def mlp(x: NkiTensor, w1: NkiTensor, w2: NkiTensor, activation: str = "gelu",
        TOKEN_TILE: int = N_MAX) -> NkiTensor:
    """out[T, D] = act(x @ w1) @ w2 for x [T, D], w1 [D, F], w2 [F, D], any T, D, F.

    A larger TOKEN_TILE (at most 512, the moving free size) makes the first matmuls longer:
    fewer, fuller instructions for the same work.
    """
    require(len(x.shape) == 2 and len(w1.shape) == 2 and len(w2.shape) == 2,
            f"mlp: x, w1, w2 must be 2-D, got {x.shape}, {w1.shape}, {w2.shape}")
    T, D = x.shape
    F = w1.shape[1]
    require(tuple(w1.shape) == (D, F) and tuple(w2.shape) == (F, D),
            f"mlp: x [T, D]={x.shape} needs w1 [D, F] and w2 [F, D], got {w1.shape}, "
            f"{w2.shape}")
    require(activation in ACTIVATIONS,
            f"mlp: activation={activation!r} is not one of {sorted(ACTIVATIONS)}")
    require(TOKEN_TILE % P_MAX == 0 and P_MAX <= TOKEN_TILE <= N_MAX,
            f"mlp: TOKEN_TILE={TOKEN_TILE} must be a multiple of {P_MAX} up to "
            f"nl.tile_size.gemm_moving_fmax={N_MAX} (the moving tile of w1^T x^T)")
    itemsize = np.dtype(x.dtype).itemsize
    d_tiles, f_tiles = cdiv(D, P_MAX), cdiv(F, P_MAX)
    require_sbuf("mlp", f"resident w1 ({d_tiles} x {F}) and w2 ({f_tiles} x {D}) plus one "
                 f"token tile's x^T and h^T (TOKEN_TILE={TOKEN_TILE}, double buffered)",
                 (d_tiles * F + f_tiles * D + 2 * (d_tiles + f_tiles) * TOKEN_TILE
                  + 2 * D) * itemsize)
    out = nl.ndarray((T, D), dtype=x.dtype, buffer=nl.shared_hbm)
    # Resident weights: w1 as [128 rows of D, F] tiles, w2 as [128 rows of F, D] tiles.
    w1_tiles, w2_tiles = [], []
    for _, d0, dk in spans(D, P_MAX):
        w1_tile = nl.ndarray((dk, F), dtype=w1.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=w1_tile, src=w1[d0:d0 + dk, :])
        w1_tiles.append(w1_tile)
    for _, f0, fk in spans(F, P_MAX):
        w2_tile = nl.ndarray((fk, D), dtype=w2.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=w2_tile, src=w2[f0:f0 + fk, :])
        w2_tiles.append(w2_tile)
    for tt in nl.affine_range(cdiv(T, TOKEN_TILE)):
        t0, ts = span(tt, TOKEN_TILE, T)
        # 1. x^T [D, ts]: load 128-token chunks, transpose each 128-column block.
        x_chunks = []
        for _, c0, tc in spans(ts, P_MAX):
            x_chunk = nl.ndarray((tc, D), dtype=x.dtype, buffer=nl.sbuf)
            nisa.dma_copy(dst=x_chunk, src=x[t0 + c0:t0 + c0 + tc, :])
            x_chunks.append(x_chunk)
        xT_tiles = []
        for _, d0, dk in spans(D, P_MAX):
            xT_psum = nl.ndarray((dk, ts), dtype=nl.float32, buffer=nl.psum)
            for c, c0, tc in spans(ts, P_MAX):
                nisa.nc_transpose(dst=xT_psum[:, c0:c0 + tc], data=x_chunks[c][:, d0:d0 + dk])
            xT = nl.ndarray((dk, ts), dtype=x.dtype, buffer=nl.sbuf)
            nisa.tensor_copy(dst=xT, src=xT_psum)
            xT_tiles.append(xT)
        # 2. h^T = act(w1^T x^T), 128 rows of F at a time, activated out of PSUM.
        hT_tiles = []
        for _, f0, fk in spans(F, P_MAX):
            h_psum = nl.ndarray((fk, ts), dtype=nl.float32, buffer=nl.psum)
            for d in nl.affine_range(d_tiles):
                nisa.nc_matmul(dst=h_psum, stationary=w1_tiles[d][:, f0:f0 + fk],
                               moving=xT_tiles[d])
            hT = nl.ndarray((fk, ts), dtype=x.dtype, buffer=nl.sbuf)
            nisa.activation(dst=hT, op=ACTIVATIONS[activation], data=h_psum)
            hT_tiles.append(hT)
        # 3. out = h w2 per 128-token chunk and 512 output columns, accumulating over F.
        for _, c0, tc in spans(ts, P_MAX):
            for _, n0, ns in spans(D, N_MAX):
                o_psum = nl.ndarray((tc, ns), dtype=nl.float32, buffer=nl.psum)
                for f in nl.affine_range(f_tiles):
                    nisa.nc_matmul(dst=o_psum, stationary=hT_tiles[f][:, c0:c0 + tc],
                                   moving=w2_tiles[f][:, n0:n0 + ns])
                o_tile = nl.ndarray((tc, ns), dtype=out.dtype, buffer=nl.sbuf)
                nisa.tensor_copy(dst=o_tile, src=o_psum)
                nisa.dma_copy(dst=out[t0 + c0:t0 + c0 + tc, n0:n0 + ns], src=o_tile)
    return out
