"""Every library kernel matches its numpy golden at fp32 and bf16, within the tolerance its
registry record states, on small shapes with ragged edge tiles where the kernel accepts them.
Each run also checks the traced program race-free.
"""

from __future__ import annotations

import pytest

from kernels.library import DTYPES, LIBRARY
from kernels.library.inputs import BROADCASTS
from tests.library.helpers import assert_matches_golden, run

# A small shape per kernel: ragged (not multiples of 128 / 512) where the kernel supports it.
SMALL: dict[str, dict[str, int]] = {
    "matmul_basic": {"M": 100, "N": 300, "K": 70},
    "matmul_naive": {"M": 130, "N": 520, "K": 200},
    "matmul_hoisted": {"M": 130, "N": 520, "K": 200},
    "matmul_blocked": {"M": 256, "N": 512, "K": 256},
    "matmul": {"M": 256, "N": 512, "K": 512},
    "softmax": {"rows": 200, "cols": 300},
    "layernorm": {"rows": 200, "cols": 700},
    "layernorm_naive": {"rows": 200, "cols": 700},
    "rmsnorm": {"rows": 200, "cols": 700},
    "transpose": {"rows": 300, "cols": 200},
    "transpose_dma": {"rows": 300, "cols": 200},
    "conv2d": {"batch": 2, "c_in": 20, "height": 9, "width": 7, "c_out": 24, "kernel_h": 3,
               "kernel_w": 3},
    "avgpool": {"batch": 2, "channels": 70, "height": 9, "width": 8},
    "maxpool": {"batch": 2, "channels": 70, "height": 9, "width": 8},
    "attention": {"batch": 1, "heads": 2, "seq": 200, "head_dim": 32},
    "mlp": {"tokens": 200, "d_model": 96, "d_ff": 160},
}
ROWS_COLS = {"rows": 200, "cols": 300}


def small_shape(name: str) -> dict[str, int]:
    return SMALL.get(name, ROWS_COLS)  # the element-wise kernels


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_kernel_matches_golden(name, dtype):
    result, golden = run(name, small_shape(name), dtype=dtype)
    assert result.dtype == DTYPES[dtype]
    assert_matches_golden(name, result, golden, dtype)


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("broadcast", sorted(BROADCASTS))
@pytest.mark.parametrize("name", ["subtract", "divide"])
def test_binary_broadcasting(name, broadcast, dtype):
    """Non-commutative ops with y broadcast as a row, a 1-D vector, a column or a scalar."""
    result, golden = run(name, {"rows": 200, "cols": 600}, {"broadcast": broadcast},
                         {"F_TILE": 256}, dtype)
    assert result.shape == (200, 600)
    assert_matches_golden(name, result, golden, dtype)


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("stride, padding", [(2, 0), (2, 2), (3, 1)])
def test_conv2d_stride_and_padding(stride, padding, dtype):
    shapes = {"batch": 1, "c_in": 140, "height": 11, "width": 10, "c_out": 130, "kernel_h": 3,
              "kernel_w": 2}
    result, golden = run("conv2d", shapes, {"stride": stride, "padding": padding},
                         {"TILE_N": 64}, dtype)
    assert_matches_golden("conv2d", result, golden, dtype)


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("kernel, stride", [(3, 1), (3, 2), (4, 3)])
@pytest.mark.parametrize("name", ["avgpool", "maxpool"])
def test_pooling_windows(name, kernel, stride, dtype):
    result, golden = run(name, {"batch": 1, "channels": 130, "height": 11, "width": 9},
                         {"kernel_size": kernel, "stride": stride}, {"REDUCE": "separable"}, dtype)
    assert_matches_golden(name, result, golden, dtype)


@pytest.mark.parametrize("dtype", sorted(DTYPES))
@pytest.mark.parametrize("kv_tile", [128, 512])
def test_causal_attention(kv_tile, dtype):
    result, golden = run("attention", {"batch": 2, "heads": 1, "seq": 300, "head_dim": 48},
                         {"causal": True}, {"KV_TILE": kv_tile}, dtype)
    assert_matches_golden("attention", result, golden, dtype)


@pytest.mark.parametrize("activation", ["gelu_apprx_tanh", "silu", "relu"])
def test_mlp_activations(activation):
    result, golden = run("mlp", {"tokens": 130, "d_model": 64, "d_ff": 200},
                         {"activation": activation}, dtype="bf16")
    assert_matches_golden("mlp", result, golden, "bf16")
