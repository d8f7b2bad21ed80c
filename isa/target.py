"""Engines, memory spaces and the architecture limits a compiler must respect (`Target`).

Limits follow the NeuronCore-v2 architecture guide ([A2] in reference/hardware.md): 128 SBUF
partitions of 192 KiB, PSUM 128 x 16 KiB in 8 banks of 2 KiB, matmul K<=128, M<=128, N<=512,
up to 4 free-dimension access-pattern axes with uint16 sizes and int16 element strides, and the
partition start/size rule for instruction operands.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Engine(str, enum.Enum):
    """An execution unit of one NeuronCore; `dma` stands for the core's DMA queues."""

    TENSOR = "tensor"
    VECTOR = "vector"
    SCALAR = "scalar"
    GPSIMD = "gpsimd"
    SYNC = "sync"
    DMA = "dma"

    def __str__(self) -> str:
        return self.value


class Space(str, enum.Enum):
    """Where a tensor lives: device memory (per chip), or one core's SBUF / PSUM."""

    HBM = "hbm"
    SBUF = "sbuf"
    PSUM = "psum"

    def __str__(self) -> str:
        return self.value


# Which memories each engine's ports reach [A2 2.1]: TensorE reads SBUF and writes PSUM only;
# GpSimd cannot access PSUM; DMA moves between HBM and SBUF (and within each).
ENGINE_READS: dict[Engine, frozenset[Space]] = {
    Engine.TENSOR: frozenset({Space.SBUF}),
    Engine.VECTOR: frozenset({Space.SBUF, Space.PSUM}),
    Engine.SCALAR: frozenset({Space.SBUF, Space.PSUM}),
    Engine.GPSIMD: frozenset({Space.SBUF}),
    Engine.SYNC: frozenset(),
    Engine.DMA: frozenset({Space.SBUF, Space.HBM}),
}
ENGINE_WRITES: dict[Engine, frozenset[Space]] = {
    Engine.TENSOR: frozenset({Space.PSUM}),
    Engine.VECTOR: frozenset({Space.SBUF, Space.PSUM}),
    Engine.SCALAR: frozenset({Space.SBUF, Space.PSUM}),
    Engine.GPSIMD: frozenset({Space.SBUF}),
    Engine.SYNC: frozenset(),
    Engine.DMA: frozenset({Space.SBUF, Space.HBM}),
}


@dataclass(frozen=True)
class Target:
    """The architecture limits of one NeuronCore generation, as the compiler sees them."""

    name: str
    partitions: int
    sbuf_partition_bytes: int
    psum_partition_bytes: int
    psum_banks: int
    matmul_max_k: int  # contraction, on partitions
    matmul_max_m: int  # stationary free size (PE-array columns)
    matmul_max_n: int  # moving free size
    transpose_max: int
    max_free_axes: int
    max_axis_size: int  # uint16 sizes
    max_axis_stride: int  # int16 strides, in elements
    dma_queues: int
    semaphores: int
    engines: tuple[Engine, ...]
    stride_penalty_bytes: int = 16  # free-axis strides above this run at half bandwidth [A2]

    def __post_init__(self) -> None:
        for field in ("partitions", "sbuf_partition_bytes", "psum_partition_bytes", "psum_banks",
                      "matmul_max_k", "matmul_max_m", "matmul_max_n", "transpose_max",
                      "max_free_axes", "max_axis_size", "max_axis_stride", "semaphores"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Target {self.name}: {field}={value!r} must be a positive int")
        if self.psum_partition_bytes % self.psum_banks:
            raise ValueError(
                f"Target {self.name}: psum_partition_bytes={self.psum_partition_bytes} is not "
                f"divisible by psum_banks={self.psum_banks}")
        if self.dma_queues < 0:
            raise ValueError(f"Target {self.name}: dma_queues={self.dma_queues} must be >= 0")
        object.__setattr__(self, "engines", tuple(Engine(e) for e in self.engines))

    @property
    def psum_bank_bytes(self) -> int:
        return self.psum_partition_bytes // self.psum_banks

    def partition_bytes(self, space: Space) -> int:
        if space is Space.SBUF:
            return self.sbuf_partition_bytes
        if space is Space.PSUM:
            return self.psum_partition_bytes
        raise ValueError(f"{space} has no partitions")

    def check_partition_range(self, start: int, count: int) -> None:
        """The operand partition rule [A2 2.1]: no striding in P, quadrant-aligned starts."""
        if not 1 <= count <= self.partitions:
            raise ValueError(
                f"partition count {count} is outside 1..{self.partitions} (partitions)")
        if start < 0 or start + count > self.partitions:
            raise ValueError(
                f"partitions {start}..{start + count - 1} exceed the {self.partitions} partitions")
        half, quarter = self.partitions // 2, self.partitions // 4
        if count > half:
            legal: tuple[int, ...] = (0,)
        elif count > quarter:
            legal = (0, half)
        else:
            legal = tuple(range(0, self.partitions, quarter))
        if start not in legal:
            raise ValueError(
                f"an operand of {count} partitions may start at partition {legal}, not {start}")

    @property
    def stream_names(self) -> tuple[str, ...]:
        """Instruction streams of one core: each compute engine, sync, and every DMA queue."""
        names = [e.value for e in self.engines if e is not Engine.DMA]
        return (*names, *(f"dma{q}" for q in range(self.dma_queues)))


def stream_engine(stream: str) -> Engine:
    """The engine that executes a stream: `dma7` is a DMA queue, `vector` the Vector engine."""
    if stream.startswith("dma") and stream[3:].isdigit():
        return Engine.DMA
    try:
        if stream == Engine.DMA.value:  # DMA work goes to a numbered queue, not to "dma"
            raise ValueError(stream)
        return Engine(stream)
    except ValueError:
        raise ValueError(
            f"unknown stream {stream!r}; streams are engines "
            f"({', '.join(e.value for e in Engine if e is not Engine.DMA)}) or dma<N>") from None


_V2_ENGINES = (Engine.TENSOR, Engine.VECTOR, Engine.SCALAR, Engine.GPSIMD, Engine.SYNC, Engine.DMA)

# NeuronCore-v2 (Inferentia2, Trainium) [A2][PM25]; semaphores: the count is not public, 32 chosen.
INF2 = Target(
    name="inf2", partitions=128, sbuf_partition_bytes=192 * 1024, psum_partition_bytes=16 * 1024,
    psum_banks=8, matmul_max_k=128, matmul_max_m=128, matmul_max_n=512, transpose_max=128,
    max_free_axes=4, max_axis_size=65535, max_axis_stride=32767, dma_queues=16, semaphores=32,
    engines=_V2_ENGINES,
)

# NeuronCore-v1 (Inferentia): Tensor, Vector, Scalar engines, no GpSimd [NC1].  Its SBUF and
# PSUM sizes are not public (hardware.md 7, 8); chosen: 128 partitions of 80 KiB (10 MiB, the
# ~10 MB of weights per core implied by the pipeline tech note's rule of thumb [PIPE]) and a
# PSUM like NeuronCore-v2's.  Matmul limits assumed equal to v2's (a 128x128 array, see
# emulator.machine.NEURONCORE_V1).
INF1 = Target(
    name="inf1", partitions=128, sbuf_partition_bytes=80 * 1024, psum_partition_bytes=16 * 1024,
    psum_banks=8, matmul_max_k=128, matmul_max_m=128, matmul_max_n=512, transpose_max=128,
    max_free_axes=4, max_axis_size=65535, max_axis_stride=32767, dma_queues=16, semaphores=32,
    engines=(Engine.TENSOR, Engine.VECTOR, Engine.SCALAR, Engine.SYNC, Engine.DMA),
)

TARGETS: dict[str, Target] = {"inf2": INF2, "trn1": INF2, "inf1": INF1}


def target(value: str | Target) -> Target:
    """Resolve a target by name (`"inf2"`) or pass a Target through."""
    if isinstance(value, Target):
        return value
    if value in TARGETS:
        return TARGETS[value]
    raise ValueError(f"unknown target {value!r}; known: {', '.join(TARGETS)}")
