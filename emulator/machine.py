"""Machine presets: every number the emulator uses, each with its public source.

Tags in `SOURCES` refer to the legend of reference/hardware.md (e.g. [A2] is the NKI
Trainium/Inferentia2 architecture guide, [ISA25] the nki.isa cost formulas of 2025-09, [PG] the
NKI performance guide, [DMAO] the DMA overview).  Where a number is not public the tag says
"chosen" and the reason; every field can be overridden (`dataclasses.replace`, or a machine file).
Engine code reads these fields; it holds no latencies of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from isa.target import INF2, Engine, Target

_MAY_BE_ZERO = frozenset({"semaphore_ns", "access_overhead", "dependent_overhead",
                          "gpsimd_startup", "dma_fixed_ns"})


@dataclass(frozen=True)
class CoreSpec:
    """One NeuronCore: architecture limits (`target`), clocks, bandwidths and cost parameters."""

    name: str
    target: Target
    # clocks, GHz [A2]
    tensor_ghz: float
    vector_ghz: float
    scalar_ghz: float
    gpsimd_ghz: float
    sync_ghz: float
    # Tensor engine
    pe_rows: int
    pe_cols: int
    mm_init_latency: int  # MM_INIT_LATENCY: minimum matmul issue interval, TensorE cycles
    fp32_matmul_factor: int  # fp32 matmuls run this many times slower
    load_stationary_speedup: int  # fast LoadStationary runs this many times faster than a MM
    # Vector / Scalar / GpSimd
    min_ii: int  # MIN_II: minimum initiation interval of a Vector/Scalar instruction, cycles
    dependent_overhead: int  # static overhead of a back-to-back dependent instruction, cycles
    access_overhead: int  # fixed cycles per SBUF/PSUM tensor access request
    gpsimd_startup: int  # cycles before a GpSimd instruction streams
    gpsimd_lanes: int  # elements per cycle across the 8 GpSimd processors (fp32)
    stride_penalty: int  # bandwidth divisor when the innermost stride exceeds 16 bytes
    reciprocal_factor: int  # Vector reciprocal costs this many cycles per element
    bn_aggr_factor: int  # bn_aggr costs this many cycles per (count, mean, M2) triple
    # DMA
    dma_engines: int
    dma_engine_gbps: float  # bytes per ns sustained by one DMA engine
    dma_fixed_ns: float  # descriptor + semaphore-to-start cost of one transfer
    dma_partitions_per_engine: int  # a 128-partition transfer is split 8 partitions per engine
    semaphore_ns: float  # from a signal to the waiting engine seeing it
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if value < 0 or (value == 0 and f.name not in _MAY_BE_ZERO):
                bound = ">= 0" if f.name in _MAY_BE_ZERO else "> 0"
                raise ValueError(f"machine {self.name}: {f.name}={value} must be {bound}")

    def clock_ghz(self, engine: Engine) -> float:
        """The clock of `engine`; DMA queues are timed in ns directly."""
        return {Engine.TENSOR: self.tensor_ghz, Engine.VECTOR: self.vector_ghz,
                Engine.SCALAR: self.scalar_ghz, Engine.GPSIMD: self.gpsimd_ghz,
                Engine.SYNC: self.sync_ghz, Engine.DMA: self.sync_ghz}[engine]

    @property
    def tensor_peak_flops(self) -> float:
        """bf16 FLOP/s of the PE array: 2 * rows * cols * clock."""
        return 2.0 * self.pe_rows * self.pe_cols * self.tensor_ghz * 1e9


NEURONCORE_V2 = CoreSpec(
    name="neuroncore-v2",
    target=INF2,
    tensor_ghz=2.8, vector_ghz=1.12, scalar_ghz=1.4, gpsimd_ghz=1.4, sync_ghz=1.4,
    pe_rows=128, pe_cols=128,
    mm_init_latency=64, fp32_matmul_factor=4, load_stationary_speedup=4,
    min_ii=64, dependent_overhead=100, access_overhead=60, gpsimd_startup=150, gpsimd_lanes=128,
    stride_penalty=2, reciprocal_factor=8, bn_aggr_factor=13,
    dma_engines=16, dma_engine_gbps=17.0, dma_fixed_ns=1300.0, dma_partitions_per_engine=8,
    semaphore_ns=0.0,
    sources={
        "target": "[A2] 128 partitions x 192 KiB SBUF, PSUM 16 KiB in 8 banks; [PM25] tile sizes",
        "tensor_ghz": "[A2] TensorE 2.8 GHz",
        "vector_ghz": "[A2] VectorE 1.12 GHz",
        "scalar_ghz": "[A2] ScalarE 1.4 GHz",
        "gpsimd_ghz": "[A2] GpSimdE 1.4 GHz",
        "sync_ghz": "chosen: the sync engine's clock is not public; ScalarE's 1.4 GHz assumed",
        "pe_rows": "[A2] 128x128 PE array",
        "pe_cols": "[A2] 128x128 PE array",
        "mm_init_latency": "[A2] MM_INIT_LATENCY = 64 TensorE cycles",
        "fp32_matmul_factor": "[A2][ISA25] fp32 roughly 4x the bf16 cost",
        "load_stationary_speedup": "[PG] fast LoadStationary up to 4x faster than a MM",
        "min_ii": "[ISA25][SHARED] MIN_II ~ 64 cycles",
        "dependent_overhead": "[A2][PG] static overhead ~100 cycles, dependent back-to-back",
        "access_overhead": "[A2] ~60 cycles per SBUF/PSUM tensor access request",
        "gpsimd_startup": "[ISA25] GpSimd startup ~150 cycles, cost 150 + N",
        "gpsimd_lanes": "[A2] 8 processors x 16 fp32 lanes",
        "stride_penalty": "[A2] stride > 16 B halves the interface bandwidth",
        "reciprocal_factor": "[ISA25] vector reciprocal max(MIN_II, 8N)",
        "bn_aggr_factor": "[ISA25] bn_aggr max(MIN_II, 13*(N/3))",
        "dma_engines": "[A2][DMAO] 16 DMA engines per NeuronCore",
        "dma_engine_gbps": "[DMAO][DMABW] 17 B/ns per engine (TRN1 peak table); 27.2 GB/s is "
                           "the raw link rate (see hardware.md 9.2)",
        "dma_fixed_ns": "[DMABW] ~1300 ns descriptor + cross-engine semaphore-to-start",
        "dma_partitions_per_engine": "[A2][DMAO] 8 partitions per engine for P=128",
        "semaphore_ns": "chosen: cross-engine semaphore latency is not public (hardware.md 8); "
                        "0, so that synchronisation costs only where the published formulas put "
                        "it (the DMA fixed cost includes semaphore-to-start)",
    },
)

CORES: dict[str, CoreSpec] = {"inf2": NEURONCORE_V2, "trn1": NEURONCORE_V2}


@dataclass(frozen=True)
class ChipSpec:
    """One device: its cores and the device memory they share."""

    name: str
    core: CoreSpec
    cores: int
    hbm_bytes: int
    hbm_gbps: float  # bytes per ns, shared by every core of the chip
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for name in ("cores", "hbm_bytes", "hbm_gbps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"chip {self.name}: {name}={getattr(self, name)} must be > 0")


INFERENTIA2 = ChipSpec(
    name="inferentia2", core=NEURONCORE_V2, cores=2, hbm_bytes=32 * 2**30, hbm_gbps=820.0,
    sources={"cores": "[INF2] 2 NeuronCore-v2 per chip",
             "hbm_bytes": "[INF2] 32 GiB HBM",
             "hbm_gbps": "[A2] 820 GB/s ([INF2] says GiB/s; hardware.md 9.3)"},
)

CHIPS: dict[str, ChipSpec] = {"inf2": INFERENTIA2, "trn1": INFERENTIA2}


def chip_spec(value: str | ChipSpec) -> ChipSpec:
    """Resolve a chip preset by name or pass a ChipSpec through."""
    if isinstance(value, ChipSpec):
        return value
    if value in CHIPS:
        return CHIPS[value]
    raise ValueError(f"unknown chip {value!r}; known: {', '.join(CHIPS)}")


def core_spec(value: str | CoreSpec) -> CoreSpec:
    """Resolve a core preset by name (`"inf2"`) or pass a CoreSpec through."""
    if isinstance(value, CoreSpec):
        return value
    if value in CORES:
        return CORES[value]
    raise ValueError(f"unknown machine {value!r}; known: {', '.join(CORES)}")
