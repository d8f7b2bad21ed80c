"""Properties of traced kernels over generated shapes and instruction sequences: numerics match
numpy for every tile shape (ragged last tiles by explicit slicing), every traced program is
race-free, results do not depend on how streams interleave, and the allocator never overlaps
live tiles."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from emulator.kernel_runner import simulate, trace
from emulator.races import check_races
from emulator.runner import run
from isa import INF2, Space
from kernels.nki import isa as nisa
from kernels.nki import jit
from kernels.nki import language as nl
from kernels.trace import Allocator
from kernels.trace.allocator import ALIGNMENT, AllocationError

ALU_OPS = {"add": np.add, "subtract": np.subtract, "maximum": np.maximum,
           "multiply": np.multiply}


@jit
def ragged_axpy(x, y, alpha, op_name):
    """out = (alpha * x) <op> y over [128, 512] tiles; edge tiles are sliced to fit."""
    R, C = x.shape
    out = nl.ndarray((R, C), dtype=x.dtype, buffer=nl.shared_hbm)
    op = getattr(nl, op_name)
    for r0 in range(0, R, nl.tile_size.pmax):
        p = min(nl.tile_size.pmax, R - r0)
        for c0 in range(0, C, 512):
            f = min(512, C - c0)
            x_t = nl.ndarray((128, 512), dtype=x.dtype, buffer=nl.sbuf)
            y_t = nl.ndarray((128, 512), dtype=y.dtype, buffer=nl.sbuf)
            nisa.dma_copy(dst=x_t[0:p, 0:f], src=x[r0:r0 + p, c0:c0 + f])
            nisa.dma_copy(dst=y_t[0:p, 0:f], src=y[r0:r0 + p, c0:c0 + f])
            z_t = nl.ndarray((128, 512), dtype=x.dtype, buffer=nl.sbuf)
            nisa.tensor_scalar(dst=z_t[0:p, 0:f], data=x_t[0:p, 0:f], op0=nl.multiply,
                               operand0=alpha)
            nisa.tensor_tensor(dst=z_t[0:p, 0:f], data1=z_t[0:p, 0:f], data2=y_t[0:p, 0:f],
                               op=op)
            nisa.dma_copy(dst=out[r0:r0 + p, c0:c0 + f], src=z_t[0:p, 0:f])
    return out


@given(rows=st.integers(1, 300), cols=st.integers(1, 1100),
       op_name=st.sampled_from(sorted(ALU_OPS)), alpha=st.sampled_from([0.5, -2.0, 3.0]),
       seed=st.integers(0, 2**16))
@settings(max_examples=15)
def test_ragged_elementwise_tiles(rows, cols, op_name, alpha, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)).astype(np.float32)
    y = rng.standard_normal((rows, cols)).astype(np.float32)
    out = simulate(ragged_axpy, check_races=True)(x, y, alpha, op_name)
    np.testing.assert_array_equal(out, ALU_OPS[op_name](np.float32(alpha) * x, y))


@jit
def ragged_matmul(lhsT, rhs):
    """result = lhsT.T @ rhs for any shape: full-size tiles, sliced at the edges."""
    K, M = lhsT.shape
    _, N = rhs.shape
    result = nl.ndarray((M, N), dtype=nl.float32, buffer=nl.shared_hbm)
    for m0 in range(0, M, 128):
        m = min(128, M - m0)
        for n0 in range(0, N, 512):
            n = min(512, N - n0)
            acc = nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.psum)
            for k0 in range(0, K, 128):
                k = min(128, K - k0)
                a = nl.ndarray((128, 128), dtype=lhsT.dtype, buffer=nl.sbuf)
                b = nl.ndarray((128, 512), dtype=rhs.dtype, buffer=nl.sbuf)
                nisa.dma_copy(dst=a[0:k, 0:m], src=lhsT[k0:k0 + k, m0:m0 + m])
                nisa.dma_copy(dst=b[0:k, 0:n], src=rhs[k0:k0 + k, n0:n0 + n])
                nisa.nc_matmul(dst=acc[0:m, 0:n], stationary=a[0:k, 0:m], moving=b[0:k, 0:n])
            res = nl.ndarray((128, 512), dtype=nl.float32, buffer=nl.sbuf)
            nisa.tensor_copy(dst=res[0:m, 0:n], src=acc[0:m, 0:n])
            nisa.dma_copy(dst=result[m0:m0 + m, n0:n0 + n], src=res[0:m, 0:n])
    return result


@given(m=st.integers(1, 260), k=st.integers(1, 300), n=st.integers(1, 700),
       seed=st.integers(0, 2**16))
@settings(max_examples=10)
def test_ragged_matmul(m, k, n, seed):
    rng = np.random.default_rng(seed)
    lhsT = rng.standard_normal((k, m)).astype(np.float32)
    rhs = rng.standard_normal((k, n)).astype(np.float32)
    out = simulate(ragged_matmul, check_races=True)(lhsT, rhs)
    golden = lhsT.astype(np.float64).T @ rhs.astype(np.float64)
    np.testing.assert_allclose(out, golden, rtol=1e-4, atol=1e-4 * np.sqrt(k))


# ---- random straight-line kernels: the hazard tracker against a sequential numpy model --------
WIDTH, TILES = 64, 3
ENGINES = ("vector", "gpsimd", "scalar")


@st.composite
def tile_programs(draw):
    """A list of (kind, engine, dst, srcs, dst columns, src columns, constant)."""
    steps = []
    for _ in range(draw(st.integers(1, 14))):
        width = draw(st.integers(1, WIDTH))
        dst_col = draw(st.integers(0, WIDTH - width))
        src_col = draw(st.integers(0, WIDTH - width))
        kind = draw(st.sampled_from(("copy", "add", "scale", "dma")))
        engine = draw(st.sampled_from(ENGINES if kind in ("copy", "scale") else ENGINES[:2]))
        sources = draw(st.lists(st.integers(0, TILES - 1), min_size=2, max_size=2))
        steps.append((kind, engine, draw(st.integers(0, TILES - 1)), sources, dst_col, src_col,
                      width, draw(st.sampled_from((2.0, 0.5, -1.0)))))
    return steps


def build_random_kernel(steps):
    @jit
    def random_kernel(x):
        out = nl.ndarray((TILES, 128, WIDTH), dtype=nl.float32, buffer=nl.shared_hbm)
        tiles = []
        for i in range(TILES):
            t = nl.ndarray((128, WIDTH), dtype=nl.float32, buffer=nl.sbuf)
            nisa.dma_copy(dst=t, src=x[i])
            tiles.append(t)
        for kind, engine, d, (s0, s1), dc, sc, w, k in steps:
            dst, a, b = (tiles[d][:, dc:dc + w], tiles[s0][:, sc:sc + w],
                         tiles[s1][:, dc:dc + w])
            if kind == "copy" and engine == "scalar":
                nisa.activation(dst=dst, op=nl.copy, data=a)
            elif kind == "copy":
                nisa.tensor_copy(dst=dst, src=a, engine=getattr(nisa.engine, engine))
            elif kind == "add":
                nisa.tensor_tensor(dst=dst, data1=a, data2=b, op=nl.add,
                                   engine=getattr(nisa.engine, engine))
            elif kind == "scale":
                nisa.tensor_scalar(dst=dst, data=a, op0=nl.multiply, operand0=k,
                                   engine=getattr(nisa.engine, engine))
            else:
                nisa.dma_copy(dst=dst, src=a)
        for i in range(TILES):
            nisa.dma_copy(dst=out[i], src=tiles[i])
        return out

    return random_kernel


def model(steps, x):
    tiles = [x[i].copy() for i in range(TILES)]
    for kind, _, d, (s0, s1), dc, sc, w, k in steps:
        a, b = tiles[s0][:, sc:sc + w].copy(), tiles[s1][:, dc:dc + w]
        if kind == "add":
            tiles[d][:, dc:dc + w] = a + b
        elif kind == "scale":
            tiles[d][:, dc:dc + w] = a * np.float32(k)
        else:
            tiles[d][:, dc:dc + w] = a
    return np.stack(tiles)


@given(steps=tile_programs(), seed=st.integers(0, 2**16))
@settings(max_examples=25)
def test_random_kernels_are_race_free_and_match_a_sequential_model(steps, seed):
    x = np.random.default_rng(seed).standard_normal((TILES, 128, WIDTH)).astype(np.float32)
    kernel = build_random_kernel(steps)
    program = trace(kernel, x)
    check_races(program)
    expected = model(steps, x)
    for order_seed in (seed, seed + 1):
        result = run(program, {"x": x}, timing=False, rng=np.random.default_rng(order_seed))
        np.testing.assert_array_equal(result.outputs["out"], expected)


# ---- the allocator -----------------------------------------------------------------------------
def fits_somewhere(live, nbytes, allocator) -> bool:
    """Brute force: an aligned offset where `nbytes` fits between live blocks (and in a bank)."""
    size = -(-nbytes // ALIGNMENT) * ALIGNMENT
    for offset in range(0, allocator.capacity - size + 1, ALIGNMENT):
        if offset // allocator.bank != (offset + size - 1) // allocator.bank:
            continue
        if all(offset + size <= b.offset or b.end <= offset for b in live):
            return True
    return False


@given(requests=st.lists(st.tuples(st.integers(1, 128), st.integers(1, 3000),
                                   st.integers(0, 6)), min_size=1, max_size=40),
       space=st.sampled_from((Space.SBUF, Space.PSUM)))
def test_allocator_never_overlaps_live_tiles(requests, space):
    allocator = Allocator(space, INF2)
    live = []
    for partitions, nbytes, free_at in requests:
        if live and free_at < len(live):
            allocator.free(live.pop(free_at))
        try:
            live.append(allocator.allocate(partitions, nbytes, "t"))
        except AllocationError:
            assert not fits_somewhere(live, nbytes, allocator)
            continue
        block = live[-1]
        assert block.end <= allocator.capacity
        if space is Space.PSUM:
            assert block.offset // 2048 == (block.end - 1) // 2048
        for other in live[:-1]:
            assert block.end <= other.offset or other.end <= block.offset
