"""Matrix multiplication result[M, N] = lhsT[K, M].T @ rhs[K, N] in the five steps of the NKI
matmul tutorial (aws-neuron-sdk `nki/guides/tutorials/matrix_multiplication.rst`), written from
its documented semantics: one tile, tiled, hoisted loads, blocked free dimensions, fully blocked.
K lies on the partitions of both operands; PSUM accumulates in fp32 and the result is cast to
lhsT's dtype on eviction.  The tiled steps take any shape, the blocked ones multiples of blocks.
"""

from __future__ import annotations

import numpy as np

from kernels.library.common import cdiv, require, require_sbuf, span
from kernels.nki import NkiTensor, jit
from kernels.nki import isa as nisa
from kernels.nki import language as nl

TILE_K_MAX = nl.tile_size.pmax  # contraction rows of one matmul (partitions)
TILE_M_MAX = nl.tile_size.gemm_stationary_fmax  # stationary free size (PE-array columns)
TILE_N_MAX = nl.tile_size.gemm_moving_fmax  # moving free size (one PSUM bank of fp32)
# Activations an epilogue may apply while evicting PSUM (None: no function).
EPILOGUE_ACTIVATIONS = {"none": None, "relu": nl.relu, "gelu": nl.gelu,
                        "gelu_apprx_tanh": nl.gelu_apprx_tanh, "silu": nl.silu, "tanh": nl.tanh,
                        "sigmoid": nl.sigmoid}


def matmul_golden(lhsT: np.ndarray, rhs: np.ndarray, **_layout: object) -> np.ndarray:
    """lhsT.T @ rhs in float64 from the (already rounded) inputs."""
    return lhsT.astype(np.float64).T @ rhs.astype(np.float64)


def _shapes(kernel: str, lhsT: NkiTensor, rhs: NkiTensor) -> tuple[int, int, int]:
    """(K, M, N), checking that the operands share their contraction axis."""
    K, M = lhsT.shape
    K_, N = rhs.shape
    require(K == K_, f"{kernel}: lhsT [K={K}, M={M}] and rhs [K={K_}, N={N}] must share K")
    return K, M, N


def _check_tiles(kernel: str, TILE_M: int, TILE_K: int, TILE_N: int) -> None:
    """Tile sizes must fit one matmul instruction (nl.tile_size)."""
    require(1 <= TILE_K <= TILE_K_MAX,
            f"{kernel}: contraction tile TILE_K={TILE_K} must be 1..{TILE_K_MAX} "
            f"(nl.tile_size.pmax)")
    require(1 <= TILE_M <= TILE_M_MAX,
            f"{kernel}: stationary tile TILE_M={TILE_M} must be 1..{TILE_M_MAX} "
            f"(nl.tile_size.gemm_stationary_fmax)")
    require(1 <= TILE_N <= TILE_N_MAX,
            f"{kernel}: moving tile TILE_N={TILE_N} must be 1..{TILE_N_MAX} "
            f"(nl.tile_size.gemm_moving_fmax)")


def _evict(result: NkiTensor, res_psum: NkiTensor, m0: int, n0: int,
           bias: NkiTensor | None = None, activation: str = "none") -> None:
    """Copy a PSUM result tile to SBUF (casting to the output dtype) and store it; with the
    epilogue, bias[n0:n0+n] is added to every row and `activation` applied on the way out of
    PSUM, in fp32, with one rounding to the output dtype."""
    m_size, n_size = res_psum.shape
    res_sb = nl.ndarray((m_size, n_size), dtype=result.dtype, buffer=nl.sbuf)
    func = EPILOGUE_ACTIVATIONS[activation]
    if bias is None and func is None:
        nisa.tensor_copy(dst=res_sb, src=res_psum)
    elif bias is None:
        nisa.activation(dst=res_sb, op=func, data=res_psum)
    else:
        # The bias slice replicated to every row's partition (partition step 0), in fp32.
        bias_tile = nl.ndarray((m_size, n_size), dtype=nl.float32, buffer=nl.sbuf)
        nisa.dma_copy(dst=bias_tile, src=bias.ap([[0, m_size], [1, n_size]], offset=n0))
        if func is None:
            nisa.tensor_tensor(dst=res_sb, data1=res_psum, data2=bias_tile, op=nl.add)
        else:
            pre = nl.ndarray((m_size, n_size), dtype=nl.float32, buffer=nl.sbuf)
            nisa.tensor_tensor(dst=pre, data1=res_psum, data2=bias_tile, op=nl.add)
            nisa.activation(dst=res_sb, op=func, data=pre)
    nisa.dma_copy(dst=result[m0:m0 + m_size, n0:n0 + n_size], src=res_sb)


def _check_epilogue(kernel: str, bias: NkiTensor | None, N: int, activation: str) -> None:
    require(activation in EPILOGUE_ACTIVATIONS,
            f"{kernel}: activation={activation!r} is not one of {sorted(EPILOGUE_ACTIVATIONS)}")
    require(bias is None or tuple(bias.shape) == (N,),
            f"{kernel}: bias must be [N={N}], got {None if bias is None else bias.shape}")


def _load(tensor: NkiTensor, k0: int, k_size: int, f0: int, f_size: int) -> NkiTensor:
    """A [k_size, f_size] SBUF tile of `tensor` from row k0, column f0 (one DMA)."""
    tile = nl.ndarray((k_size, f_size), dtype=tensor.dtype, buffer=nl.sbuf,
                      name=f"{tensor.name}_tile")
    nisa.dma_copy(dst=tile, src=tensor[k0:k0 + k_size, f0:f0 + f_size])
    return tile


# ---- step 1: one tile ----------------------------------------------------------------------------
@jit
def matmul_basic(lhsT: NkiTensor, rhs: NkiTensor) -> NkiTensor:
    """result[M, N] = lhsT.T @ rhs with a single nc_matmul: K <= 128, M <= 128, N <= 512."""
    K, M, N = _shapes("matmul_basic", lhsT, rhs)
    require(K <= TILE_K_MAX and M <= TILE_M_MAX and N <= TILE_N_MAX,
            f"matmul_basic: one matmul takes K <= {TILE_K_MAX} (nl.tile_size.pmax), M <= "
            f"{TILE_M_MAX} (gemm_stationary_fmax), N <= {TILE_N_MAX} (gemm_moving_fmax); got "
            f"K={K}, M={M}, N={N}")
    result = nl.ndarray((M, N), dtype=lhsT.dtype, buffer=nl.shared_hbm)
    # Load both operands into SBUF; K, the contraction axis, is the partition axis of both.
    lhsT_tile = _load(lhsT, 0, K, 0, M)
    rhs_tile = _load(rhs, 0, K, 0, N)
    # One matmul into PSUM, which holds the result in fp32.
    res_psum = nl.ndarray((M, N), dtype=nl.float32, buffer=nl.psum)
    nisa.nc_matmul(dst=res_psum, stationary=lhsT_tile, moving=rhs_tile)
    # Evict PSUM to SBUF in the output dtype, then store to HBM.
    _evict(result, res_psum, 0, 0)
    return result


# ---- step 2: tiled -------------------------------------------------------------------------------
@jit
def matmul_naive(lhsT: NkiTensor, rhs: NkiTensor, TILE_M: int = TILE_M_MAX,
                 TILE_K: int = TILE_K_MAX, TILE_N: int = TILE_N_MAX) -> NkiTensor:
    """Tiled matmul that loads both operand tiles for every nc_matmul (no reuse)."""
    K, M, N = _shapes("matmul_naive", lhsT, rhs)
    _check_tiles("matmul_naive", TILE_M, TILE_K, TILE_N)
    result = nl.ndarray((M, N), dtype=lhsT.dtype, buffer=nl.shared_hbm)
    for m in nl.affine_range(cdiv(M, TILE_M)):
        m0, m_size = span(m, TILE_M, M)
        for n in nl.affine_range(cdiv(N, TILE_N)):
            n0, n_size = span(n, TILE_N, N)
            # One PSUM tile accumulates the K tiles of this result tile.
            res_psum = nl.ndarray((m_size, n_size), dtype=nl.float32, buffer=nl.psum)
            for k in nl.affine_range(cdiv(K, TILE_K)):
                k0, k_size = span(k, TILE_K, K)
                # Load the stationary and the moving tile of this matmul from HBM.
                lhsT_tile = _load(lhsT, k0, k_size, m0, m_size)
                rhs_tile = _load(rhs, k0, k_size, n0, n_size)
                nisa.nc_matmul(dst=res_psum, stationary=lhsT_tile, moving=rhs_tile)
            # Evict the finished result tile and store it.
            _evict(result, res_psum, m0, n0)
    return result


# ---- step 3: hoisted loads -----------------------------------------------------------------------
@jit
def matmul_hoisted(lhsT: NkiTensor, rhs: NkiTensor, TILE_M: int = TILE_M_MAX,
                   TILE_K: int = TILE_K_MAX, TILE_N: int = TILE_N_MAX,
                   bias: NkiTensor | None = None, activation: str = "none") -> NkiTensor:
    """Tiled matmul with each operand column of K tiles loaded once per M (or N) tile.

    Optional epilogue (what a `linear` layer needs): result = activation(lhsT.T @ rhs + bias)
    with bias [N] added to every row, computed in fp32 while evicting PSUM.
    """
    K, M, N = _shapes("matmul_hoisted", lhsT, rhs)
    _check_tiles("matmul_hoisted", TILE_M, TILE_K, TILE_N)
    _check_epilogue("matmul_hoisted", bias, N, activation)
    k_tiles = cdiv(K, TILE_K)
    # One stationary column and one moving column, each double buffered.
    require_sbuf("matmul_hoisted", f"operand columns of K={K} ({k_tiles} tiles of TILE_M={TILE_M}"
                 f" and TILE_N={TILE_N}, double buffered)",
                 2 * k_tiles * (TILE_M + TILE_N) * np.dtype(lhsT.dtype).itemsize)
    result = nl.ndarray((M, N), dtype=lhsT.dtype, buffer=nl.shared_hbm)
    for m in nl.affine_range(cdiv(M, TILE_M)):
        m0, m_size = span(m, TILE_M, M)
        # Load the stationary column lhsT[:, m] (all its K tiles) once for every N tile.
        lhsT_tiles = [_load(lhsT, *span(k, TILE_K, K), m0, m_size) for k in range(k_tiles)]
        for n in nl.affine_range(cdiv(N, TILE_N)):
            n0, n_size = span(n, TILE_N, N)
            # Load the moving column rhs[:, n] (all its K tiles).
            rhs_tiles = [_load(rhs, *span(k, TILE_K, K), n0, n_size) for k in range(k_tiles)]
            # Accumulate the K tiles in PSUM, then evict and store.
            res_psum = nl.ndarray((m_size, n_size), dtype=nl.float32, buffer=nl.psum)
            for k in nl.affine_range(k_tiles):
                nisa.nc_matmul(dst=res_psum, stationary=lhsT_tiles[k], moving=rhs_tiles[k])
            _evict(result, res_psum, m0, n0, bias, activation)
    return result


# ---- step 4: blocked free dimensions -------------------------------------------------------------
def _check_blocks(kernel: str, sizes: dict[str, tuple[int, int]]) -> None:
    """Every dimension must be a whole number of blocks: sizes = {dim: (extent, block)}."""
    for dim, (extent, block) in sizes.items():
        require(block >= 1 and extent % block == 0,
                f"{kernel}: {dim}={extent} must be a multiple of its block BLOCK_{dim}={block}")


@jit
def matmul_blocked(lhsT: NkiTensor, rhs: NkiTensor, TILES_IN_BLOCK_M: int = 2,
                   TILES_IN_BLOCK_N: int = 1, TILE_M: int = TILE_M_MAX, TILE_K: int = TILE_K_MAX,
                   TILE_N: int = TILE_N_MAX) -> NkiTensor:
    """Blocks of TILES_IN_BLOCK_M x TILES_IN_BLOCK_N result tiles: each loaded stationary tile
    serves TILES_IN_BLOCK_N matmuls and each moving tile TILES_IN_BLOCK_M."""
    K, M, N = _shapes("matmul_blocked", lhsT, rhs)
    _check_tiles("matmul_blocked", TILE_M, TILE_K, TILE_N)
    BLOCK_M, BLOCK_N = TILE_M * TILES_IN_BLOCK_M, TILE_N * TILES_IN_BLOCK_N
    _check_blocks("matmul_blocked", {"M": (M, BLOCK_M), "N": (N, BLOCK_N), "K": (K, TILE_K)})
    k_tiles = K // TILE_K
    # One stationary and one moving block of K rows, each double buffered.
    require_sbuf("matmul_blocked", f"blocks BLOCK_M={BLOCK_M} x BLOCK_N={BLOCK_N} of K={K} rows "
                 f"(double buffered)", 2 * k_tiles * (BLOCK_M + BLOCK_N)
                 * np.dtype(lhsT.dtype).itemsize)
    result = nl.ndarray((M, N), dtype=lhsT.dtype, buffer=nl.shared_hbm)
    for m in nl.affine_range(M // BLOCK_M):
        # Load the stationary block: TILES_IN_BLOCK_M columns of K tiles.
        lhsT_tiles = [[_load(lhsT, k * TILE_K, TILE_K, m * BLOCK_M + bm * TILE_M, TILE_M)
                       for k in range(k_tiles)] for bm in range(TILES_IN_BLOCK_M)]
        for n in nl.affine_range(N // BLOCK_N):
            # Load the moving block: TILES_IN_BLOCK_N columns of K tiles.
            rhs_tiles = [[_load(rhs, k * TILE_K, TILE_K, n * BLOCK_N + bn * TILE_N, TILE_N)
                          for k in range(k_tiles)] for bn in range(TILES_IN_BLOCK_N)]
            # Every result tile of the block from the loaded tiles, accumulated over K in PSUM.
            for bm in nl.affine_range(TILES_IN_BLOCK_M):
                for bn in nl.affine_range(TILES_IN_BLOCK_N):
                    res_psum = nl.ndarray((TILE_M, TILE_N), dtype=nl.float32, buffer=nl.psum)
                    for k in nl.affine_range(k_tiles):
                        nisa.nc_matmul(dst=res_psum, stationary=lhsT_tiles[bm][k],
                                       moving=rhs_tiles[bn][k])
                    _evict(result, res_psum, m * BLOCK_M + bm * TILE_M,
                           n * BLOCK_N + bn * TILE_N)
    return result


# ---- step 5: fully blocked, accumulating K blocks in SBUF ----------------------------------------
@jit
def matmul(lhsT: NkiTensor, rhs: NkiTensor, TILES_IN_BLOCK_M: int = 2, TILES_IN_BLOCK_N: int = 1,
           TILES_IN_BLOCK_K: int = 4, TILE_M: int = TILE_M_MAX, TILE_K: int = TILE_K_MAX,
           TILE_N: int = TILE_N_MAX) -> NkiTensor:
    """All three dimensions blocked.  For each N block, the K blocks are visited in sequence:
    the rhs block [BLOCK_K, BLOCK_N] is loaded once and serves every M block; each result tile
    sums its BLOCK_K slice in PSUM and adds it to an fp32 accumulator in SBUF."""
    K, M, N = _shapes("matmul", lhsT, rhs)
    _check_tiles("matmul", TILE_M, TILE_K, TILE_N)
    BLOCK_M, BLOCK_N, BLOCK_K = (TILE_M * TILES_IN_BLOCK_M, TILE_N * TILES_IN_BLOCK_N,
                                 TILE_K * TILES_IN_BLOCK_K)
    _check_blocks("matmul", {"M": (M, BLOCK_M), "N": (N, BLOCK_N), "K": (K, BLOCK_K)})
    itemsize = np.dtype(lhsT.dtype).itemsize
    # Working set per partition: lhsT and rhs blocks (the next block's tiles are allocated while
    # the current ones are still read, so twice), the fp32 accumulators of a whole N block
    # column (twice as well when a next N block follows), and one eviction row.
    operand_blocks = TILES_IN_BLOCK_K * (BLOCK_M + BLOCK_N) * itemsize
    accumulator_bytes = (M // TILE_M) * BLOCK_N * 4 * min(N // BLOCK_N, 2)
    require_sbuf("matmul", f"blocks BLOCK_M={BLOCK_M} x BLOCK_N={BLOCK_N} x BLOCK_K={BLOCK_K} "
                 f"({2 * operand_blocks} B of double-buffered lhsT/rhs blocks + "
                 f"{accumulator_bytes} B of fp32 accumulators)",
                 2 * operand_blocks + accumulator_bytes + 2 * BLOCK_N * itemsize)
    result = nl.ndarray((M, N), dtype=lhsT.dtype, buffer=nl.shared_hbm)
    for n in nl.affine_range(N // BLOCK_N):
        # One fp32 accumulator row [TILE_M, BLOCK_N] per M tile, living across the K blocks.
        accumulators = [nl.ndarray((TILE_M, BLOCK_N), dtype=nl.float32, buffer=nl.sbuf)
                        for _ in range(M // TILE_M)]
        for k in nl.sequential_range(K // BLOCK_K):
            # Load the rhs block once: TILES_IN_BLOCK_K rows of [TILE_K, BLOCK_N].
            rhs_tiles = [_load(rhs, (k * TILES_IN_BLOCK_K + bk) * TILE_K, TILE_K,
                               n * BLOCK_N, BLOCK_N) for bk in range(TILES_IN_BLOCK_K)]
            for m in nl.affine_range(M // BLOCK_M):
                # Load the lhsT block: TILES_IN_BLOCK_K rows of [TILE_K, BLOCK_M].
                lhsT_tiles = [_load(lhsT, (k * TILES_IN_BLOCK_K + bk) * TILE_K, TILE_K,
                                    m * BLOCK_M, BLOCK_M) for bk in range(TILES_IN_BLOCK_K)]
                for bn in nl.affine_range(TILES_IN_BLOCK_N):
                    for bm in nl.affine_range(TILES_IN_BLOCK_M):
                        # This K block's contribution, summed over its K tiles in PSUM.
                        res_psum = nl.ndarray((TILE_M, TILE_N), dtype=nl.float32,
                                              buffer=nl.psum)
                        for bk in nl.affine_range(TILES_IN_BLOCK_K):
                            nisa.nc_matmul(
                                dst=res_psum,
                                stationary=lhsT_tiles[bk][:, bm * TILE_M:(bm + 1) * TILE_M],
                                moving=rhs_tiles[bk][:, bn * TILE_N:(bn + 1) * TILE_N])
                        # The first K block initialises the accumulator, later ones add to it.
                        acc = accumulators[m * TILES_IN_BLOCK_M + bm][
                            :, bn * TILE_N:(bn + 1) * TILE_N]
                        if k == 0:
                            nisa.tensor_copy(dst=acc, src=res_psum)
                        else:
                            nisa.tensor_tensor(dst=acc, data1=acc, data2=res_psum, op=nl.add)
        # Cast each accumulator row to the output dtype and store it with one DMA.
        for mt in nl.affine_range(M // TILE_M):
            res_sb = nl.ndarray((TILE_M, BLOCK_N), dtype=result.dtype, buffer=nl.sbuf)
            nisa.tensor_copy(dst=res_sb, src=accumulators[mt])
            nisa.dma_copy(dst=result[mt * TILE_M:(mt + 1) * TILE_M,
                                     n * BLOCK_N:(n + 1) * BLOCK_N], src=res_sb)
    return result
