"""The matrix multiplication tutorial's five steps (current NKI API): result[M, N] =
lhsT[K, M].T @ rhs[K, N], from one instruction to a kernel blocked in all three dimensions."""

import nki
import nki.isa as nisa
import nki.language as nl


@nki.jit
def nki_matmul_basic_(lhsT, rhs):
    """One [128, 64] x [128, 512] matmul: K = 128, M = 64, N = 512."""
    K, M = lhsT.shape
    K_, N = rhs.shape
    assert K == K_ == 128 and M == 64 and N == 512, "the basic kernel is 64x128x512"
    result = nl.ndarray((M, N), dtype=lhsT.dtype, buffer=nl.shared_hbm)

    # Load both operands, multiply into PSUM, evict to SBUF, store.
    lhs_tile = nl.ndarray(lhsT.shape, dtype=lhsT.dtype, buffer=nl.sbuf)
    rhs_tile = nl.ndarray(rhs.shape, dtype=rhs.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=lhs_tile, src=lhsT)
    nisa.dma_copy(dst=rhs_tile, src=rhs)
    result_psum = nl.ndarray((M, N), dtype=nl.float32, buffer=nl.psum)
    nisa.nc_matmul(result_psum, lhs_tile, rhs_tile)
    result_sbuf = nl.ndarray(result_psum.shape, dtype=result.dtype, buffer=nl.sbuf)
    nisa.tensor_copy(dst=result_sbuf, src=result_psum)
    nisa.dma_copy(dst=result, src=result_sbuf)
    return result


@nki.jit
def nki_matmul_tiled_(lhsT, rhs):
    """Tiles of the hardware's sizes; K tiles accumulate in one PSUM bank."""
    K, M = lhsT.shape
    K_, N = rhs.shape
    assert K == K_, "lhsT and rhs must have the same contraction dimension"
    TILE_M = nl.tile_size.gemm_stationary_fmax  # 128
    TILE_K = nl.tile_size.pmax  # 128
    TILE_N = nl.tile_size.gemm_moving_fmax  # 512
    assert M % TILE_M == 0 and N % TILE_N == 0 and K % TILE_K == 0
    result = nl.ndarray((M, N), dtype=lhsT.dtype, buffer=nl.shared_hbm)

    for m in nl.affine_range(M // TILE_M):
        for n in nl.affine_range(N // TILE_N):
            res_psum = nl.ndarray((TILE_M, TILE_N), nl.float32, buffer=nl.psum)
            for k in nl.affine_range(K // TILE_K):
                lhsT_tile = nl.ndarray((TILE_K, TILE_M), dtype=lhsT.dtype, buffer=nl.sbuf)
                rhs_tile = nl.ndarray((TILE_K, TILE_N), dtype=rhs.dtype, buffer=nl.sbuf)
                nisa.dma_copy(dst=lhsT_tile, src=lhsT[k * TILE_K:(k + 1) * TILE_K,
                                                      m * TILE_M:(m + 1) * TILE_M])
                nisa.dma_copy(dst=rhs_tile, src=rhs[k * TILE_K:(k + 1) * TILE_K,
                                                    n * TILE_N:(n + 1) * TILE_N])
                nisa.nc_matmul(dst=res_psum, stationary=lhsT_tile, moving=rhs_tile)
            res_sb = nl.ndarray(res_psum.shape, dtype=result.dtype, buffer=nl.sbuf)
            nisa.tensor_copy(dst=res_sb, src=res_psum)
            nisa.dma_copy(dst=result[m * TILE_M:(m + 1) * TILE_M, n * TILE_N:(n + 1) * TILE_N],
                          src=res_sb)
    return result


@nki.jit
def nki_matmul_hoist_load_(lhsT, rhs):
    """The loads of lhsT hoisted out of the N loop: each lhsT tile is loaded once per m."""
    K, M = lhsT.shape
    K_, N = rhs.shape
    assert K == K_, "lhsT and rhs must have the same contraction dimension"
    TILE_M = nl.tile_size.gemm_stationary_fmax
    TILE_K = nl.tile_size.pmax
    TILE_N = nl.tile_size.gemm_moving_fmax
    result = nl.ndarray((M, N), dtype=lhsT.dtype, buffer=nl.shared_hbm)

    for m in nl.affine_range(M // TILE_M):
        # A whole column of lhsT tiles, loaded once.
        lhsT_tiles = []
        for k in nl.affine_range(K // TILE_K):
            lhsT_tile = nl.ndarray(shape=(TILE_K, TILE_M), dtype=lhsT.dtype, buffer=nl.sbuf)
            nisa.dma_copy(dst=lhsT_tile, src=lhsT[k * TILE_K:(k + 1) * TILE_K,
                                                  m * TILE_M:(m + 1) * TILE_M])
            lhsT_tiles.append(lhsT_tile)
        for n in nl.affine_range(N // TILE_N):
            rhs_tiles = []
            for k in nl.affine_range(K // TILE_K):
                rhs_tile = nl.ndarray(shape=(TILE_K, TILE_N), dtype=rhs.dtype, buffer=nl.sbuf)
                nisa.dma_copy(dst=rhs_tile, src=rhs[k * TILE_K:(k + 1) * TILE_K,
                                                    n * TILE_N:(n + 1) * TILE_N])
                rhs_tiles.append(rhs_tile)
            res_psum = nl.ndarray(shape=(TILE_M, TILE_N), dtype=nl.float32, buffer=nl.psum)
            for k in nl.affine_range(K // TILE_K):
                nisa.nc_matmul(dst=res_psum, stationary=lhsT_tiles[k], moving=rhs_tiles[k])
            res_sb = nl.ndarray(shape=(TILE_M, TILE_N), dtype=nl.float32, buffer=nl.sbuf)
            nisa.tensor_copy(dst=res_sb, src=res_psum)
            nisa.dma_copy(dst=result[m * TILE_M:(m + 1) * TILE_M, n * TILE_N:(n + 1) * TILE_N],
                          src=res_sb)
    return result


@nki.jit
def nki_matmul_block_free_dimension_(lhsT, rhs):
    """Blocks of 2 x 2 tiles in M and N: each loaded tile serves two matmuls."""
    K, M = lhsT.shape
    K_, N = rhs.shape
    assert K == K_, "lhsT and rhs must have the same contraction dimension"
    TILE_M = nl.tile_size.gemm_stationary_fmax
    TILE_K = nl.tile_size.pmax
    TILE_N = nl.tile_size.gemm_moving_fmax
    TILES_IN_BLOCK_M = 2
    TILES_IN_BLOCK_N = 2
    BLOCK_M = TILE_M * TILES_IN_BLOCK_M
    BLOCK_N = TILE_N * TILES_IN_BLOCK_N
    assert M % BLOCK_M == 0 and N % BLOCK_N == 0
    result = nl.ndarray((M, N), dtype=lhsT.dtype, buffer=nl.shared_hbm)

    for m in nl.affine_range(M // BLOCK_M):
        # lhsT tiles of the block: [bm][k]
        lhsT_tiles = []
        for bm in nl.affine_range(TILES_IN_BLOCK_M):
            column = []
            for k in nl.affine_range(K // TILE_K):
                lhsT_tile = nl.ndarray(shape=(TILE_K, TILE_M), dtype=lhsT.dtype, buffer=nl.sbuf)
                nisa.dma_copy(dst=lhsT_tile,
                              src=lhsT[k * TILE_K:(k + 1) * TILE_K,
                                       (m * TILES_IN_BLOCK_M + bm) * TILE_M:
                                       (m * TILES_IN_BLOCK_M + bm + 1) * TILE_M])
                column.append(lhsT_tile)
            lhsT_tiles.append(column)
        for n in nl.affine_range(N // BLOCK_N):
            rhs_tiles = []
            for bn in nl.affine_range(TILES_IN_BLOCK_N):
                column = []
                for k in nl.affine_range(K // TILE_K):
                    rhs_tile = nl.ndarray(shape=(TILE_K, TILE_N), dtype=rhs.dtype,
                                          buffer=nl.sbuf)
                    nisa.dma_copy(dst=rhs_tile,
                                  src=rhs[k * TILE_K:(k + 1) * TILE_K,
                                          (n * TILES_IN_BLOCK_N + bn) * TILE_N:
                                          (n * TILES_IN_BLOCK_N + bn + 1) * TILE_N])
                    column.append(rhs_tile)
                rhs_tiles.append(column)
            for bm in nl.affine_range(TILES_IN_BLOCK_M):
                for bn in nl.affine_range(TILES_IN_BLOCK_N):
                    result_tile = nl.ndarray(shape=(TILE_M, TILE_N), dtype=nl.float32,
                                             buffer=nl.psum)
                    for k in nl.affine_range(K // TILE_K):
                        nisa.nc_matmul(dst=result_tile, stationary=lhsT_tiles[bm][k],
                                       moving=rhs_tiles[bn][k])
                    result_tmp = nl.ndarray(shape=result_tile.shape, dtype=result.dtype,
                                            buffer=nl.sbuf)
                    nisa.tensor_copy(dst=result_tmp, src=result_tile)
                    row = (m * TILES_IN_BLOCK_M + bm) * TILE_M
                    col = (n * TILES_IN_BLOCK_N + bn) * TILE_N
                    nisa.dma_copy(dst=result[row:row + TILE_M, col:col + TILE_N],
                                  src=result_tmp)
    return result


@nki.jit
def nki_matmul_fully_optimized_(lhsT, rhs, TILES_IN_BLOCK_M=2, TILES_IN_BLOCK_N=2,
                                TILES_IN_BLOCK_K=2):
    """Blocked in M, N and K: partial sums of each K block accumulate in SBUF, so a block of
    rhs is loaded once per K block and reused by every M block."""
    K, M = lhsT.shape
    K_, N = rhs.shape
    assert K == K_, "lhsT and rhs must have the same contraction dimension"
    TILE_M = nl.tile_size.gemm_stationary_fmax
    TILE_K = nl.tile_size.pmax
    TILE_N = nl.tile_size.gemm_moving_fmax
    BLOCK_M = TILE_M * TILES_IN_BLOCK_M
    BLOCK_N = TILE_N * TILES_IN_BLOCK_N
    BLOCK_K = TILE_K * TILES_IN_BLOCK_K
    assert M % BLOCK_M == 0 and N % BLOCK_N == 0 and K % BLOCK_K == 0
    NUM_BLOCK_M, NUM_BLOCK_N, NUM_BLOCK_K = M // BLOCK_M, N // BLOCK_N, K // BLOCK_K
    result = nl.ndarray((M, N), dtype=lhsT.dtype, buffer=nl.shared_hbm)

    for n in nl.affine_range(NUM_BLOCK_N):
        # Partial sums of the whole [M, BLOCK_N] column, partitions first.
        result_tiles = nl.zeros((TILE_M, NUM_BLOCK_M, TILES_IN_BLOCK_M, TILES_IN_BLOCK_N, TILE_N),
                                dtype=nl.float32, buffer=nl.sbuf)
        for k in nl.sequential_range(NUM_BLOCK_K):
            # One block of rhs: TILES_IN_BLOCK_K tiles of [TILE_K, BLOCK_N].
            rhs_tiles = nl.ndarray((TILE_K, TILES_IN_BLOCK_K, BLOCK_N), dtype=rhs.dtype,
                                   buffer=nl.sbuf)
            for bk in nl.affine_range(TILES_IN_BLOCK_K):
                k0 = (k * TILES_IN_BLOCK_K + bk) * TILE_K
                nisa.dma_copy(dst=rhs_tiles[:, bk, :],
                              src=rhs[k0:k0 + TILE_K, n * BLOCK_N:(n + 1) * BLOCK_N])
            for m in nl.affine_range(NUM_BLOCK_M):
                lhsT_tiles = nl.ndarray((TILE_K, TILES_IN_BLOCK_K, BLOCK_M), dtype=lhsT.dtype,
                                        buffer=nl.sbuf)
                for bk in nl.affine_range(TILES_IN_BLOCK_K):
                    k0 = (k * TILES_IN_BLOCK_K + bk) * TILE_K
                    nisa.dma_copy(dst=lhsT_tiles[:, bk, :],
                                  src=lhsT[k0:k0 + TILE_K, m * BLOCK_M:(m + 1) * BLOCK_M])
                for bn in nl.affine_range(TILES_IN_BLOCK_N):
                    for bm in nl.affine_range(TILES_IN_BLOCK_M):
                        res_tile = nl.ndarray((TILE_M, TILE_N), dtype=nl.float32,
                                              buffer=nl.psum)
                        for bk in nl.affine_range(TILES_IN_BLOCK_K):
                            nisa.nc_matmul(
                                dst=res_tile,
                                stationary=lhsT_tiles[:, bk, bm * TILE_M:(bm + 1) * TILE_M],
                                moving=rhs_tiles[:, bk, bn * TILE_N:(bn + 1) * TILE_N])
                        # Add this K block's partial sum to the SBUF accumulator.
                        nisa.tensor_tensor(dst=result_tiles[:, m, bm, bn, :],
                                           data1=result_tiles[:, m, bm, bn, :],
                                           data2=res_tile, op=nl.add)
        # Store the finished column of blocks.
        for m in nl.affine_range(NUM_BLOCK_M):
            for bm in nl.affine_range(TILES_IN_BLOCK_M):
                row = (m * TILES_IN_BLOCK_M + bm) * TILE_M
                for bn in nl.affine_range(TILES_IN_BLOCK_N):
                    col = n * BLOCK_N + bn * TILE_N
                    out_tile = nl.ndarray((TILE_M, TILE_N), dtype=result.dtype, buffer=nl.sbuf)
                    nisa.tensor_copy(dst=out_tile, src=result_tiles[:, m, bm, bn, :])
                    nisa.dma_copy(dst=result[row:row + TILE_M, col:col + TILE_N], src=out_tile)
    return result
