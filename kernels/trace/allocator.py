"""On-chip memory allocation for traced kernels: first fit over each partition's bytes.

Every tile occupies partitions [0, P) and the same byte range in each of them, the layout NKI
gives `nl.ndarray` (the first axis is the partition axis).  The allocator keeps the live blocks
sorted by byte offset and places a new tile at the lowest offset where it fits without overlapping
a live block on a shared partition; PSUM blocks also stay inside one 2 KiB bank [A2 PSUM], the
unit a matmul accumulates into.  Blocks are freed when the tile's storage is garbage-collected;
re-using freed bytes is safe because the tracer orders accesses by address, not by tile.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from isa.target import Space, Target
from kernels.nki.errors import AllocationError

# Block placement granularity, bytes.  Chosen: the widest element (fp32/int32), so every dtype
# view of any tile is element-aligned; the hardware's own alignment rule is not public.
ALIGNMENT = 4


@dataclass(frozen=True)
class Block:
    """One allocated tile: partitions [partition_start, +partitions), bytes [offset, +nbytes)."""

    space: Space
    partition_start: int
    partitions: int
    offset: int
    nbytes: int
    label: str  # how errors name the tile: `x (128, 512) fp32`

    @property
    def end(self) -> int:
        return self.offset + self.nbytes

    def shares_partitions(self, start: int, count: int) -> bool:
        end = self.partition_start + self.partitions
        return start < end and self.partition_start < start + count


class Allocator:
    """First-fit allocation of one on-chip memory (SBUF or PSUM) of one core."""

    def __init__(self, space: Space, target: Target) -> None:
        if space is Space.HBM:
            raise ValueError("HBM tensors are declared, not allocated on chip")
        self.space = space
        self.partitions = target.partitions
        self.capacity = target.partition_bytes(space)
        # PSUM tiles may not straddle a bank; SBUF has no such unit.
        self.bank = target.psum_bank_bytes if space is Space.PSUM else self.capacity
        self.live: list[Block] = []  # sorted by offset
        self.peak = 0  # highest byte in use per partition so far
        # Blocks whose tiles were collected: a finalizer may run inside the cyclic GC at any
        # point, even while `live` is being scanned, so it only queues the block here.
        self._released: list[Block] = []

    @property
    def in_use(self) -> int:
        """Bytes per partition covered by live blocks (their union on partition 0)."""
        self._drain()
        return sum(b.nbytes for b in self.live)

    def release(self, block: Block) -> None:
        """Queue a block for freeing; safe to call from a weakref finalizer."""
        self._released.append(block)

    def _drain(self) -> None:
        while self._released:
            self.free(self._released.pop())

    def allocate(self, partitions: int, nbytes: int, label: str) -> Block:
        """Place a tile of `nbytes` per partition on partitions [0, partitions)."""
        self._drain()
        size = -(-max(nbytes, 1) // ALIGNMENT) * ALIGNMENT
        if self.space is Space.PSUM and size > self.bank:
            raise AllocationError(
                f"{self.space} tile {label} needs {nbytes} bytes per partition; a PSUM tile must "
                f"fit one {self.bank}-byte bank (nl.tile_size.psum_fmax = {self.bank // 4} fp32)")
        offset = self._first_fit(0, partitions, size)
        if offset is None:
            largest = max(self._gaps(0, partitions), default=0)
            raise AllocationError(
                f"{self.space} allocation of {label} needs {nbytes} bytes per partition; "
                f"{self.space} has {self.capacity} bytes per partition, {self.in_use} in use by "
                f"{len(self.live)} live tiles (largest free gap {largest} bytes)")
        block = Block(self.space, 0, partitions, offset, size, label)
        bisect.insort(self.live, block, key=lambda b: b.offset)
        self.peak = max(self.peak, max(b.end for b in self.live))
        return block

    def free(self, block: Block) -> None:
        """Release a block; freeing one twice is a tracer bug and raises."""
        for index, live in enumerate(self.live):
            if live is block:
                del self.live[index]
                return
        raise ValueError(f"{self.space} block {block.label} at {block.offset} is not allocated")

    def _first_fit(self, start: int, count: int, size: int) -> int | None:
        offset = 0
        for block in self.live:
            if not block.shares_partitions(start, count):
                continue
            offset = self._bank_aligned(offset, size)
            if offset + size <= block.offset:
                return offset
            offset = max(offset, block.end)
        offset = self._bank_aligned(offset, size)
        return offset if offset + size <= self.capacity else None

    def _bank_aligned(self, offset: int, size: int) -> int:
        """Move `offset` to the next bank start when [offset, offset+size) would cross one."""
        if offset // self.bank != (offset + size - 1) // self.bank:
            return -(-offset // self.bank) * self.bank
        return offset

    def _gaps(self, start: int, count: int) -> list[int]:
        gaps, offset = [], 0
        for block in self.live:
            if block.shares_partitions(start, count):
                gaps.append(block.offset - offset)
                offset = max(offset, block.end)
        gaps.append(self.capacity - offset)
        return gaps
