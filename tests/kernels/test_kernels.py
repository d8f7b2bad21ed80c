"""NKI-style kernels traced and run on the emulator, each against a numpy golden.

Every kernel runs through `simulate(..., check_races=True)`, so each traced program is also
checked race-free by the race detector; a few also run through `benchmark` for a timing report.
"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from emulator.kernel_runner import GridReport, benchmark, simulate
from kernels.nki import isa as nisa
from kernels.nki import jit
from kernels.nki import language as nl

RNG = np.random.default_rng(7)


# ---- SPMD tensor addition ----------------------------------------------------------------------
@jit
def tensor_add(a_input, b_input):
    """c = a + b; each program instance adds one [128, 512] tile of the grid."""
    c_output = nl.ndarray(a_input.shape, dtype=a_input.dtype, buffer=nl.shared_hbm)
    rows = nl.ds(nl.program_id(0) * 128, 128)
    cols = nl.ds(nl.program_id(1) * 512, 512)
    a_tile = nl.ndarray((128, 512), dtype=a_input.dtype, buffer=nl.sbuf)
    b_tile = nl.ndarray((128, 512), dtype=a_input.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=a_tile, src=a_input[rows, cols])
    nisa.dma_copy(dst=b_tile, src=b_input[rows, cols])
    c_tile = nl.ndarray((128, 512), dtype=a_input.dtype, buffer=nl.sbuf)
    nisa.tensor_tensor(dst=c_tile, data1=a_tile, data2=b_tile, op=nl.add)
    nisa.dma_copy(dst=c_output[rows, cols], src=c_tile)
    return c_output


def test_spmd_tensor_add_matches_numpy():
    a = RNG.random((256, 1024)).astype(np.float16)
    b = RNG.random((256, 1024)).astype(np.float16)
    out = simulate(tensor_add[2, 2], check_races=True)(a, b)
    assert out.dtype == np.float16
    np.testing.assert_allclose(out, a + b, rtol=1e-3)


def test_spmd_benchmark_reports_each_program_and_the_sequential_total():
    a = RNG.random((256, 512)).astype(np.float32)
    b = RNG.random((256, 512)).astype(np.float32)
    out, report = benchmark(tensor_add[2, 1])(a, b)
    np.testing.assert_array_equal(out, a + b)
    assert isinstance(report, GridReport) and len(report.programs) == 2
    assert report.latency_ns == pytest.approx(sum(r.latency_ns for r in report.programs))
    assert report.to_json()["execution"] == "sequential on one core"


# ---- tiled matmul with PSUM accumulation over K ------------------------------------------------
@jit
def tiled_matmul(lhsT, rhs):
    """result[M, N] = lhsT[K, M].T @ rhs[K, N], accumulating K tiles in one PSUM bank."""
    K, M = lhsT.shape
    _, N = rhs.shape
    tile_m, tile_k, tile_n = (nl.tile_size.gemm_stationary_fmax, nl.tile_size.pmax,
                              nl.tile_size.gemm_moving_fmax)
    result = nl.ndarray((M, N), dtype=nl.float32, buffer=nl.shared_hbm)
    for m in nl.affine_range(M // tile_m):
        for n in nl.affine_range(N // tile_n):
            res_psum = nl.ndarray((tile_m, tile_n), nl.float32, buffer=nl.psum)
            for k in nl.affine_range(K // tile_k):
                lhsT_tile = nl.ndarray((tile_k, tile_m), dtype=lhsT.dtype, buffer=nl.sbuf)
                rhs_tile = nl.ndarray((tile_k, tile_n), dtype=rhs.dtype, buffer=nl.sbuf)
                nisa.dma_copy(dst=lhsT_tile, src=lhsT[k * tile_k:(k + 1) * tile_k,
                                                      m * tile_m:(m + 1) * tile_m])
                nisa.dma_copy(dst=rhs_tile, src=rhs[k * tile_k:(k + 1) * tile_k,
                                                    n * tile_n:(n + 1) * tile_n])
                nisa.nc_matmul(dst=res_psum, stationary=lhsT_tile, moving=rhs_tile)
            res_sb = nl.ndarray(res_psum.shape, dtype=result.dtype, buffer=nl.sbuf)
            nisa.tensor_copy(dst=res_sb, src=res_psum)
            nisa.dma_copy(dst=result[m * tile_m:(m + 1) * tile_m, n * tile_n:(n + 1) * tile_n],
                          src=res_sb)
    return result


def test_tiled_matmul_accumulates_k_tiles_in_psum():
    lhsT = RNG.standard_normal((384, 256)).astype(ml_dtypes.bfloat16)
    rhs = RNG.standard_normal((384, 1024)).astype(ml_dtypes.bfloat16)
    out, report = benchmark(tiled_matmul, check_races=True)(lhsT, rhs)
    golden = lhsT.astype(np.float64).T @ rhs.astype(np.float64)
    np.testing.assert_allclose(out, golden, rtol=1e-4, atol=1e-3)
    assert report.cores[0].engines["tensor"].instructions == 2 * 2 * 3
    assert report.latency_ns > 0


# ---- softmax over rows -------------------------------------------------------------------------
@jit
def softmax_isa(x):
    """Row softmax with nisa: max (negated), exp(x - max) summing on the fly, 1/sum, scale."""
    P, F = x.shape
    out = nl.ndarray((P, F), dtype=x.dtype, buffer=nl.shared_hbm)
    x_tile = nl.ndarray((P, F), dtype=x.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=x_tile, src=x)
    neg_max = nl.ndarray((P, 1), dtype=nl.float32, buffer=nl.sbuf)
    nisa.tensor_reduce(dst=neg_max, op=nl.max, data=x_tile, axis=1, negate=True)
    exps = nl.ndarray((P, F), dtype=nl.float32, buffer=nl.sbuf)
    sums = nl.ndarray((P, 1), dtype=nl.float32, buffer=nl.sbuf)
    nisa.activation(dst=exps, op=nl.exp, data=x_tile, bias=neg_max, reduce_op=nl.add,
                    reduce_res=sums, reduce_cmd=nisa.reduce_cmd.reset_reduce)
    inverse = nl.ndarray((P, 1), dtype=nl.float32, buffer=nl.sbuf)
    nisa.reciprocal(dst=inverse, data=sums)
    y = nl.ndarray((P, F), dtype=x.dtype, buffer=nl.sbuf)
    nisa.tensor_scalar(dst=y, data=exps, op0=nl.multiply, operand0=inverse)
    nisa.dma_copy(dst=out, src=y)
    return out


@jit
def softmax_values(x):
    """Row softmax with value-returning nl ops (reductions, broadcasting, element-wise)."""
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    x_tile = nl.load(x)
    row_max = nl.max(x_tile, axis=1, keepdims=True)
    exps = nl.exp(x_tile - row_max)
    y = exps / nl.sum(exps, axis=1, keepdims=True)
    nl.store(out, y)
    return out


@pytest.mark.parametrize("kernel", [softmax_isa, softmax_values])
def test_softmax_rows(kernel):
    x = (4 * RNG.standard_normal((96, 200))).astype(np.float32)
    out = simulate(kernel, check_races=True)(x)
    golden = np.exp(x - x.max(axis=1, keepdims=True))
    golden /= golden.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(out, golden, rtol=1e-5, atol=1e-7)


# ---- transposes --------------------------------------------------------------------------------
@jit
def transpose_tile(x):
    """One [P, F] tile through the PE array: out[F, P] = x.T."""
    P, F = x.shape
    out = nl.ndarray((F, P), dtype=x.dtype, buffer=nl.shared_hbm)
    x_tile = nl.ndarray((P, F), dtype=x.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=x_tile, src=x)
    t_psum = nl.ndarray((F, P), dtype=nl.float32, buffer=nl.psum)
    nisa.nc_transpose(dst=t_psum, data=x_tile)
    t_sbuf = nl.ndarray((F, P), dtype=x.dtype, buffer=nl.sbuf)
    nisa.tensor_copy(dst=t_sbuf, src=t_psum)
    nisa.dma_copy(dst=out, src=t_sbuf)
    return out


@jit
def transpose_blocks(x):
    """out = x.T in 128 x 128 blocks addressed with nl.ds, one row band of x in SBUF at a time."""
    R, C = x.shape
    out = nl.ndarray((C, R), dtype=x.dtype, buffer=nl.shared_hbm)
    for i in nl.affine_range(R // 128):
        band = nl.ndarray((128, C), dtype=x.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=band, src=x[nl.ds(i * 128, 128), :])
        for j in nl.affine_range(C // 128):
            block_t = nl.ndarray((128, 128), dtype=nl.float32, buffer=nl.psum)
            nisa.nc_transpose(dst=block_t, data=band[:, nl.ds(j * 128, 128)])
            block = nl.ndarray((128, 128), dtype=x.dtype, buffer=nl.sbuf)
            nisa.tensor_copy(dst=block, src=block_t)
            nisa.dma_copy(dst=out[nl.ds(j * 128, 128), nl.ds(i * 128, 128)], src=block)
    return out


def test_transpose_one_tile():
    x = RNG.standard_normal((128, 64)).astype(np.float32)
    np.testing.assert_array_equal(simulate(transpose_tile, check_races=True)(x), x.T)


def test_transpose_blocks_with_dynamic_slices():
    x = RNG.standard_normal((256, 384)).astype(np.float32)
    np.testing.assert_array_equal(simulate(transpose_blocks, check_races=True)(x), x.T)


# ---- 2-D average pooling with an access pattern ------------------------------------------------
@jit
def avgpool2d(in_tensor, pool_size):
    """The NKI tutorial's pooling: a 5-D .ap() view groups each window, nl.sum reduces it."""
    channels, height, width = in_tensor.shape
    out_tensor = nl.ndarray((channels, height // pool_size, width // pool_size),
                            dtype=in_tensor.dtype, buffer=nl.shared_hbm)
    in_tile = nl.ndarray(in_tensor.shape, dtype=in_tensor.dtype, buffer=nl.sbuf)
    nisa.dma_copy(dst=in_tile, src=in_tensor)
    pool_view = in_tile.ap([
        [height * width, channels],  # partitions
        [pool_size * width, height // pool_size],  # window rows
        [pool_size, width // pool_size],  # window columns
        [width, pool_size],  # rows inside a window
        [1, pool_size],  # columns inside a window
    ])
    sum_tile = nl.sum(pool_view, axis=[3, 4])
    out_tile = nl.ndarray(sum_tile.shape, dtype=sum_tile.dtype, buffer=nl.sbuf)
    nisa.tensor_scalar(dst=out_tile, data=sum_tile, op0=nl.multiply,
                       operand0=1.0 / (pool_size * pool_size))
    nisa.dma_copy(dst=out_tensor, src=out_tile)
    return out_tensor


def test_avgpool2d_with_access_pattern():
    x = RNG.standard_normal((64, 12, 8)).astype(np.float32)
    out = simulate(avgpool2d, check_races=True)(x, 2)
    golden = x.reshape(64, 6, 2, 4, 2).mean(axis=(2, 4))
    np.testing.assert_allclose(out, golden, rtol=1e-6, atol=1e-6)


# ---- selective scan (Mamba-style) ----------------------------------------------------------------
@jit
def selective_scan(delta, u, A, B, C):
    """y[c, t] = sum_s h_s[c, t] * C[s, t], h_s[c, t] = exp(delta*A[c, s]) h_s[c, t-1]
    + delta*u*B[s, t]: exp with a per-partition scale tile, and a tensor_tensor_scan."""
    channels, length = delta.shape
    _, states = A.shape
    out = nl.ndarray((channels, length), dtype=delta.dtype, buffer=nl.shared_hbm)
    delta_t = nl.load(delta)
    delta_u = delta_t * nl.load(u)
    acc = nl.zeros((channels, length), dtype=nl.float32, buffer=nl.sbuf)
    for s in nl.affine_range(states):
        a_col = nl.ndarray((channels, 1), dtype=A.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=a_col, src=A[:, s])
        delta_a = nl.ndarray((channels, length), dtype=nl.float32, buffer=nl.sbuf)
        nisa.activation(dst=delta_a, op=nl.exp, data=delta_t, scale=a_col)
        # Row s of B and C, broadcast to every partition by a zero partition step.
        b_row = nl.ndarray((channels, length), dtype=B.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=b_row, src=B.ap(pattern=[[0, channels], [1, length]], offset=s * length))
        c_row = nl.ndarray((channels, length), dtype=C.dtype, buffer=nl.sbuf)
        nisa.dma_copy(dst=c_row, src=C.ap(pattern=[[0, channels], [1, length]], offset=s * length))
        delta_bu = nl.ndarray((channels, length), dtype=nl.float32, buffer=nl.sbuf)
        nisa.tensor_tensor(dst=delta_bu, data1=delta_u, data2=b_row, op=nl.multiply)
        scan = nl.ndarray((channels, length), dtype=nl.float32, buffer=nl.sbuf)
        nisa.tensor_tensor_scan(dst=scan, data0=delta_a, data1=delta_bu, initial=0.0,
                                op0=nl.multiply, op1=nl.add)
        nisa.tensor_tensor(dst=scan, data1=scan, data2=c_row, op=nl.multiply)
        nisa.tensor_tensor(dst=acc, data1=acc, data2=scan, op=nl.add)
    nisa.dma_copy(dst=out, src=acc)
    return out


def test_selective_scan():
    channels, length, states = 128, 48, 3
    delta = RNG.uniform(0.05, 0.5, (channels, length)).astype(np.float32)
    u = RNG.standard_normal((channels, length)).astype(np.float32)
    A = -RNG.uniform(0.5, 2.0, (channels, states)).astype(np.float32)
    B = RNG.standard_normal((states, length)).astype(np.float32)
    C = RNG.standard_normal((states, length)).astype(np.float32)
    out = simulate(selective_scan, check_races=True)(delta, u, A, B, C)
    golden = np.zeros((channels, length))
    for s in range(states):
        decay = np.exp(delta * A[:, s:s + 1])
        drive = delta * u * B[s]
        h = np.zeros(channels)
        for t in range(length):
            h = decay[:, t] * h + drive[:, t]
            golden[:, t] += h * C[s, t]
    np.testing.assert_allclose(out, golden, rtol=1e-4, atol=1e-5)


# ---- value-returning element-wise ops and in-place parameters ----------------------------------
@jit
def scaled_gelu_into(x, out):
    """out = gelu(x) * 0.5 + 1, written into the `out` parameter (no return value)."""
    x_tile = nl.load(x)
    y = nl.gelu(x_tile) * 0.5 + 1.0
    nl.store(out, y)


def test_outputs_written_into_parameters_go_back_to_the_arrays():
    x = RNG.standard_normal((32, 40)).astype(np.float32)
    out = np.zeros_like(x)
    assert simulate(scaled_gelu_into, check_races=True)(x, out) is None
    from math import erf
    golden = np.vectorize(lambda v: 0.5 * v * (1 + erf(v / np.sqrt(2))))(x) * 0.5 + 1
    np.testing.assert_allclose(out, golden, rtol=1e-5, atol=1e-6)


@jit
def two_outputs(x):
    """Returns (x + 1, x * x): two shared_hbm tensors, returned in order."""
    plus = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    square = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    x_tile = nl.load(x)
    nl.store(plus, x_tile + 1)
    nl.store(square, nl.multiply(x_tile, x_tile))
    return plus, square


def test_a_tuple_return_gives_a_tuple_of_arrays():
    x = RNG.standard_normal((16, 8)).astype(np.float32)
    plus, square = simulate(two_outputs, check_races=True)(x)
    np.testing.assert_array_equal(plus, x + 1)
    np.testing.assert_array_equal(square, x * x)


# ---- layer normalisation with bn_stats / bn_aggr -----------------------------------------------
@jit
def layernorm(x, eps):
    """y = (x - mean) / sqrt(var + eps) per row; statistics of 512-element chunks aggregated."""
    P, F = x.shape
    chunk = nl.tile_size.bn_stats_fmax
    chunks = (F + chunk - 1) // chunk
    out = nl.ndarray((P, F), dtype=x.dtype, buffer=nl.shared_hbm)
    x_t = nl.load(x)
    stats = nl.ndarray((P, 6 * chunks), dtype=nl.float32, buffer=nl.sbuf)
    for c in nl.affine_range(chunks):
        width = min(chunk, F - c * chunk)
        nisa.bn_stats(dst=stats[:, 6 * c:6 * c + 6], data=x_t[:, nl.ds(c * chunk, width)])
    mean_var = nl.ndarray((P, 2), dtype=nl.float32, buffer=nl.sbuf)
    nisa.bn_aggr(dst=mean_var, data=stats)
    rstd = nl.ndarray((P, 1), dtype=nl.float32, buffer=nl.sbuf)
    nisa.tensor_scalar(dst=rstd, data=mean_var[:, 1:2], op0=nl.add, operand0=eps)
    nisa.activation(dst=rstd, op=nl.rsqrt, data=rstd)
    y = nl.ndarray((P, F), dtype=x.dtype, buffer=nl.sbuf)
    nisa.tensor_scalar(dst=y, data=x_t, op0=nl.subtract, operand0=mean_var[:, 0:1],
                       op1=nl.multiply, operand1=rstd)
    nl.store(out, y)
    return out


def test_layernorm_with_bn_stats():
    x = (3 + 2 * RNG.standard_normal((100, 1000))).astype(np.float32)
    out = simulate(layernorm, check_races=True)(x, 1e-5)
    golden = (x - x.mean(axis=1, keepdims=True)) / np.sqrt(x.var(axis=1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(out, golden, rtol=2e-4, atol=2e-4)


# ---- a scan carried across chunks (loop-carried dependency through a [P, 1] tile) --------------
@jit
def chunked_cumsum(x):
    """Running sums along each row, 128 columns per scan, the carry copied on GpSimd."""
    P, F = x.shape
    out = nl.ndarray((P, F), dtype=nl.float32, buffer=nl.shared_hbm)
    x_t = nl.load(x)
    ones = nl.ones((P, 128), dtype=nl.float32, buffer=nl.sbuf)
    carry = nl.zeros((P, 1), dtype=nl.float32, buffer=nl.sbuf)
    sums = nl.ndarray((P, F), dtype=nl.float32, buffer=nl.sbuf)
    for c in nl.sequential_range(F // 128):
        cols = nl.ds(c * 128, 128)
        nisa.tensor_tensor_scan(dst=sums[:, cols], data0=ones, data1=x_t[:, cols],
                                initial=carry, op0=nl.multiply, op1=nl.add)
        nisa.tensor_copy(dst=carry, src=sums[:, c * 128 + 127:c * 128 + 128],
                         engine=nisa.engine.gpsimd)
    nl.store(out, sums)
    return out


def test_scan_carried_across_chunks():
    x = RNG.standard_normal((64, 512)).astype(np.float32)
    out = simulate(chunked_cumsum, check_races=True)(x)
    np.testing.assert_allclose(out, np.cumsum(x, axis=1), rtol=1e-4, atol=1e-4)


# ---- iota, causal masks, reductions with negate / keepdims / mean ------------------------------
@jit
def masks_and_stats(x):
    """Returns (iota over an 8 x 8 pattern, causal-masked x, -row min, row mean)."""
    P, F = x.shape
    ramp_out = nl.ndarray((P, 64), dtype=nl.int32, buffer=nl.shared_hbm)
    masked_out = nl.ndarray((P, F), dtype=nl.float32, buffer=nl.shared_hbm)
    stats_out = nl.ndarray((P, 2), dtype=nl.float32, buffer=nl.shared_hbm)
    ramp = nl.ndarray((P, 64), dtype=nl.int32, buffer=nl.sbuf)
    nisa.iota(dst=ramp, pattern=[[10, 8], [1, 8]], offset=5, channel_multiplier=100)
    nl.store(ramp_out, ramp)
    x_t = nl.load(x)
    masked = nl.ndarray((P, F), dtype=nl.float32, buffer=nl.sbuf)
    nisa.affine_select(dst=masked, pattern=[[-1, F]], channel_multiplier=1, on_true_tile=x_t,
                       on_false_value=-1e9, cmp_op=nl.greater_equal)
    nl.store(masked_out, masked)
    stats = nl.ndarray((P, 2), dtype=nl.float32, buffer=nl.sbuf)
    nisa.tensor_reduce(dst=stats[:, 0:1], op=nl.minimum, data=x_t, axis=[1], negate=True,
                       keepdims=True)
    nisa.tensor_copy(dst=stats[:, 1:2], src=nl.mean(x_t, axis=1, keepdims=True))
    nl.store(stats_out, stats)
    return ramp_out, masked_out, stats_out


def test_iota_affine_select_and_reductions():
    x = RNG.standard_normal((128, 96)).astype(np.float32)
    ramp, masked, stats = simulate(masks_and_stats, check_races=True)(x)
    p = np.arange(128)[:, None]
    j = np.arange(64)[None, :]
    np.testing.assert_array_equal(ramp, 5 + 100 * p + 10 * (j // 8) + j % 8)
    np.testing.assert_array_equal(masked, np.where(p >= np.arange(96)[None, :], x, -1e9))
    np.testing.assert_allclose(stats[:, 0], -x.min(axis=1))
    np.testing.assert_allclose(stats[:, 1], x.mean(axis=1), rtol=1e-5, atol=1e-6)
