"""Hand-scheduled programs built directly from instructions, with explicit semaphores.

`tiled_matmul` is the built-in default of `ncemu run`: result[M, N] = lhsT[K, M].T @ rhs[K, N],
the NKI matmul tutorial's layout (the stationary operand arrives transposed, K on partitions).
Every operand tile is loaded into SBUF once, in the order of first use, and the Tensor engine
waits only for the tiles it needs next, so loading overlaps computing; each 128 x 512 output tile
accumulates its K tiles in a PSUM bank, the Vector engine drains the bank to SBUF, and a DMA
queue stores it.  PSUM banks and
output buffers are double-buffered so that the Tensor engine, the Vector engine and the store
queue overlap.
"""

from __future__ import annotations

import numpy as np

from isa.access import AccessPattern, hbm, psum
from isa.dtypes import DType, dtype
from isa.instructions import DmaCopy, MatMul, TensorCopy, Wait
from isa.program import Program, ProgramBuilder
from isa.target import INF2, Space, Target


def tiled_matmul(m: int = 1024, k: int = 512, n: int = 1024, dt: str | DType = "bf16",
                 tile_n: int = 512, buffers: int = 2, target: Target = INF2) -> Program:
    """A double-buffered tiled matmul program; raises if the shape does not tile evenly."""
    dt = dtype(dt)
    tile_m, tile_k = target.matmul_max_m, target.matmul_max_k
    if not 1 <= tile_n <= target.matmul_max_n:
        raise ValueError(f"tile_n={tile_n} must be in 1..{target.matmul_max_n}")
    for name, size, tile in (("M", m, tile_m), ("K", k, tile_k), ("N", n, tile_n)):
        if size < 1 or size % tile:
            raise ValueError(f"{name}={size} must be a positive multiple of its tile size {tile}")
    if not 1 <= buffers <= target.psum_banks:
        raise ValueError(f"buffers={buffers} must be in 1..{target.psum_banks} (PSUM banks)")
    if tile_n * 4 > target.psum_bank_bytes:
        raise ValueError(f"tile_n={tile_n} fp32 does not fit a {target.psum_bank_bytes}-byte bank")
    k_tiles, m_tiles, n_tiles = k // tile_k, m // tile_m, n // tile_n
    size = dt.itemsize
    # SBUF layout per partition: lhsT tiles, then rhs tiles, then the output buffers.
    lhs_base, rhs_base = 0, k_tiles * m * size
    out_base = rhs_base + k_tiles * n * size
    needed = out_base + buffers * tile_n * 4
    if needed > target.sbuf_partition_bytes:
        raise ValueError(f"operands need {needed} bytes per partition; SBUF has "
                         f"{target.sbuf_partition_bytes}")

    b = ProgramBuilder(f"tiled_matmul_{m}x{k}x{n}_{dt}")
    b.tensor("lhsT", (k, m), dt, "input")
    b.tensor("rhs", (k, n), dt, "input")
    b.tensor("result", (m, n), "fp32", "output")

    def on_chip(offset: int, free: int, tdt: DType, space: Space = Space.SBUF) -> AccessPattern:
        return AccessPattern(space, tdt, 0, tile_k, offset, ((1, free),))

    # 1. Loads: one DMA per operand tile, in the order the Tensor engine first needs them,
    # round robin over the queues but the last; each queue counts its loads on a semaphore.
    load_queues = max(1, target.dma_queues - 1)
    queue_sem = [b.semaphore() for _ in range(load_queues)]
    loaded: dict[tuple[str, int, int], tuple[str, int, int]] = {}  # tile -> (stream, sem, count)

    def load(tensor: str, kt: int, col: int, width: int, row_elems: int, base: int) -> None:
        stream = f"dma{len(loaded) % load_queues}"
        src = hbm(tensor, tile_k, row_elems, width, dt,
                  offset=(kt * tile_k * row_elems + col * width) * size)
        dst = on_chip(base + (kt * row_elems + col * width) * size, width, dt)
        b.emit(stream, DmaCopy(dst, src))
        sem = queue_sem[len(loaded) % load_queues]
        loaded[(tensor, kt, col)] = (stream, sem, b.signal(stream, sem))

    awaited: dict[int, int] = {}

    def need(tile: tuple[str, int, int]) -> None:
        _, sem, count = loaded[tile]
        if awaited.get(sem, 0) < count:
            b.emit("tensor", Wait(sem, count))
            awaited[sem] = count

    store = f"dma{target.dma_queues - 1}"
    psum_full, psum_free, out_ready, out_free = (b.semaphore() for _ in range(4))
    groups = [(mt, nt) for mt in range(m_tiles) for nt in range(n_tiles)]
    for mt, nt in groups:
        for kt in range(k_tiles):
            if ("lhsT", kt, mt) not in loaded:
                load("lhsT", kt, mt, tile_m, m, lhs_base)
            if ("rhs", kt, nt) not in loaded:
                load("rhs", kt, nt, tile_n, n, rhs_base)

    for group, (mt, nt) in enumerate(groups):
        slot = group % buffers
        bank = psum(tile_m, tile_n, "fp32", offset=slot * target.psum_bank_bytes)
        out_tile = on_chip(out_base + slot * tile_n * 4, tile_n, dtype("fp32"))
        # 2. Accumulate the K tiles into a PSUM bank once the Vector engine has drained it.
        if group >= buffers:
            b.emit("tensor", Wait(psum_free, group - buffers + 1))
        for kt in range(k_tiles):
            need(("lhsT", kt, mt))
            need(("rhs", kt, nt))
            stationary = on_chip(lhs_base + (kt * m + mt * tile_m) * size, tile_m, dt)
            moving = on_chip(rhs_base + (kt * n + nt * tile_n) * size, tile_n, dt)
            b.emit("tensor", MatMul(bank, stationary, moving, accumulate=kt > 0))
        b.signal("tensor", psum_full)
        # 3. Drain PSUM to an SBUF output buffer once the store queue has emptied it.
        b.emit("vector", Wait(psum_full, group + 1))
        if group >= buffers:
            b.emit("vector", Wait(out_free, group - buffers + 1))
        b.emit("vector", TensorCopy(out_tile, bank))
        b.signal("vector", psum_free)
        b.signal("vector", out_ready)
        # 4. Store the tile to its place in the result.
        b.emit(store, Wait(out_ready, group + 1))
        dst = hbm("result", tile_m, n, tile_n, "fp32", offset=(mt * tile_m * n + nt * tile_n) * 4)
        b.emit(store, DmaCopy(dst, out_tile))
        b.signal(store, out_free)
    return b.build()


def tiled_matmul_inputs(program: Program, seed: int = 0) -> dict[str, np.ndarray]:
    """Random normal operands for a `tiled_matmul` program, in fp32 (cast on load)."""
    rng = np.random.default_rng(seed)
    tensors = program.tensor_map
    return {name: rng.standard_normal(tensors[name].shape).astype(np.float32)
            for name in ("lhsT", "rhs")}


def tiled_matmul_reference(inputs: dict[str, np.ndarray], dt: str | DType) -> np.ndarray:
    """numpy golden: operands rounded to `dt` as the load does, product in float64."""
    dt = dtype(dt)
    lhs = inputs["lhsT"].astype(dt.storage).astype(np.float64)
    rhs = inputs["rhs"].astype(dt.storage).astype(np.float64)
    return lhs.T @ rhs
