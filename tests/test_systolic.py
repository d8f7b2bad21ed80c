"""Tests of the PE-level systolic array (emulator/systolic.py).

Exact cycle counts on tiny arrays with the arithmetic spelled out, property tests of all three
dataflows against numpy and against the slow reference, and checks on the per-cycle frames that
every operand moves one PE per cycle and every MAC happens exactly once.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.systolic import (
    RECORD_LIMIT,
    Frame,
    SystolicArray,
    _check_aligned,
    isolated_matmul_cycles,
    record,
    simulate,
    simulate_reference,
)

DATAFLOW_NAMES = ("ws", "os", "is")
# Which GEMM dims a fold holds along the array's rows and columns (the test's own copy).
FOLDED_DIMS = {"ws": ("k", "m"), "os": ("m", "n"), "is": ("k", "n")}


def operands(seed: int, k: int, m: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    stationary = rng.uniform(-1.0, 1.0, (k, m)).astype(np.float32)
    moving = rng.uniform(-1.0, 1.0, (k, n)).astype(np.float32)
    return stationary, moving


def assert_matches_numpy(out: np.ndarray, stationary: np.ndarray, moving: np.ndarray) -> None:
    # fp32 products summed in fp32 over K terms of magnitude <= 1: rtol 1e-5, atol 1e-5 * K.
    golden = stationary.astype(np.float64).T @ moving.astype(np.float64)
    np.testing.assert_allclose(out, golden, rtol=1e-5, atol=1e-5 * stationary.shape[0])


def expected_fold_shapes(array: SystolicArray, k: int, m: int, n: int) -> list[dict[str, int]]:
    """Fold shapes in execution order (column tiles outer, row tiles inner)."""
    row_dim, col_dim = FOLDED_DIMS[array.dataflow]
    extent = {"k": k, "m": m, "n": n}
    shapes = []
    for col0 in range(0, extent[col_dim], array.cols):
        for row0 in range(0, extent[row_dim], array.rows):
            shape = dict(extent)
            shape[row_dim] = min(array.rows, extent[row_dim] - row0)
            shape[col_dim] = min(array.cols, extent[col_dim] - col0)
            shapes.append(shape)
    return shapes


def bits(values: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(values).view(np.uint32)


# ---- exact cycles on tiny cases ------------------------------------------------------------


def test_ws_4x4_full_tile_exact_cycles():
    array = SystolicArray(4, 4, "ws")
    stationary, moving = operands(1, 4, 4, 5)
    result = simulate(array, stationary, moving)
    # load 4 (one tile row per cycle) + fill 3 (rows-1) + stream 5 (N) + drain 3 (M-1) = 15
    assert isolated_matmul_cycles(array, 4, 4, 5) == {
        "load": 4, "fill": 3, "stream": 5, "drain": 3, "total": 15}
    assert (result.total_cycles, result.load_cycles, result.fold_cycles) == (15, 4, (15,))
    # out[m, n] leaves the bottom of column m at load 4 + n + m + (rows - 1) = 7 + m + n.
    m, n = np.indices((4, 5))
    np.testing.assert_array_equal(result.exit_cycle, 7 + m + n)
    assert result.exit_cycle.max() == result.total_cycles - 1
    assert result.macs == 4 * 4 * 5
    assert_matches_numpy(result.output, stationary, moving)


def test_ws_unused_rows_still_pass_sums_through_every_row():
    array = SystolicArray(4, 4, "ws")
    stationary, moving = operands(2, 2, 3, 5)
    result = simulate(array, stationary, moving)
    # load 2 (K rows only) + fill 3 (all 4 physical rows) + stream 5 + drain 2 (M-1) = 12
    assert result.total_cycles == 12
    assert result.load_cycles == 2
    m, n = np.indices((3, 5))
    np.testing.assert_array_equal(result.exit_cycle, 2 + n + m + 3)
    # Honest count: load rows 0..j in load cycle j (1 + 2) * 3 columns, then all 4 rows of
    # the 3 used columns are busy for exactly N = 5 cycles each.
    assert result.pe_updates == (1 + 2) * 3 + 4 * 3 * 5
    assert_matches_numpy(result.output, stationary, moving)


def test_os_exact_cycles():
    array = SystolicArray(4, 4, "os")
    stationary, moving = operands(3, 3, 2, 4)
    result = simulate(array, stationary, moving)
    # no load + fill 4 (M+N-2) + stream 3 (K) + drain 4 (accumulators cross all 4 rows) = 11
    assert isolated_matmul_cycles(array, 3, 2, 4) == {
        "load": 0, "fill": 4, "stream": 3, "drain": 4, "total": 11}
    assert (result.total_cycles, result.load_cycles) == (11, 0)
    # Last MAC at cycle K+M+N-3 = 6; row i then needs rows-1-i shifts: exit = 7 + 3 - i.
    np.testing.assert_array_equal(result.exit_cycle, [[10] * 4, [9] * 4])
    assert_matches_numpy(result.output, stationary, moving)


def test_is_exact_cycles():
    array = SystolicArray(4, 4, "is")
    stationary, moving = operands(4, 4, 5, 3)
    result = simulate(array, stationary, moving)
    # load 4 (moving tile rows) + fill 3 (rows-1) + stream 5 (M) + drain 2 (N-1) = 14
    assert isolated_matmul_cycles(array, 4, 5, 3)["total"] == 14
    assert (result.total_cycles, result.load_cycles) == (14, 4)
    # out[i, c] leaves the bottom of column c at load 4 + i + c + (rows - 1).
    i, c = np.indices((5, 3))
    np.testing.assert_array_equal(result.exit_cycle, 7 + i + c)
    assert_matches_numpy(result.output, stationary, moving)


def test_ws_folding_exact_cycles():
    array = SystolicArray(2, 2, "ws")
    stationary, moving = operands(5, 3, 3, 2)
    result = simulate(array, stationary, moving)
    # Folds, M tiles outer and K tiles inner, each k + rows + n + m - 2 with rows=2, n=2:
    #   (k=2, m=2): 2+2+2+2-2 = 6    (k=1, m=2): 1+2+2+2-2 = 5
    #   (k=2, m=1): 2+2+2+1-2 = 5    (k=1, m=1): 1+2+2+1-2 = 4     total 20, loads 2+1+2+1 = 6
    assert result.fold_cycles == (6, 5, 5, 4)
    assert (result.total_cycles, result.load_cycles) == (20, 6)
    # out[0, 0] last leaves in fold 1 (starts at 6): 6 + load 1 + (0 + 0 + rows-1) = 8;
    # out[2, 1] in fold 3 (starts at 16): 16 + 1 + (1 + 0 + 1) = 19, the last cycle.
    assert result.exit_cycle[0, 0] == 8
    assert result.exit_cycle[2, 1] == 19
    assert_matches_numpy(result.output, stationary, moving)


def test_one_pe_array():
    array = SystolicArray(1, 1, "ws")
    stationary, moving = operands(6, 1, 1, 1)
    result = simulate(array, stationary, moving)
    # load 1 + fill 0 + stream 1 + drain 0 = 2: the weight in cycle 0, the MAC in cycle 1.
    assert result.total_cycles == 2
    assert result.exit_cycle[0, 0] == 1
    assert result.output[0, 0] == stationary[0, 0] * moving[0, 0]


def test_full_128x128_ws_tile():
    array = SystolicArray()
    stationary, moving = operands(7, 128, 128, 512)
    result = simulate(array, stationary, moving)
    # load 128 + fill 127 + stream 512 + drain 127 = 894
    assert result.total_cycles == isolated_matmul_cycles(array, 128, 128, 512)["total"] == 894
    assert result.load_cycles == 128
    m, n = np.indices((128, 512))
    np.testing.assert_array_equal(result.exit_cycle, 128 + n + m + 127)
    assert result.macs == 128 * 128 * 512
    assert_matches_numpy(result.output, stationary, moving)


def test_ws_accumulates_in_k_order_bitwise():
    array = SystolicArray(8, 8, "ws")
    stationary, moving = operands(8, 8, 6, 7)
    expected = np.zeros((6, 7), np.float32)
    for k in range(8):
        # numpy rounds the fp32 product, then the fp32 sum: no fused multiply-add.
        expected = expected + stationary[k][:, None] * moving[k][None, :]
    np.testing.assert_array_equal(bits(simulate(array, stationary, moving).output), bits(expected))


def test_non_finite_values_pass_through():
    stationary, moving = operands(9, 3, 2, 4)
    stationary[1, 0] = np.inf
    moving[2, 3] = np.nan
    golden = stationary.astype(np.float64).T @ moving.astype(np.float64)
    for name in DATAFLOW_NAMES:
        out = simulate(SystolicArray(2, 2, name), stationary, moving).output
        np.testing.assert_array_equal(np.isnan(out), np.isnan(golden))
        np.testing.assert_array_equal(np.isinf(out), np.isinf(golden))
        finite = np.isfinite(golden)
        np.testing.assert_allclose(out[finite], golden[finite], rtol=1e-5, atol=3e-5)


# ---- properties of every dataflow ----------------------------------------------------------


@st.composite
def gemm_cases(draw):
    """A small array and a GEMM that may need folding along either array dimension."""
    rows, cols = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    k, m, n = draw(st.integers(1, 14)), draw(st.integers(1, 14)), draw(st.integers(1, 14))
    return rows, cols, k, m, n, draw(st.integers(0, 2**32 - 1))


@pytest.mark.parametrize("dataflow", DATAFLOW_NAMES)
@settings(max_examples=60, deadline=None)
@given(case=gemm_cases())
def test_matches_numpy_and_reference(dataflow, case):
    rows, cols, k, m, n, seed = case
    array = SystolicArray(rows, cols, dataflow)
    stationary, moving = operands(seed, k, m, n)
    fast = simulate(array, stationary, moving)
    slow = simulate_reference(array, stationary, moving)

    assert_matches_numpy(fast.output, stationary, moving)
    # Same machine, same order of fp32 operations: identical bits and cycles.
    np.testing.assert_array_equal(bits(fast.output), bits(slow.output))
    np.testing.assert_array_equal(fast.exit_cycle, slow.exit_cycle)
    assert fast.fold_cycles == slow.fold_cycles
    assert (fast.total_cycles, fast.load_cycles) == (slow.total_cycles, slow.load_cycles)
    assert fast.macs == slow.macs == k * m * n

    assert fast.total_cycles == sum(fast.fold_cycles)
    assert fast.exit_cycle.max() == fast.total_cycles - 1
    shapes = expected_fold_shapes(array, k, m, n)
    assert fast.fold_cycles == tuple(
        isolated_matmul_cycles(array, **shape)["total"] for shape in shapes)
    assert fast.load_cycles == sum(
        isolated_matmul_cycles(array, **shape)["load"] for shape in shapes)
    if len(shapes) == 1:
        assert fast.total_cycles == isolated_matmul_cycles(array, k, m, n)["total"]
    # The fast path touches no more PEs than the reference steps.
    assert 0 < fast.pe_updates <= slow.pe_updates == rows * cols * slow.total_cycles


@pytest.mark.parametrize("dataflow", DATAFLOW_NAMES)
def test_one_fold_cycle_formula(dataflow):
    array = SystolicArray(6, 5, dataflow)
    row_dim, col_dim = FOLDED_DIMS[dataflow]
    for k, m, n in [(1, 1, 1), (3, 2, 4), (6, 5, 5), (2, 5, 9)]:
        shape = {"k": k, "m": m, "n": n}
        shape[row_dim] = min(shape[row_dim], array.rows)
        shape[col_dim] = min(shape[col_dim], array.cols)
        phases = isolated_matmul_cycles(array, **shape)
        # All three dataflows cost k + rows + m + n - 2 for one fold, split differently.
        assert phases["total"] == shape["k"] + array.rows + shape["m"] + shape["n"] - 2
        assert phases["total"] == sum(v for name, v in phases.items() if name != "total")
        stationary, moving = operands(k, shape["k"], shape["m"], shape["n"])
        assert simulate(array, stationary, moving).total_cycles == phases["total"]


# ---- frames --------------------------------------------------------------------------------


RECORDED_CASES = [
    ("ws", 3, 4, 5, 6, 4),  # K and M both fold
    ("os", 3, 4, 5, 7, 6),  # M and N both fold
    ("is", 3, 4, 5, 4, 6),  # K and N both fold
    ("ws", 4, 4, 4, 4, 4),
]


@pytest.mark.parametrize("dataflow,rows,cols,k,m,n", RECORDED_CASES)
def test_record_every_mac_once_and_outputs(dataflow, rows, cols, k, m, n):
    array = SystolicArray(rows, cols, dataflow)
    stationary, moving = operands(rows * 100 + k, k, m, n)
    frames = record(array, stationary, moving)
    result = simulate(array, stationary, moving)
    assert [f.cycle for f in frames] == list(range(result.total_cycles))

    macs = [tuple(int(i) for i in frame.mac_index[r, c])
            for frame in frames for r, c in zip(*np.nonzero(frame.mac))]
    assert len(macs) == len(set(macs)) == k * m * n
    assert set(macs) == {(kk, mm, nn) for kk in range(k) for mm in range(m) for nn in range(n)}
    for frame in frames:
        # Index planes agree with the MAC mask, and each MAC's operands are the right ones.
        np.testing.assert_array_equal(frame.mac, frame.mac_index[..., 0] >= 0)
        assert (frame.phase == "compute") or not frame.mac.any()

    # Gather what leaves the bottom edge into PSUM, adding K folds in fp32.
    psum = np.zeros((m, n), np.float32)
    for frame in frames:
        for c in np.flatnonzero(frame.out_index[:, 0] >= 0):
            assert frame.bottom_out_valid[c]
            i, j = frame.out_index[c]
            psum[i, j] = psum[i, j] + frame.bottom_out[c]
    assert_matches_numpy(psum, stationary, moving)
    np.testing.assert_array_equal(bits(psum), bits(result.output))


def consecutive_compute_frames(frames: list[Frame]):
    for before, after in zip(frames, frames[1:]):
        if before.phase == after.phase == "compute" and before.fold == after.fold:
            yield before, after


def test_ws_registers_move_one_pe_per_cycle():
    frames = record(SystolicArray(4, 5, "ws"), *operands(10, 3, 4, 6))
    pairs = list(consecutive_compute_frames(frames))
    assert pairs
    for before, after in pairs:
        # Moving operands shift right; the left column takes the left-edge input.
        np.testing.assert_array_equal(after.moving[:, 1:], before.moving[:, :-1])
        np.testing.assert_array_equal(after.moving[:, 0], after.left_in)
        np.testing.assert_array_equal(after.right_out, after.moving[:, -1])
        # Weights stay put while the moving tensor streams.
        np.testing.assert_array_equal(after.stationary, before.stationary)
        # Partial sums come from the PE above: pass-through or plus one product.
        for r, c in zip(*np.nonzero(after.mac)):
            above = before.psum[r - 1, c] if r else np.float32(0.0)
            assert after.psum[r, c] == above + after.stationary[r, c] * after.moving[r, c]
    loads = [f for f in frames if f.phase == "load" and f.fold == 0]
    assert len(loads) == 3
    for before, after in zip(loads, loads[1:]):
        # The tile shifts down through its 3 rows, a new row entering at the top.
        np.testing.assert_array_equal(after.stationary[1:3], before.stationary[0:2])
        np.testing.assert_array_equal(after.stationary[0], after.top_in)


def test_os_registers_move_one_pe_per_cycle_and_drain_down():
    frames = record(SystolicArray(4, 4, "os"), *operands(11, 5, 3, 4))
    for before, after in consecutive_compute_frames(frames):
        np.testing.assert_array_equal(after.stationary[:, 1:], before.stationary[:, :-1])
        np.testing.assert_array_equal(after.stationary[:, 0], after.left_in)
        np.testing.assert_array_equal(after.moving[1:], before.moving[:-1])
        np.testing.assert_array_equal(after.moving[0], after.top_in)
    drains = [f for f in frames if f.phase == "drain"]
    assert len(drains) == 4
    for before, after in zip(drains, drains[1:]):
        np.testing.assert_array_equal(after.psum[1:], before.psum[:-1])
        np.testing.assert_array_equal(after.bottom_out, before.psum[-1])


def test_is_holds_the_moving_tile_and_streams_the_stationary():
    stationary, moving = operands(12, 3, 5, 2)
    frames = record(SystolicArray(3, 2, "is"), stationary, moving)
    compute = [f for f in frames if f.phase == "compute"]
    for frame in compute:
        np.testing.assert_array_equal(frame.moving, moving)
    for before, after in consecutive_compute_frames(frames):
        np.testing.assert_array_equal(after.stationary[:, 1:], before.stationary[:, :-1])


def test_frame_line_trace():
    frames = record(SystolicArray(2, 2, "ws"), *operands(13, 2, 2, 2))
    lines = [frame.line() for frame in frames]
    assert lines[0].startswith("cycle     0 fold   0 load")
    assert "(0,0)" in " ".join(lines)


# ---- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,error,fragment", [
    ({"rows": 0}, ValueError, "rows 0 must be >= 1"),
    ({"cols": -3}, ValueError, "cols -3 must be >= 1"),
    ({"rows": 2.5}, TypeError, "rows must be an int"),
    ({"cols": True}, TypeError, "cols must be an int"),
    ({"dataflow": "rs"}, ValueError, "unknown dataflow 'rs'"),
])
def test_array_validation(kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        SystolicArray(**kwargs)


def test_operand_validation():
    array = SystolicArray(4, 4)
    good_s, good_m = operands(14, 3, 2, 2)
    cases = [
        (good_s.tolist(), good_m, TypeError, "stationary must be a numpy array"),
        (good_s.astype(np.float64), good_m, TypeError, "must be float32"),
        (good_s, good_m.astype(np.float16), TypeError, "moving must be float32"),
        (good_s[0], good_m, ValueError, r"must be 2-D"),
        (good_s, good_m[None], ValueError, r"moving must be 2-D"),
        (good_s[:, :0], good_m, ValueError, "empty dimension"),
        (good_s, good_m[:, :0], ValueError, "empty dimension"),
        (good_s[:2], good_m, ValueError, "stationary K=2, moving K=3"),
    ]
    for entry in (simulate, simulate_reference, record):
        for stationary, moving, error, fragment in cases:
            with pytest.raises(error, match=fragment):
                entry(array, stationary, moving)
        with pytest.raises(TypeError, match="must be a SystolicArray"):
            entry((4, 4), good_s, good_m)


@pytest.mark.parametrize("dataflow,shape,fragment", [
    ("ws", (5, 4, 1), "k=5 exceeds the array's rows=4"),
    ("ws", (4, 5, 1), "m=5 exceeds the array's cols=4"),
    ("os", (9, 5, 1), "m=5 exceeds the array's rows=4"),
    ("os", (9, 4, 5), "n=5 exceeds the array's cols=4"),
    ("is", (5, 9, 4), "k=5 exceeds the array's rows=4"),
    ("is", (4, 9, 5), "n=5 exceeds the array's cols=4"),
    ("ws", (0, 4, 1), "k=0 must be >= 1"),
    ("os", (1, 1, -2), "n=-2 must be >= 1"),
])
def test_isolated_cycles_validation(dataflow, shape, fragment):
    with pytest.raises(ValueError, match=fragment):
        isolated_matmul_cycles(SystolicArray(4, 4, dataflow), *shape)


def test_isolated_cycles_rejects_non_arrays_and_non_ints():
    with pytest.raises(TypeError, match="must be a SystolicArray"):
        isolated_matmul_cycles("ws", 1, 1, 1)
    with pytest.raises(TypeError, match="k must be an int"):
        isolated_matmul_cycles(SystolicArray(), 1.0, 1, 1)


def test_record_refuses_large_arrays():
    stationary, moving = operands(15, 128, 128, 64)
    # 128 * 128 PEs for 128 + 127 + 64 + 127 = 446 cycles = 7,307,264 PE-cycles.
    with pytest.raises(ValueError, match=f"7307264 PE-cycles, above the limit of {RECORD_LIMIT}"):
        record(SystolicArray(), stationary, moving)


def test_reference_fails_loudly_on_misaligned_operands():
    # The reference's wiring check: operands meeting in a PE must belong to the same MAC.
    _check_aligned(5, 1, 2, 3, 3)
    with pytest.raises(RuntimeError, match=r"cycle 5: PE\(1,2\) got tag 3 from the left and tag "
                       r"-1 from above"):
        _check_aligned(5, 1, 2, 3, -1)


def test_result_and_frame_validate_themselves():
    result = simulate(SystolicArray(2, 2), *operands(16, 2, 2, 2))
    with pytest.raises(ValueError, match="total_cycles 99 != sum of fold_cycles"):
        replace(result, total_cycles=99)
    with pytest.raises(ValueError, match="load_cycles -1 must lie in"):
        replace(result, load_cycles=-1)
    with pytest.raises(ValueError, match="exit_cycle must be int64"):
        replace(result, exit_cycle=result.exit_cycle.astype(np.int32))
    with pytest.raises(ValueError, match="outside"):
        replace(result, exit_cycle=result.exit_cycle + 100)
    with pytest.raises(ValueError, match="output must be a 2-D float32"):
        replace(result, output=result.output.astype(np.float64))
    with pytest.raises(ValueError, match="negative counts"):
        replace(result, macs=-1)
    frame = record(SystolicArray(2, 2), *operands(17, 1, 1, 1))[0]
    with pytest.raises(ValueError, match="unknown phase 'idle'"):
        replace(frame, phase="idle")
    with pytest.raises(ValueError, match="frame field top_in has shape"):
        replace(frame, top_in=np.zeros(3, np.float32))
