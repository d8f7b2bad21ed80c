"""2-D transpose out[C, R] = x[R, C].T, any shape: on the Tensor engine (`nc_transpose` into
PSUM, BANDS_PER_STORE row bands side by side in one PSUM bank per eviction and store), or by the
DMA engines alone (a strided access pattern over x per [128, TILE_R] tile).
"""

from __future__ import annotations

import numpy as np

from kernels.library.common import cdiv, require, require_sbuf, span
from kernels.nki import NkiTensor, jit
from kernels.nki import isa as nisa
from kernels.nki import language as nl

P_MAX = nl.tile_size.pmax
PSUM_FMAX = nl.tile_size.psum_fmax


def transpose_golden(x: np.ndarray, **_layout: object) -> np.ndarray:
    return np.ascontiguousarray(x.T).astype(np.float64)


@jit
def transpose(x: NkiTensor, BANDS_PER_STORE: int = 4) -> NkiTensor:
    """out = x.T through the PE array (nc_transpose into PSUM)."""
    require(len(x.shape) == 2, f"transpose: x must be [R, C], got {x.shape}")
    require(1 <= BANDS_PER_STORE <= PSUM_FMAX // P_MAX,
            f"transpose: BANDS_PER_STORE={BANDS_PER_STORE} must be 1..{PSUM_FMAX // P_MAX}: "
            f"that many transposed 128-row bands share one fp32 PSUM tile of at most "
            f"nl.tile_size.psum_fmax={PSUM_FMAX} columns")
    R, C = x.shape
    itemsize = np.dtype(x.dtype).itemsize
    require_sbuf("transpose", f"BANDS_PER_STORE={BANDS_PER_STORE} bands of C={C} columns "
                 f"(double buffered)", 2 * BANDS_PER_STORE * C * itemsize)
    out = nl.ndarray((C, R), dtype=x.dtype, buffer=nl.shared_hbm)
    GROUP_R = BANDS_PER_STORE * P_MAX  # rows of x (columns of out) per PSUM tile
    for g in nl.affine_range(cdiv(R, GROUP_R)):
        g0, group_rows = span(g, GROUP_R, R)
        # Load the group's row bands of x, each [<=128 rows, C].
        bands = []
        for b in range(cdiv(group_rows, P_MAX)):
            b0, p = span(b, P_MAX, group_rows)
            band = nl.ndarray((p, C), dtype=x.dtype, buffer=nl.sbuf)
            nisa.dma_copy(dst=band, src=x[g0 + b0:g0 + b0 + p, :])
            bands.append(band)
        for j in nl.affine_range(cdiv(C, P_MAX)):
            c0, f = span(j, P_MAX, C)
            # Transpose block j of every band side by side into one PSUM tile [f, group_rows].
            t_psum = nl.ndarray((f, group_rows), dtype=nl.float32, buffer=nl.psum)
            for b, band in enumerate(bands):
                b0, p = span(b, P_MAX, group_rows)
                nisa.nc_transpose(dst=t_psum[:, b0:b0 + p], data=band[:, c0:c0 + f])
            # One eviction (cast back to x's dtype) and one store for the whole group.
            t_sbuf = nl.ndarray((f, group_rows), dtype=x.dtype, buffer=nl.sbuf)
            nisa.tensor_copy(dst=t_sbuf, src=t_psum)
            nisa.dma_copy(dst=out[c0:c0 + f, g0:g0 + group_rows], src=t_sbuf)
    return out


@jit
def transpose_dma(x: NkiTensor, TILE_R: int = 512) -> NkiTensor:
    """out = x.T with strided DMA loads: tiles of [128 columns of x, TILE_R rows of x]."""
    require(len(x.shape) == 2, f"transpose_dma: x must be [R, C], got {x.shape}")
    R, C = x.shape
    require(TILE_R >= 1, f"transpose_dma: TILE_R={TILE_R} must be >= 1")
    require_sbuf("transpose_dma", f"TILE_R={TILE_R} (double buffered)",
                 2 * TILE_R * np.dtype(x.dtype).itemsize)
    out = nl.ndarray((C, R), dtype=x.dtype, buffer=nl.shared_hbm)
    for j in nl.affine_range(cdiv(C, P_MAX)):
        c0, f = span(j, P_MAX, C)
        for i in nl.affine_range(cdiv(R, TILE_R)):
            r0, rows = span(i, TILE_R, R)
            # Load x[r0:r0+rows, c0:c0+f] transposed: partition step 1, free step C.
            t_tile = nl.ndarray((f, rows), dtype=x.dtype, buffer=nl.sbuf)
            nisa.dma_copy(dst=t_tile, src=x.ap([[1, f], [C, rows]], offset=r0 * C + c0))
            # Store it as contiguous rows of out.
            nisa.dma_copy(dst=out[c0:c0 + f, r0:r0 + rows], src=t_tile)
    return out
