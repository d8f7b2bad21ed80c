"""Layout parameters move time the way the cost model predicts (benchmark reports), and never
move the result: bit-identical where a layout keeps every element's summation order, within
fp32 rounding where it regroups a sum.

Figures measured when these tests were written (inf2; latency in us): bf16 matmul M=N=512,
K=1024: naive 53.3 (TensorE HFU 11.0%), hoisted 31.2, blocked 26.3, fully blocked 19.4 (HFU
30.1%); matmul_naive M=128 N=1024 K=256: TILE_N=512 9.8 vs TILE_N=128 38.4; fp32 attention,
seq 512, d 64: KV_TILE=512 19.8 us / 93 instructions vs KV_TILE=128 27.9 us / 213.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.library.helpers import instructions, run, timed

MATMUL_SHAPE = {"M": 512, "N": 512, "K": 1024}
MATMUL_STEPS = ("matmul_naive", "matmul_hoisted", "matmul_blocked", "matmul")


@pytest.fixture(scope="module")
def matmul_steps():
    """(result, report) of the four tiled steps of the tutorial on one bf16 shape."""
    return {name: timed(name, MATMUL_SHAPE) for name in MATMUL_STEPS}


def test_fully_blocked_matmul_uses_tensore_better_than_naive(matmul_steps):
    naive, full = matmul_steps["matmul_naive"][1], matmul_steps["matmul"][1]
    # Naive: 2 DMAs (a 128x128 and a 128x512 tile) per matmul, DMA-bound; fully blocked: with
    # N one block wide, each operand element is read from HBM exactly once (2 x 1 MiB of bf16).
    assert full.tensor_hfu > 2 * naive.tensor_hfu
    operand_bytes = 2 * MATMUL_SHAPE["K"] * (MATMUL_SHAPE["M"] + MATMUL_SHAPE["N"])
    assert full.cores[0].memory["hbm_read_bytes"] == operand_bytes
    assert naive.cores[0].memory["hbm_read_bytes"] > 2 * operand_bytes


def test_each_tutorial_step_is_faster_than_the_last(matmul_steps):
    latencies = [matmul_steps[name][1].latency_ns for name in MATMUL_STEPS]
    assert latencies == sorted(latencies, reverse=True)
    assert len(set(latencies)) == len(latencies)


def test_matmul_steps_compute_the_same_result(matmul_steps):
    naive = matmul_steps["matmul_naive"][0]
    # Steps 2-4 sum the K tiles of each element in the same order, in one PSUM group.
    for name in ("matmul_hoisted", "matmul_blocked"):
        np.testing.assert_array_equal(matmul_steps[name][0], naive)
    # Step 5 adds per-K-block PSUM sums in SBUF: the fp32 sums agree to rounding, so the bf16
    # results are at most one bf16 ulp (2^-8 relative) apart.
    np.testing.assert_allclose(matmul_steps["matmul"][0].astype(np.float64),
                               naive.astype(np.float64), rtol=2**-7, atol=1e-3)


def test_a_bigger_moving_tile_lowers_matmul_time():
    shape = {"M": 128, "N": 1024, "K": 256}
    wide, wide_report = timed("matmul_naive", shape, layout={"TILE_N": 512})
    narrow, narrow_report = timed("matmul_naive", shape, layout={"TILE_N": 128})
    # The issue interval is max(N, 64) cycles, so 4x the matmuls of N=128 take the same TensorE
    # time; what grows is the per-instruction cost: 4x the DMAs (1.3 us fixed each), evictions.
    assert wide_report.latency_ns < narrow_report.latency_ns / 2
    assert (narrow_report.cores[0].engines["tensor"].instructions
            == 4 * wide_report.cores[0].engines["tensor"].instructions)
    np.testing.assert_array_equal(wide, narrow)


@pytest.mark.parametrize("causal", [False, True])
def test_larger_kv_tiles_issue_fewer_attention_instructions(causal):
    shape = {"batch": 1, "heads": 1, "seq": 512, "head_dim": 64}
    big, big_report = timed("attention", shape, {"causal": causal}, {"KV_TILE": 512}, "fp32")
    small, small_report = timed("attention", shape, {"causal": causal}, {"KV_TILE": 128}, "fp32")
    # The running-statistics steps (about ten Vector/Scalar instructions) run once per KV tile.
    assert instructions(big_report) < instructions(small_report)
    assert big_report.latency_ns < small_report.latency_ns
    np.testing.assert_allclose(big, small, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name, layout, fast, slow, shape", [
    ("transpose", "BANDS_PER_STORE", 4, 1, {"rows": 512, "cols": 256}),
    ("transpose_dma", "TILE_R", 512, 128, {"rows": 512, "cols": 256}),
    ("add", "F_TILE", 2048, 256, {"rows": 256, "cols": 2048}),
    ("mlp", "TOKEN_TILE", 512, 128, {"tokens": 512, "d_model": 128, "d_ff": 256}),
    ("conv2d", "TILE_N", 512, 64, {"batch": 1, "c_in": 32, "height": 16, "width": 16,
                                   "c_out": 32, "kernel_h": 3, "kernel_w": 3}),
])
def test_fewer_larger_tiles_run_faster(name, layout, fast, slow, shape):
    """Bigger tiles mean fewer DMAs (each with a fixed cost) and fewer instructions (each with
    a fixed overhead) for the same bytes and FLOPs; none of these regroups a sum."""
    fast_result, fast_report = timed(name, shape, layout={layout: fast})
    slow_result, slow_report = timed(name, shape, layout={layout: slow})
    assert fast_report.latency_ns < slow_report.latency_ns
    assert instructions(fast_report) < instructions(slow_report)
    np.testing.assert_array_equal(fast_result, slow_result)


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_separable_pooling_wins_only_when_windows_overlap(dtype):
    shape = {"batch": 1, "channels": 128, "height": 32, "width": 32}

    def latency(kernel, stride, reduce):
        result, report = timed("maxpool", shape, {"kernel_size": kernel, "stride": stride},
                               {"REDUCE": reduce}, dtype)
        return result, report.latency_ns

    # 3x3 windows at stride 1: 9 elements per output in one pass, 3 + 3 separably.
    window, window_ns = latency(3, 1, "window")
    separable, separable_ns = latency(3, 1, "separable")
    assert separable_ns < window_ns
    np.testing.assert_array_equal(window, separable)
    # 2x2 windows at stride 2 do not overlap: the second pass is pure overhead.
    assert latency(2, 2, "window")[1] < latency(2, 2, "separable")[1]


@pytest.mark.parametrize("name", ["layernorm", "rmsnorm"])
def test_scalar_engine_apply_offloads_the_vector_engine(name):
    shape = {"rows": 256, "cols": 1024}
    on_vector, vector_report = timed(name, shape, layout={"APPLY_ENGINE": "vector"})
    on_scalar, scalar_report = timed(name, shape, layout={"APPLY_ENGINE": "scalar"})
    vector_busy = vector_report.cores[0].engines["vector"].busy_ns
    assert scalar_report.cores[0].engines["vector"].busy_ns < vector_busy
    assert scalar_report.latency_ns <= vector_report.latency_ns
    # Both round the fp32 result once to bf16; the fp32 values differ by operation order only.
    np.testing.assert_allclose(on_scalar.astype(np.float64), on_vector.astype(np.float64),
                               rtol=2**-7, atol=1e-3)


# ---- every layout value, result unchanged --------------------------------------------------------
# (kernel, shape, layout variants, exact): `exact` when no variant regroups a sum.
LAYOUT_CASES = [
    ("matmul_naive", {"M": 200, "N": 600, "K": 300},
     [{"TILE_M": 32}, {"TILE_M": 64}, {"TILE_N": 128}, {"TILE_N": 256}], True),
    ("matmul_naive", {"M": 200, "N": 600, "K": 300}, [{"TILE_K": 32}, {"TILE_K": 64}], False),
    ("matmul_hoisted", {"M": 200, "N": 600, "K": 300},
     [{"TILE_M": 64, "TILE_N": 256}, {"TILE_K": 64}], False),
    ("matmul_blocked", {"M": 512, "N": 1024, "K": 128},
     [{"TILES_IN_BLOCK_M": 1}, {"TILES_IN_BLOCK_M": 4}, {"TILES_IN_BLOCK_N": 2}], True),
    ("matmul", {"M": 256, "N": 512, "K": 512},
     [{"TILES_IN_BLOCK_M": 1}, {"TILES_IN_BLOCK_K": 1}, {"TILES_IN_BLOCK_K": 2, "TILE_N": 256}],
     False),
    ("add", {"rows": 200, "cols": 5000}, [{"F_TILE": f} for f in (256, 512, 1024, 4096)], True),
    ("gelu", {"rows": 130, "cols": 4200}, [{"F_TILE": f} for f in (256, 4096)], True),
    ("softmax", {"rows": 200, "cols": 300}, [{"NORMALIZE": "divide"}], False),
    ("layernorm", {"rows": 200, "cols": 700}, [{"APPLY_ENGINE": "scalar"}], False),
    ("layernorm_naive", {"rows": 200, "cols": 700}, [{"APPLY_ENGINE": "scalar"}], False),
    ("rmsnorm", {"rows": 200, "cols": 700}, [{"APPLY_ENGINE": "scalar"}], False),
    ("transpose", {"rows": 600, "cols": 200}, [{"BANDS_PER_STORE": b} for b in (1, 2)], True),
    ("transpose_dma", {"rows": 600, "cols": 200}, [{"TILE_R": t} for t in (128, 256, 1024)],
     True),
    ("conv2d", {"batch": 1, "c_in": 20, "height": 12, "width": 10, "c_out": 24, "kernel_h": 3,
                "kernel_w": 3}, [{"TILE_N": t} for t in (64, 128, 256)], True),
    ("maxpool", {"batch": 1, "channels": 70, "height": 12, "width": 10},
     [{"REDUCE": "separable"}], True),
    ("avgpool", {"batch": 1, "channels": 70, "height": 12, "width": 10},
     [{"REDUCE": "separable"}], False),
    ("attention", {"batch": 1, "heads": 1, "seq": 600, "head_dim": 32},
     [{"KV_TILE": 128}, {"KV_TILE": 256}], False),
    ("mlp", {"tokens": 600, "d_model": 96, "d_ff": 160},
     [{"TOKEN_TILE": 128}, {"TOKEN_TILE": 256}], True),
]


@pytest.mark.parametrize("name, shape, variants, exact", LAYOUT_CASES,
                         ids=[f"{case[0]}-{i}" for i, case in enumerate(LAYOUT_CASES)])
def test_layouts_do_not_change_the_result(name, shape, variants, exact):
    default, _ = run(name, shape)
    for layout in variants:
        result, _ = run(name, shape, layout=layout)
        if exact:
            np.testing.assert_array_equal(result, default, err_msg=f"{name} {layout}")
        else:
            # fp32 sums regrouped: rounding relative to the largest partial sums.
            np.testing.assert_allclose(result, default, rtol=1e-5,
                                       atol=1e-6 * float(np.abs(default).max()),
                                       err_msg=f"{name} {layout}")
