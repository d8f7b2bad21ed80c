"""The legacy, value-returning API on its own terms: index vectors and their affine views,
masks, nl.par_dim multi-buffers, deferred results written straight into their targets, and
`+=` matmul accumulation, each checked against numpy and on the traced program."""

from __future__ import annotations

import numpy as np
import pytest

from emulator.kernel_runner import benchmark, simulate, trace
from isa import Signal, TensorCopy, TensorTensor, Wait
from kernels.nki import (
    NkiValidationError,
    TileIndexError,
    UnsupportedConstructError,
    jit,
)
from kernels.nki import language as nl
from kernels.nki import legacy as nisa

RNG = np.random.default_rng(3)
HERE = r"test_legacy\.py:\d+"


def real(program, stream: str) -> list:
    if stream not in {s.name for s in program.streams}:
        return []
    return [i for i in program.stream(stream).instructions if not isinstance(i, (Wait, Signal))]


def dmas(program) -> int:
    return sum(len(real(program, s.name)) for s in program.streams if s.name.startswith("dma"))


# ---- index vectors ------------------------------------------------------------------------------
def test_index_vectors_broadcast_and_do_affine_arithmetic():
    i_p, i_f = nl.arange(128)[:, None], nl.arange(4, 12)[None, :]
    expr = 2 * i_f - i_p + 3
    assert expr.shape == (128, 8) and expr.terms == ((0, -1), (1, 2)) and expr.const == 11
    assert expr.formula() == "-i0 + 2*i1 + 11"
    grid = nl.mgrid[0:16, 0:32:2]
    rows, cols = grid
    assert grid.p is rows and grid.x is cols and cols.terms == ((1, 2),)


@pytest.mark.parametrize("build, message", [
    (lambda p, f: p * f, r"only multiplication by an int is affine"),
    (lambda p, f: p // 2, r"//: not an affine expression"),
    (lambda p, f: p % 4, r"%: not an affine expression"),
    (lambda p, f: range(p), r"used as a Python int"),
    (lambda p, f: bool(p < 4), r"truth value of the mask predicate i0 - 4 < 0"),
    (lambda p, f: (p < 4) | (f < 2), r"joined with \|"),
])
def test_what_is_not_affine_or_not_a_range_raises(build, message):
    with pytest.raises(UnsupportedConstructError, match=message):
        build(nl.arange(8)[:, None], nl.arange(8)[None, :])


@jit
def shifted_copy(x):
    """out[p, f] = x[p + 1, 2 * f]: affine index vectors on the load side."""
    rows, cols = x.shape
    out = nl.ndarray((rows - 1, cols // 2), dtype=x.dtype, buffer=nl.shared_hbm)
    i_p, i_f = nl.mgrid[0:rows - 1, 0:cols // 2]
    nl.store(out[i_p, i_f], value=nl.load(x[i_p + 1, i_f * 2]))
    return out


def test_affine_index_vectors_address_strided_views():
    x = RNG.standard_normal((65, 40)).astype(np.float32)
    np.testing.assert_array_equal(simulate(shifted_copy)(x), x[1:, ::2])


def test_index_vectors_mixed_with_slices_are_refused():
    @jit
    def mixed(x):
        nl.load(x[nl.arange(8)[:, None], 0:4])

    with pytest.raises(UnsupportedConstructError,
                       match=rf"mixed with index vectors .*{HERE} in mixed"):
        trace(mixed, (8, 8))


# ---- masks --------------------------------------------------------------------------------------
@jit
def masked_tail(x, bias):
    """out = exp(x + bias) on the first `n` rows and last columns from 3, x elsewhere."""
    rows, cols = x.shape
    out = nl.ndarray((rows, cols), dtype=x.dtype, buffer=nl.shared_hbm)
    i_p, i_f = nl.arange(rows)[:, None], nl.arange(cols)[None, :]
    x_tile = nl.load(x)
    bias_col = nl.load(bias)
    enabled = (i_p < 40) & (i_f >= 3)
    x_tile[i_p, i_f] = nl.exp(nl.add(x_tile, bias_col, mask=enabled), mask=enabled)
    nl.store(out, value=x_tile)
    return out


def test_masks_shrink_the_partition_and_free_ranges_and_leave_other_lanes_alone():
    x = RNG.standard_normal((64, 10)).astype(np.float32)
    bias = RNG.standard_normal((64, 1)).astype(np.float32)
    want = x.copy()
    want[:40, 3:] = np.exp(x[:40, 3:] + bias[:40])
    np.testing.assert_allclose(simulate(masked_tail)(x, bias), want, rtol=1e-6)


def test_a_mask_that_enables_no_lane_emits_nothing():
    @jit
    def nothing(x):
        out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
        i_p, i_f = nl.arange(8)[:, None], nl.arange(8)[None, :]
        nl.store(out[i_p, i_f], value=nl.load(x[i_p, i_f]), mask=(i_p + 8 < 8))
        return out

    assert dmas(trace(nothing, (8, 8))) == 1  # the load; the masked store is dropped


@pytest.mark.parametrize("mask, error, message", [
    (lambda p, f: (f != 3), UnsupportedConstructError, r"mask i1 - 3 != 0 enables lanes with "
                                                        r"holes on axis 1"),
    (lambda p, f: p < f, UnsupportedConstructError, r"depends on 2 index axes"),
    (lambda p, f: nl.arange(16)[:, None] < 4, NkiValidationError,
     r"a mask over an index space of shape \[16, 1\] does not fit tensor \w+ of shape "
     r"\[8, 8\]"),
    (lambda p, f: 4, NkiValidationError, r"mask=4; a mask compares index vectors"),
])
def test_unsupported_masks_raise_at_the_kernel_line(mask, error, message):
    @jit
    def masked(x):
        i_p, i_f = nl.arange(8)[:, None], nl.arange(8)[None, :]
        x_tile = nl.load(x)
        nl.store(x[i_p, i_f], value=nl.exp(x_tile, mask=mask(i_p, i_f)))

    with pytest.raises(error, match=rf"{message}.*{HERE} in masked"):
        trace(masked, (8, 8))


# ---- nl.par_dim multi-buffers --------------------------------------------------------------------
@jit
def multi_buffer(x):
    """Four [32, 16] tiles side by side in each partition, filled, loaded, summed."""
    out = nl.ndarray((32, 16), dtype=x.dtype, buffer=nl.shared_hbm)
    tiles = nl.zeros((4, nl.par_dim(32), 16), dtype=nl.float32, buffer=nl.sbuf)
    for i in nl.affine_range(3):  # block 3 stays zero
        tiles[i] = nl.load(x[i * 32:(i + 1) * 32, :])
    total = nl.add(nl.add(tiles[0], tiles[1]), nl.add(tiles[2], tiles[3]))
    nl.store(out, value=total)
    return out


def test_par_dim_blocks_are_tiles_side_by_side():
    x = RNG.standard_normal((96, 16)).astype(np.float32)
    np.testing.assert_allclose(simulate(multi_buffer)(x), x.reshape(3, 32, 16).sum(axis=0),
                               rtol=1e-6)
    program = trace(multi_buffer, x)
    memset = next(i for i in real(program, "vector") if i.opcode == "memset")
    assert memset.dst.partitions == 32 and memset.dst.free_size == 4 * 16


def test_a_multi_buffer_must_be_indexed_before_use():
    @jit
    def unindexed(x):
        tiles = nl.ndarray((2, nl.par_dim(8), 8), dtype=nl.float32, buffer=nl.sbuf)
        nl.store(x, value=nl.exp(tiles))

    with pytest.raises(NkiValidationError,
                       match=rf"tensor tiles: its dimension 1 is the partition dimension "
                             rf"\(nl\.par_dim\); index the block .*{HERE} in unindexed"):
        trace(unindexed, (8, 8))


# ---- deferred results ----------------------------------------------------------------------------
@jit
def load_into(x):
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    tile = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
    tile[...] = nl.load(x)
    tile[...] = nl.exp(tile)
    nl.store(out, value=tile)
    return out


def test_a_result_assigned_in_its_own_statement_is_written_straight_into_the_target():
    program = trace(load_into, (64, 32))
    assert dmas(program) == 2  # load and store: no staging tile
    assert real(program, "vector") == []  # no copies
    assert [i.opcode for i in real(program, "scalar")] == ["activation"]
    x = RNG.standard_normal((64, 32)).astype(np.float32)
    np.testing.assert_allclose(simulate(load_into)(x), np.exp(x), rtol=1e-6)


@jit
def chained(x):
    """`a = t[...] = value`: `a` must still hold the value after t received it."""
    out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
    tile = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
    x_tile = nl.load(x)
    kept = tile[...] = nl.exp(x_tile)
    nl.store(out, value=nl.add(kept, tile))
    return out


def test_a_result_that_is_also_named_is_copied_not_moved():
    x = RNG.standard_normal((16, 8)).astype(np.float32)
    np.testing.assert_allclose(simulate(chained)(x), 2 * np.exp(x), rtol=1e-6)
    assert any(isinstance(i, TensorCopy) for i in real(trace(chained, x), "vector"))


@jit
def deferred_mistake(a, b):
    out = nl.ndarray(a.shape, dtype=a.dtype, buffer=nl.shared_hbm)
    a_tile, b_tile = nl.load(a), nl.load(b)
    wrong = nisa.tensor_tensor(a_tile, b_tile, op=nl.add)
    nl.store(out, value=wrong)
    return out


def test_errors_of_a_deferred_result_name_the_line_that_computed_it():
    line = deferred_mistake.function.__code__.co_firstlineno + 4  # after @jit, def, out, loads
    with pytest.raises(NkiValidationError, match=rf"test_legacy\.py:{line} in "
                                                 rf"deferred_mistake"):
        trace(deferred_mistake, (8, 8), (8, 4))


# ---- matmul accumulation ----------------------------------------------------------------------
@jit
def accumulate_after_eviction(lhsT, rhs):
    """res = p, read, then res += p again: the second sum must still be 2p."""
    K, M = lhsT.shape
    _, N = rhs.shape
    first = nl.ndarray((M, N), dtype=nl.float32, buffer=nl.shared_hbm)
    second = nl.ndarray((M, N), dtype=nl.float32, buffer=nl.shared_hbm)
    l_tile, r_tile = nl.load(lhsT), nl.load(rhs)
    res = nl.zeros((M, N), nl.float32, buffer=nl.psum)
    res += nisa.nc_matmul(l_tile, r_tile)
    nl.store(first, value=nl.copy(res))
    res += nisa.nc_matmul(l_tile, r_tile)
    nl.store(second, value=res)
    return first, second


def test_matmul_accumulation_and_the_add_after_an_eviction():
    lhsT = RNG.standard_normal((64, 32)).astype(np.float32)
    rhs = RNG.standard_normal((64, 48)).astype(np.float32)
    (first, second), report = benchmark(accumulate_after_eviction)(lhsT, rhs)
    product = lhsT.T.astype(np.float64) @ rhs
    np.testing.assert_allclose(first, product, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(second, 2 * product, rtol=1e-4, atol=1e-4)
    program = trace(accumulate_after_eviction, lhsT, rhs)
    matmuls = real(program, "tensor")
    assert [m.accumulate for m in matmuls] == [False, False]  # zeroed; then a temporary
    assert matmuls[0].dst != matmuls[1].dst
    assert sum(isinstance(i, TensorTensor) for i in real(program, "vector")) == 1
    assert report.cores[0].engines["tensor"].instructions == 2


@jit
def accumulate_in_place(lhsT, rhs):
    K, M = lhsT.shape
    _, N = rhs.shape
    out = nl.ndarray((M, N), dtype=nl.float32, buffer=nl.shared_hbm)
    res = nl.ndarray((M, N), dtype=nl.float32, buffer=nl.psum)
    for k in nl.affine_range(K // 32):
        res[...] += nl.matmul(nl.load(lhsT[k * 32:(k + 1) * 32, :]),
                              nl.load(rhs[k * 32:(k + 1) * 32, :]), transpose_x=True)
    nl.store(out, value=res)
    return out


def test_psum_plus_equals_matmul_accumulates_in_one_group():
    lhsT = RNG.standard_normal((96, 16)).astype(np.float32)
    rhs = RNG.standard_normal((96, 24)).astype(np.float32)
    np.testing.assert_allclose(simulate(accumulate_in_place)(lhsT, rhs),
                               lhsT.T.astype(np.float64) @ rhs, rtol=1e-4, atol=1e-4)
    program = trace(accumulate_in_place, lhsT, rhs)
    assert [m.accumulate for m in real(program, "tensor")] == [False, True, True]
    assert not any(isinstance(i, TensorTensor) for i in real(program, "vector"))


# ---- the rest of the legacy surface --------------------------------------------------------------
@jit
def constants_and_broadcasts(x, column):
    """x * column (free-axis broadcast of a [P, 1] tile) + a shared constant."""
    rows, cols = x.shape
    out = nl.ndarray((rows, cols), dtype=x.dtype, buffer=nl.shared_hbm)
    ramp = nl.shared_constant(np.arange(rows * cols, dtype=np.float32).reshape(rows, cols))
    col = nl.load(column).broadcast_to((rows, cols))
    product = nisa.tensor_tensor(nl.load(x), col, op=nl.multiply)
    nl.store(out, value=nl.add(product, nl.load(ramp)))
    return out


def test_shared_constants_and_free_axis_broadcasts():
    x = RNG.standard_normal((32, 6)).astype(np.float32)
    column = RNG.standard_normal((32, 1)).astype(np.float32)
    want = x * column + np.arange(32 * 6).reshape(32, 6)
    np.testing.assert_allclose(simulate(constants_and_broadcasts)(x, column), want, rtol=1e-6)


def test_destination_passing_calls_still_work_through_the_legacy_module():
    @jit
    def copy_dst(x):
        out = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.shared_hbm)
        tile = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
        nisa.dma_copy(x, tile)  # legacy argument order: src, dst
        doubled = nl.ndarray(x.shape, dtype=x.dtype, buffer=nl.sbuf)
        nisa.tensor_scalar(dst=doubled, data=tile, op0=nl.multiply, operand0=2.0)
        nisa.dma_copy(src=doubled, dst=out)
        return out

    x = RNG.standard_normal((8, 8)).astype(np.float32)
    np.testing.assert_array_equal(simulate(copy_dst)(x), 2 * x)


def test_unknown_legacy_isa_names_fail_with_the_construct():
    @jit
    def stt(x):
        nisa.scalar_tensor_tensor(data=nl.load(x), op0=nl.add, operand0=1.0, op1=nl.add,
                                  operand1=nl.load(x))

    with pytest.raises(UnsupportedConstructError,
                       match=rf"nisa\.scalar_tensor_tensor is not supported .*{HERE} in stt"):
        trace(stt, (4, 4))


def test_unknown_keyword_arguments_are_refused():
    @jit
    def tuned(x):
        nl.store(x, value=nl.load(x, lazy=True))

    with pytest.raises(UnsupportedConstructError, match=r"nl\.load: keyword argument\(s\) lazy"):
        trace(tuned, (4, 4))


def test_index_vector_views_are_bounds_checked_when_used():
    @jit
    def overrun(x):
        i_p, i_f = nl.arange(8)[:, None], nl.arange(8)[None, :]
        nl.store(x[i_p, i_f], value=nl.load(x[i_p, i_f + 1]))

    with pytest.raises(TileIndexError, match=rf"tensor x: index vectors reach 1\.\.8 on "
                                             rf"dimension 1 of size 8.*{HERE} in overrun"):
        trace(overrun, (8, 8))
