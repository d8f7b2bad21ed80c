"""Library kernels over generated legal shapes, ragged edges included where a kernel accepts
them, at both dtypes: every result matches the golden within the record's tolerance and every
traced program is race-free.  Examples are few and shapes small (the whole package runs in
well under a minute and a half)."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from kernels.library import DTYPES
from kernels.library.elementwise import BINARY_OPS, UNARY_OPS
from kernels.library.inputs import BROADCASTS
from tests.library.helpers import assert_matches_golden, run

EXAMPLES = settings(max_examples=5, deadline=None)
dtypes = st.sampled_from(sorted(DTYPES))
seeds = st.integers(0, 2**16)


def _check(name, shapes, options=None, layout=None, dtype="fp32", seed=0):
    result, golden = run(name, shapes, options, layout, dtype, seed)
    assert_matches_golden(name, result, golden, dtype)


@EXAMPLES
@given(name=st.sampled_from(["matmul_naive", "matmul_hoisted"]), M=st.integers(1, 260),
       N=st.integers(1, 700), K=st.integers(1, 300), tile_m=st.sampled_from([64, 128]),
       tile_n=st.sampled_from([128, 512]), dtype=dtypes, seed=seeds)
def test_tiled_matmul_any_shape(name, M, N, K, tile_m, tile_n, dtype, seed):
    _check(name, {"M": M, "N": N, "K": K}, layout={"TILE_M": tile_m, "TILE_N": tile_n},
           dtype=dtype, seed=seed)


@EXAMPLES
@given(name=st.sampled_from(["matmul_blocked", "matmul"]), tile_m=st.sampled_from([32, 64, 128]),
       tile_k=st.sampled_from([32, 64, 128]), tile_n=st.sampled_from([128, 256, 512]),
       in_block=st.tuples(st.sampled_from([1, 2]), st.sampled_from([1, 2]),
                          st.sampled_from([1, 2])),
       blocks=st.tuples(st.integers(1, 2), st.integers(1, 2), st.integers(1, 2)),
       dtype=dtypes, seed=seeds)
def test_blocked_matmul_multiples_of_blocks(name, tile_m, tile_k, tile_n, in_block, blocks,
                                            dtype, seed):
    layout = {"TILE_M": tile_m, "TILE_K": tile_k, "TILE_N": tile_n,
              "TILES_IN_BLOCK_M": in_block[0], "TILES_IN_BLOCK_N": in_block[1]}
    k_block = tile_k
    if name == "matmul":
        layout["TILES_IN_BLOCK_K"] = in_block[2]
        k_block *= in_block[2]
    shapes = {"M": tile_m * in_block[0] * blocks[0], "N": tile_n * in_block[1] * blocks[1],
              "K": k_block * blocks[2]}
    _check(name, shapes, layout=layout, dtype=dtype, seed=seed)


@EXAMPLES
@given(op=st.sampled_from(sorted(BINARY_OPS)), broadcast=st.sampled_from(sorted(BROADCASTS)),
       rows=st.integers(1, 300), cols=st.integers(1, 1100), f_tile=st.sampled_from([256, 512]),
       dtype=dtypes, seed=seeds)
def test_binary_any_shape(op, broadcast, rows, cols, f_tile, dtype, seed):
    _check(op, {"rows": rows, "cols": cols}, {"broadcast": broadcast}, {"F_TILE": f_tile},
           dtype, seed)


@EXAMPLES
@given(op=st.sampled_from(sorted(UNARY_OPS)), rows=st.integers(1, 300), cols=st.integers(1, 1100),
       f_tile=st.sampled_from([256, 2048]), dtype=dtypes, seed=seeds)
def test_unary_any_shape(op, rows, cols, f_tile, dtype, seed):
    _check(op, {"rows": rows, "cols": cols}, layout={"F_TILE": f_tile}, dtype=dtype, seed=seed)


@EXAMPLES
@given(name=st.sampled_from(["softmax", "layernorm", "layernorm_naive", "rmsnorm"]),
       rows=st.integers(1, 300), cols=st.integers(16, 1100), dtype=dtypes, seed=seeds)
def test_rowwise_any_shape(name, rows, cols, dtype, seed):
    # Rows of at least 16 elements: the variance of two or three draws can be arbitrarily
    # small, and then fp32 centring (an ulp of the mean over the standard deviation) dominates
    # any fixed tolerance, in the kernel and in any fp32 implementation.
    _check(name, {"rows": rows, "cols": cols}, dtype=dtype, seed=seed)


@EXAMPLES
@given(name=st.sampled_from(["transpose", "transpose_dma"]), rows=st.integers(1, 600),
       cols=st.integers(1, 300), dtype=dtypes, seed=seeds)
def test_transpose_any_shape(name, rows, cols, dtype, seed):
    _check(name, {"rows": rows, "cols": cols}, dtype=dtype, seed=seed)


@EXAMPLES
@given(batch=st.integers(1, 2), c_in=st.integers(1, 140), c_out=st.integers(1, 140),
       height=st.integers(1, 10), width=st.integers(1, 10), kernel_h=st.integers(1, 3),
       kernel_w=st.integers(1, 3), stride=st.sampled_from([1, 2, 3]),
       padding=st.sampled_from([0, 1, 2]), tile_n=st.sampled_from([64, 512]), dtype=dtypes,
       seed=seeds)
def test_conv2d_any_shape(batch, c_in, c_out, height, width, kernel_h, kernel_w, stride,
                          padding, tile_n, dtype, seed):
    assume(height + 2 * padding >= kernel_h and width + 2 * padding >= kernel_w)
    shapes = {"batch": batch, "c_in": c_in, "height": height, "width": width, "c_out": c_out,
              "kernel_h": kernel_h, "kernel_w": kernel_w}
    _check("conv2d", shapes, {"stride": stride, "padding": padding}, {"TILE_N": tile_n},
           dtype, seed)


@EXAMPLES
@given(name=st.sampled_from(["avgpool", "maxpool"]), planes=st.tuples(st.integers(1, 2),
                                                                       st.integers(1, 140)),
       height=st.integers(1, 12), width=st.integers(1, 12), kernel=st.integers(1, 4),
       stride=st.integers(1, 4), reduce=st.sampled_from(["window", "separable"]),
       dtype=dtypes, seed=seeds)
def test_pooling_any_shape(name, planes, height, width, kernel, stride, reduce, dtype, seed):
    assume(kernel <= min(height, width))
    shapes = {"batch": planes[0], "channels": planes[1], "height": height, "width": width}
    _check(name, shapes, {"kernel_size": kernel, "stride": stride}, {"REDUCE": reduce}, dtype, seed)


@EXAMPLES
@given(heads=st.integers(1, 2), seq=st.integers(1, 300), head_dim=st.integers(1, 128),
       causal=st.booleans(), kv_tile=st.sampled_from([128, 256, 512]), dtype=dtypes, seed=seeds)
def test_attention_any_shape(heads, seq, head_dim, causal, kv_tile, dtype, seed):
    _check("attention", {"batch": 1, "heads": heads, "seq": seq, "head_dim": head_dim},
           {"causal": causal}, {"KV_TILE": kv_tile}, dtype, seed)


@EXAMPLES
@given(tokens=st.integers(1, 600), d_model=st.integers(1, 200), d_ff=st.integers(1, 300),
       activation=st.sampled_from(["gelu", "silu"]), token_tile=st.sampled_from([128, 512]),
       dtype=dtypes, seed=seeds)
def test_mlp_any_shape(tokens, d_model, d_ff, activation, token_tile, dtype, seed):
    _check("mlp", {"tokens": tokens, "d_model": d_model, "d_ff": d_ff},
           {"activation": activation}, {"TOKEN_TILE": token_tile}, dtype, seed)
