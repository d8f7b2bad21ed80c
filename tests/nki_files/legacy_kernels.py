"""Kernels in the legacy NKI API (neuronxcc.nki, Neuron SDK 2.20-2.26): value-returning
nl.load / nl.store and nisa calls, nl.arange / nl.mgrid index vectors with affine arithmetic,
masks on ragged tiles, nl.par_dim multi-buffers and psum += nisa.nc_matmul accumulation."""

import neuronxcc.nki.isa as nisa
import neuronxcc.nki.language as nl
import neuronxcc.nki.typing as nt
import numpy as np
from neuronxcc import nki
from neuronxcc.nki.language import par_dim


@nki.jit
def add_ragged(a_tensor, b_tensor):
    """c = a + b for any number of rows: 128-row tiles, the last one masked."""
    rows, cols = a_tensor.shape
    c_tensor = nl.ndarray((rows, cols), dtype=a_tensor.dtype, buffer=nl.shared_hbm)
    i_p = nl.arange(128)[:, None]
    i_f = nl.arange(cols)[None, :]
    for m in nl.affine_range((rows + 127) // 128):
        # Rows past the end of the tensor are disabled lanes of the last tile.
        in_range = (i_p + 128 * m < rows)
        a_tile = nl.load(a_tensor[i_p + 128 * m, i_f], mask=in_range)
        b_tile = nl.load(b_tensor[i_p + 128 * m, i_f], mask=in_range)
        c_tile = nl.add(a_tile, b_tile, mask=in_range)
        nl.store(c_tensor[i_p + 128 * m, i_f], value=c_tile, mask=in_range)
    return c_tensor


@nki.jit
def interleave(x: nt.tensor):
    """out[:, 2j] = x[:, j] and out[:, 2j + 1] = -x[:, j]: strided free indices when storing."""
    rows, cols = x.shape
    out = nl.ndarray((rows, 2 * cols), dtype=x.dtype, buffer=nl.shared_hbm)
    i_p, i_f = nl.mgrid[0:rows, 0:cols]
    x_tile = nl.load(x[i_p, i_f])
    nl.store(out[i_p, i_f * 2], value=x_tile)
    nl.store(out[i_p, 2 * i_f + 1], value=nl.negative(x_tile))
    return out


@nki.jit
def scale_head_columns(x, head):
    """out[:, :head] = 2 * x[:, :head], zeros elsewhere: a mask on the free axis."""
    rows, cols = x.shape
    out = nl.ndarray((rows, cols), dtype=x.dtype, buffer=nl.shared_hbm)
    i_p = nl.arange(rows)[:, None]
    i_f = nl.arange(cols)[None, :]
    x_tile = nl.load(x[i_p, i_f])
    out_tile = nl.zeros((rows, cols), dtype=x.dtype, buffer=nl.sbuf)
    out_tile[i_p, i_f] = nl.multiply(x_tile, 2.0, mask=(i_f < head))
    nl.store(out[i_p, i_f], value=out_tile)
    return out


@nki.jit
def matmul_hoisted(lhsT, rhs):
    """result[M, N] = lhsT[K, M].T @ rhs[K, N]: the lhsT tiles of a row band are loaded once
    into a multi-buffer, K tiles accumulate with psum[...] += nisa.nc_matmul(...)."""
    K, M = lhsT.shape
    _, N = rhs.shape
    TILE_M = nl.tile_size.gemm_stationary_fmax
    TILE_K = nl.tile_size.pmax
    TILE_N = nl.tile_size.gemm_moving_fmax
    result = nl.ndarray((M, N), dtype=lhsT.dtype, buffer=nl.shared_hbm)

    # use `.p` for the partition dimension and `.x` for the first free dimension
    i_lhsT = nl.mgrid[0:TILE_K, 0:TILE_M]
    i_rhs = nl.mgrid[0:TILE_K, 0:TILE_N]
    i_res = nl.mgrid[0:TILE_M, 0:TILE_N]
    for m in nl.affine_range(M // TILE_M):
        lhsT_tiles = nl.ndarray((K // TILE_K, par_dim(TILE_K), TILE_M), dtype=lhsT.dtype,
                                buffer=nl.sbuf)
        for k in nl.affine_range(K // TILE_K):
            lhsT_tiles[k, i_lhsT.p, i_lhsT.x] = nl.load(
                lhsT[k * TILE_K + i_lhsT.p, m * TILE_M + i_lhsT.x])
        for n in nl.affine_range(N // TILE_N):
            res_psum = nl.zeros((TILE_M, TILE_N), nl.float32, buffer=nl.psum)
            for k in nl.affine_range(K // TILE_K):
                rhs_tile = nl.load(rhs[k * TILE_K + i_rhs.p, n * TILE_N + i_rhs.x])
                res_psum[...] += nisa.nc_matmul(lhsT_tiles[k, i_lhsT.p, i_lhsT.x], rhs_tile)
            res_sb = nl.copy(res_psum, dtype=result.dtype)
            nl.store(result[m * TILE_M + i_res.p, n * TILE_N + i_res.x], value=res_sb)
    return result


@nki.jit
def matmul_fully_blocked(lhsT, rhs):
    """Blocked in M, N and K: every tile of a K block is loaded once into par_dim
    multi-buffers, and each block's partial sums are added to SBUF accumulators with +=."""
    K, M = lhsT.shape
    _, N = rhs.shape
    TILE_M = nl.tile_size.gemm_stationary_fmax
    TILE_K = nl.tile_size.pmax
    TILE_N = nl.tile_size.gemm_moving_fmax
    TILES_M, TILES_N, TILES_K = M // TILE_M, N // TILE_N, 2
    BLOCK_K = TILE_K * TILES_K
    assert K % BLOCK_K == 0, f"K = {K} must be a multiple of {BLOCK_K}"
    result = nl.ndarray((M, N), dtype=lhsT.dtype, buffer=nl.shared_hbm)
    i_lhsT = nl.mgrid[0:TILE_K, 0:TILE_M]
    i_rhs = nl.mgrid[0:TILE_K, 0:TILE_N]
    i_res = nl.mgrid[0:TILE_M, 0:TILE_N]

    result_tiles = nl.zeros((TILES_M, TILES_N, par_dim(TILE_M), TILE_N), dtype=nl.float32,
                            buffer=nl.sbuf)
    for kb in nl.sequential_range(K // BLOCK_K):
        # Load every tile of this K block once.
        lhsT_tiles = nl.ndarray((TILES_K, TILES_M, par_dim(TILE_K), TILE_M), dtype=lhsT.dtype,
                                buffer=nl.sbuf)
        rhs_tiles = nl.ndarray((TILES_K, TILES_N, par_dim(TILE_K), TILE_N), dtype=rhs.dtype,
                               buffer=nl.sbuf)
        for bk in nl.affine_range(TILES_K):
            k0 = (kb * TILES_K + bk) * TILE_K
            for bm in nl.affine_range(TILES_M):
                lhsT_tiles[bk, bm, i_lhsT.p, i_lhsT.x] = nl.load(
                    lhsT[k0 + i_lhsT.p, bm * TILE_M + i_lhsT.x])
            for bn in nl.affine_range(TILES_N):
                rhs_tiles[bk, bn, i_rhs.p, i_rhs.x] = nl.load(
                    rhs[k0 + i_rhs.p, bn * TILE_N + i_rhs.x])
        # Multiply the block, accumulating its K tiles in PSUM, then add it up in SBUF.
        for bm in nl.affine_range(TILES_M):
            for bn in nl.affine_range(TILES_N):
                res_tile = nl.zeros((TILE_M, TILE_N), dtype=nl.float32, buffer=nl.psum)
                for bk in nl.affine_range(TILES_K):
                    res_tile[...] += nisa.nc_matmul(lhsT_tiles[bk, bm, i_lhsT.p, i_lhsT.x],
                                                    rhs_tiles[bk, bn, i_rhs.p, i_rhs.x])
                result_tiles[bm, bn, i_res.p, i_res.x] += res_tile[i_res.p, i_res.x]
    for bm in nl.affine_range(TILES_M):
        for bn in nl.affine_range(TILES_N):
            nl.store(result[bm * TILE_M + i_res.p, bn * TILE_N + i_res.x],
                     value=result_tiles[bm, bn, i_res.p, i_res.x])
    return result


@nki.jit(additional_compile_opt="--internal-skip-backend-allocation-opt-nki",
         platform_target="trn1")
@nki.compiler.skip_middle_end_transformations
def matmul_language(x, y):
    """x[M, K] @ y[K, N] twice with nl.matmul, averaged: once transposing x through the PE
    array (transpose_x=False), once from a transposing load (transpose_x=True)."""
    M, K = x.shape
    _, N = y.shape
    out = nl.ndarray((M, N), dtype=x.dtype, buffer=nl.shared_hbm)
    x_tile = nl.load(x)
    y_tile = nl.load(y)
    res = nl.zeros((M, N), nl.float32, buffer=nl.psum)
    with nki.compiler.no_reorder():
        res += nl.matmul(x_tile, y_tile)
        xT_tile = nl.load_transpose2d(x)
        res += nl.matmul(xT_tile, y_tile, transpose_x=True)
    nl.store(out, value=nl.multiply(res, 0.5))
    return out


@nki.jit
def softmax_ragged(x):
    """Row softmax of any number of rows: every instruction of the last tile masked."""
    rows, cols = x.shape
    out = nl.ndarray((rows, cols), dtype=x.dtype, buffer=nl.shared_hbm)
    i_p = nl.arange(128)[:, None]
    i_f = nl.arange(cols)[None, :]
    for t in nl.affine_range((rows + 127) // 128):
        valid = (i_p + 128 * t < rows)
        x_tile = nl.load(x[i_p + 128 * t, i_f], mask=valid)
        row_max = nl.max(x_tile, axis=1, keepdims=True, mask=valid)
        exps = nl.exp(nl.subtract(x_tile, row_max, mask=valid), mask=valid)
        sums = nl.sum(exps, axis=1, keepdims=True, mask=valid)
        probs = nl.divide(exps, sums, mask=valid)
        nl.store(out[i_p + 128 * t, i_f], value=probs, mask=valid)
    return out


@nki.jit
def mamba_legacy(delta, u, A, B, C):
    """The selective scan of the Mamba tutorial with value-returning nisa calls:
    h[t] = exp(delta[t] * A) * h[t-1] + delta[t] * u[t] * B[t];  y = sum over states of h * C."""
    channels, seq_len = delta.shape
    _, state_size = A.shape
    output = nl.ndarray((channels, seq_len), dtype=delta.dtype, buffer=nl.shared_hbm)
    delta_i = nl.load(delta)
    u_i = nl.load(u)
    delta_u = nisa.tensor_tensor(delta_i, u_i, op=nl.multiply)
    scan_sum = nl.zeros((channels, seq_len), dtype=nl.float32, buffer=nl.sbuf)
    for i_state in nl.affine_range(state_size):
        A_i = nl.load(A[0:channels, i_state:i_state + 1])
        delta_A = nisa.activation(op=nl.exp, data=delta_i, scale=A_i)
        B_i = nl.load(B[i_state:i_state + 1, 0:seq_len])
        delta_Bu = nisa.tensor_tensor(delta_u, B_i.broadcast_to((channels, seq_len)),
                                      op=nl.multiply)
        scan_res = nisa.tensor_tensor_scan(delta_A, delta_Bu, initial=0,
                                           op0=np.multiply, op1=np.add)
        C_i = nl.load(C[i_state:i_state + 1, 0:seq_len])
        scan_sum += nisa.tensor_tensor(scan_res, C_i.broadcast_to((channels, seq_len)),
                                       op=nl.multiply)
    nl.store(output, value=scan_sum)
    return output


@nki.jit
def causal_transpose(x):
    """Returns (x with its upper triangle set to -1e4, transposed; an iota ramp)."""
    P, F = x.shape
    transposed = nl.ndarray((F, P), dtype=x.dtype, buffer=nl.shared_hbm)
    ramp_out = nl.ndarray((P, F), dtype=nl.int32, buffer=nl.shared_hbm)
    i_p = nl.arange(P)[:, None]
    i_f = nl.arange(F)[None, :]
    x_tile = nl.load(x)
    lower = nisa.affine_select(pred=(i_p - i_f >= 0), on_true_tile=x_tile, on_false_value=-1e4)
    nl.store(transposed, value=nl.transpose(lower))
    ramp = nisa.iota(i_p * 100 + i_f, dtype=nl.int32)
    nl.store(ramp_out, value=ramp)
    return transposed, ramp_out
