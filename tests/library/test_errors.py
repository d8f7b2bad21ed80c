"""Shapes and layouts a library kernel cannot run fail while tracing, before any instruction is
recorded, with a LayoutError naming the kernel, the tile or block, the value and the limit; the
registry rejects unknown parameters and values outside their allowed sets."""

from __future__ import annotations

import dataclasses

import ml_dtypes
import numpy as np
import pytest

from emulator.kernel_runner import trace
from kernels.library import (
    LIBRARY,
    LayoutError,
    LibraryKernel,
    Param,
    Tolerance,
    attention,
    conv,
    elementwise,
    matmul,
    mlp,
    softmax,
    transpose,
)
from kernels.trace import TensorSpec

SBUF = r"SBUF has 196608 bytes per partition"


def spec(*shape: int, dtype=ml_dtypes.bfloat16) -> TensorSpec:
    return TensorSpec(shape, dtype)


# ---- tile limits of the hardware -----------------------------------------------------------------
@pytest.mark.parametrize("kernel", [matmul.matmul_naive, matmul.matmul_hoisted,
                                    matmul.matmul_blocked, matmul.matmul])
def test_a_moving_tile_over_512_is_rejected(kernel):
    with pytest.raises(LayoutError, match=rf"{kernel.name}: moving tile TILE_N=1024 must be "
                                          r"1\.\.512 \(nl\.tile_size\.gemm_moving_fmax\)"):
        trace(kernel, spec(1024, 1024), spec(1024, 2048), TILE_N=1024)


def test_contraction_and_stationary_tiles_are_bounded():
    with pytest.raises(LayoutError, match=r"contraction tile TILE_K=256 must be 1\.\.128 "
                                          r"\(nl\.tile_size\.pmax\)"):
        trace(matmul.matmul_naive, spec(512, 128), spec(512, 512), TILE_K=256)
    with pytest.raises(LayoutError, match=r"stationary tile TILE_M=0 must be 1\.\.128 "
                                          r"\(nl\.tile_size\.gemm_stationary_fmax\)"):
        trace(matmul.matmul_naive, spec(128, 128), spec(128, 512), TILE_M=0)


def test_one_matmul_takes_at_most_one_tile():
    with pytest.raises(LayoutError, match=r"matmul_basic: one matmul takes .* got K=128, "
                                          r"M=128, N=1024"):
        trace(matmul.matmul_basic, spec(128, 128), spec(128, 1024))


def test_operands_must_share_the_contraction_axis():
    with pytest.raises(LayoutError, match=r"lhsT \[K=256, M=128\] and rhs \[K=128, N=512\] "
                                          r"must share K"):
        trace(matmul.matmul_naive, spec(256, 128), spec(128, 512))


def test_blocks_must_divide_the_shape():
    with pytest.raises(LayoutError, match=r"matmul_blocked: M=384 must be a multiple of its "
                                          r"block BLOCK_M=256"):
        trace(matmul.matmul_blocked, spec(256, 384), spec(256, 512))
    with pytest.raises(LayoutError, match=r"matmul: K=768 must be a multiple of its block "
                                          r"BLOCK_K=512"):
        trace(matmul.matmul, spec(768, 256), spec(768, 512))


# ---- capacity ------------------------------------------------------------------------------------
def test_blocks_that_overflow_sbuf_are_rejected_with_their_size():
    # 16 K tiles x (2048 + 2048) bf16 columns = 128 KiB of blocks, double buffered: 256 KiB.
    with pytest.raises(LayoutError, match=rf"matmul: blocks BLOCK_M=2048 x BLOCK_N=2048 x "
                                          rf"BLOCK_K=2048 \(262144 B of double-buffered lhsT/rhs "
                                          rf"blocks .* needs \d+ bytes per partition; {SBUF}"):
        trace(matmul.matmul, spec(2048, 2048), spec(2048, 2048), TILES_IN_BLOCK_M=16,
              TILES_IN_BLOCK_N=4, TILES_IN_BLOCK_K=16)


def test_hoisted_and_blocked_columns_must_fit_sbuf():
    with pytest.raises(LayoutError, match=rf"matmul_hoisted: operand columns of K=131072 .* "
                                          rf"{SBUF}"):
        trace(matmul.matmul_hoisted, spec(131072, 128), spec(131072, 512))
    with pytest.raises(LayoutError, match=rf"matmul_blocked: blocks BLOCK_M=1024 x BLOCK_N=2048 "
                                          rf"of K=8192 rows .* {SBUF}"):
        trace(matmul.matmul_blocked, spec(8192, 1024), spec(8192, 2048), TILES_IN_BLOCK_M=8,
              TILES_IN_BLOCK_N=4)


def test_mlp_weights_must_fit_sbuf():
    with pytest.raises(LayoutError, match=rf"mlp: resident w1 \(32 x 16384\) and w2 \(128 x "
                                          rf"4096\) .* {SBUF}"):
        trace(mlp.mlp, spec(128, 4096), spec(4096, 16384), spec(16384, 4096))


def test_row_kernels_must_fit_a_row_in_sbuf():
    with pytest.raises(LayoutError, match=rf"softmax: rows of C=20000 elements .* {SBUF}"):
        trace(softmax.softmax, spec(128, 20000))
    with pytest.raises(LayoutError, match=rf"unary: F_TILE=20000 .* {SBUF}"):
        trace(elementwise.unary, spec(128, 40000, dtype=np.float32), F_TILE=20000)
    # A broadcast row stays on every partition for the whole run.
    with pytest.raises(LayoutError, match=rf"binary: .* 240000 B of broadcast rows .* {SBUF}"):
        trace(elementwise.binary, spec(256, 60000, dtype=np.float32),
              spec(60000, dtype=np.float32))


def test_transposed_bands_must_fit_one_psum_bank():
    with pytest.raises(LayoutError, match=r"BANDS_PER_STORE=8 must be 1\.\.4: .* "
                                          r"nl\.tile_size\.psum_fmax=512 columns"):
        trace(transpose.transpose, spec(1024, 256), BANDS_PER_STORE=8)


# ---- shapes the kernels do not take --------------------------------------------------------------
def test_attention_constraints():
    with pytest.raises(LayoutError, match=r"head size D=192 exceeds nl\.tile_size\.pmax=128"):
        trace(attention.attention, spec(1, 1, 128, 192), spec(1, 1, 128, 192),
              spec(1, 1, 128, 192))
    with pytest.raises(LayoutError, match=r"KV_TILE=1024 must be a multiple of 128 up to "
                                          r"nl\.tile_size\.gemm_moving_fmax=512"):
        trace(attention.attention, spec(1, 1, 128, 64), spec(1, 1, 128, 64),
              spec(1, 1, 128, 64), KV_TILE=1024)
    with pytest.raises(LayoutError, match=r"causal masking needs as many keys as queries, got "
                                          r"S=128, S_kv=256"):
        trace(attention.attention, spec(1, 1, 128, 64), spec(1, 1, 256, 64),
              spec(1, 1, 256, 64), causal=True)


def test_conv2d_rows_must_fit_the_moving_tile():
    with pytest.raises(LayoutError, match=r"an output row of W_out=600 pixels exceeds the "
                                          r"moving tile TILE_N=512"):
        trace(conv.conv2d, spec(1, 3, 4, 600), spec(8, 3, 1, 1))
    with pytest.raises(LayoutError, match=r"moving tile TILE_N=1024 must be 1\.\.512"):
        trace(conv.conv2d, spec(1, 3, 8, 8), spec(8, 3, 3, 3), TILE_N=1024)
    with pytest.raises(LayoutError, match=r"x has C_in=3 channels, w expects 4"):
        trace(conv.conv2d, spec(1, 3, 8, 8), spec(8, 4, 3, 3))


def test_pool_window_must_fit_the_image():
    with pytest.raises(LayoutError, match=r"maxpool: kernel_size=5 exceeds the 4x4 image"):
        trace(conv.maxpool, spec(1, 8, 4, 4), kernel_size=5)


def test_binary_operands_must_broadcast():
    with pytest.raises(LayoutError, match=r"binary: operand shapes \(128, 64\) and \(128, 3\) "
                                          r"do not broadcast"):
        trace(elementwise.binary, spec(128, 64), spec(128, 3))
    with pytest.raises(LayoutError, match=r"binary: op='power' is not one of"):
        trace(elementwise.binary, spec(128, 64), spec(128, 64), op="power")


# ---- the registry --------------------------------------------------------------------------------
def test_registry_rejects_unknown_names_and_disallowed_values():
    entry = LIBRARY["matmul"]
    with pytest.raises(ValueError, match=r"matmul: TILES_IN_BLOCK_M=3 is not one of "
                                         r"\(1, 2, 4, 8, 16\)"):
        entry.layout_values({"TILES_IN_BLOCK_M": 3})
    with pytest.raises(ValueError, match=r"matmul: unknown layout parameters \['BLOCK_Q'\]"):
        entry.kernel_kwargs(layout={"BLOCK_Q": 1})
    with pytest.raises(ValueError, match=r"matmul: unknown shapes \['Q'\]"):
        entry.inputs({"Q": 3})
    with pytest.raises(ValueError, match=r"matmul: shape M=0 must be an int >= 1"):
        entry.inputs({"M": 0})
    with pytest.raises(ValueError, match=r"matmul: dtype 'fp16' is not one of"):
        entry.inputs(dtype="fp16")
    with pytest.raises(ValueError, match=r"attention: causal=1 is not one of"):
        LIBRARY["attention"].option_values({"causal": 1})


def _record(**changes) -> LibraryKernel:
    base = LIBRARY["softmax"]
    return dataclasses.replace(base, **changes)


def test_registry_records_check_themselves():
    with pytest.raises(ValueError, match=r"parameters \['NORMALIZE'\] are declared twice"):
        _record(options=(Param("NORMALIZE", "divide", "again"),))
    with pytest.raises(ValueError, match=r"softmax takes no argument \['TILE_Q'\]"):
        _record(layout=(Param("TILE_Q", 1, "not a kernel argument"),))
    with pytest.raises(ValueError, match=r"tolerances for \['fp32'\], need \['bf16', 'fp32'\]"):
        _record(tolerance=(("fp32", Tolerance(0.0, 0.0)),))
    with pytest.raises(ValueError, match=r"default 'x' is not one of its allowed values"):
        Param("MODE", "x", "a mode", ("a", "b"))
    with pytest.raises(ValueError, match=r"must be >= 0"):
        Tolerance(-1.0, 0.0)
