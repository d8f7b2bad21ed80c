"""Machine presets: every number the emulator uses, each with its public source.

Tags in `SOURCES` refer to the legend of reference/hardware.md (e.g. [A2] is the NKI
Trainium/Inferentia2 architecture guide, [ISA25] the nki.isa cost formulas of 2025-09, [PG] the
NKI performance guide, [DMAO] the DMA overview).  Where a number is not public the tag says
"chosen" and the reason; every field can be overridden (`dataclasses.replace`, or a machine file).
Engine code reads these fields; it holds no latencies of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

from isa.target import INF1, INF2, Engine, Target

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
    dma_burst_bytes: int  # a DMA engine moves contiguous runs shorter than this at this cost
    semaphore_ns: float  # from a signal to the waiting engine seeing it
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            if value < 0 or (value == 0 and f.name not in _MAY_BE_ZERO):
                bound = ">= 0" if f.name in _MAY_BE_ZERO else "> 0"
                raise ValueError(f"core {self.name}: {f.name}={value} must be {bound}")
        if self.target.matmul_max_k > self.pe_rows or self.target.matmul_max_m > self.pe_cols:
            raise ValueError(
                f"core {self.name}: matmul limits K<={self.target.matmul_max_k}, "
                f"M<={self.target.matmul_max_m} exceed the {self.pe_rows}x{self.pe_cols} PE array "
                f"(pe_rows, pe_cols); lower target.matmul_max_k / matmul_max_m too")

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
    dma_engines=16, dma_engine_gbps=17.0, dma_fixed_ns=1300.0, dma_burst_bytes=64,
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
        "dma_burst_bytes": "chosen: not public; element-strided DMA (e.g. a transpose) has 'much "
                           "lower DMA bandwidth' [PG]: runs under 64 B cost a 64-byte burst",
        "semaphore_ns": "chosen: cross-engine semaphore latency is not public (hardware.md 8); "
                        "0, so that synchronisation costs only where the published formulas put "
                        "it (the DMA fixed cost includes semaphore-to-start)",
    },
)

_V2_COSTS = ("mm_init_latency", "fp32_matmul_factor", "load_stationary_speedup", "min_ii",
             "dependent_overhead", "access_overhead", "stride_penalty", "reciprocal_factor",
             "bn_aggr_factor", "dma_fixed_ns", "dma_burst_bytes", "semaphore_ns")

NEURONCORE_V1 = replace(
    NEURONCORE_V2,
    name="neuroncore-v1",
    target=INF1,
    # 16 FP16/BF16 TFLOPS per core [NC1] = 2 * 128 * 128 * f: a 128x128 array at 0.488 GHz.
    # The array size and clock are not public (hardware.md 7); 128x128 keeps v2's ISA limits.
    tensor_ghz=16e12 / (2 * 128 * 128) / 1e9,
    vector_ghz=0.9, scalar_ghz=1.9,
    gpsimd_ghz=1.4,  # unused: NeuronCore-v1 has no GpSimd engine (INF1 target excludes it)
    dma_engines=16, dma_engine_gbps=17.0,
    sources={
        "target": "chosen: SBUF 128 x 80 KiB (~10 MB per core from the [PIPE] rule of thumb), "
                  "PSUM as v2; Tensor/Vector/Scalar only [NC1]",
        "tensor_ghz": "[NC1] 16 TFLOPS FP16/BF16 per core with an assumed 128x128 array "
                      "(hardware.md 7: 128x128 implies 0.49 GHz, 64x64 1.95 GHz; not public)",
        "pe_rows": "chosen: 128 (array size not public)",
        "pe_cols": "chosen: 128 (array size not public)",
        "vector_ghz": "chosen: ~0.9 GHz inferred from v2's '10x' VectorE claim and 256 FP "
                      "ops/cycle [NC1][NC2] (hardware.md 7)",
        "scalar_ghz": "chosen: ~1.9 GHz inferred from v2's '3x' ScalarE claim and 512 FP "
                      "ops/cycle [NC1][NC2] (hardware.md 7)",
        "gpsimd_ghz": "unused: no GpSimd engine on NeuronCore-v1 [NC1]",
        "sync_ghz": "chosen: not public",
        "dma_engines": "chosen: the chip diagram shows DMA blocks without a count [IMG-inf]; "
                       "v2's 16 per core assumed",
        "dma_engine_gbps": "chosen: v2's 17 B/ns assumed; the chip's 50 GiB/s DRAM binds first",
        **{name: "chosen: not public for v1; NeuronCore-v2's value assumed"
           for name in _V2_COSTS},
    },
)

CORES: dict[str, CoreSpec] = {"inf2": NEURONCORE_V2, "trn1": NEURONCORE_V2, "inf1": NEURONCORE_V1}



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

TRAINIUM = replace(
    INFERENTIA2, name="trainium",
    sources={"cores": "[TRN1] 2 NeuronCore-v2 per chip", "hbm_bytes": "[TRN1] 32 GiB HBM",
             "hbm_gbps": "[TRN1] 820 GiB/s, taken as 820 GB/s as for Inferentia2"})

INFERENTIA = ChipSpec(
    name="inferentia", core=NEURONCORE_V1, cores=4, hbm_bytes=8 * 2**30,
    hbm_gbps=50 * 2**30 / 1e9,
    sources={"cores": "[INF1] 4 NeuronCore-v1 per chip",
             "hbm_bytes": "[INF1] 8 GiB device DRAM (DDR generation not stated)",
             "hbm_gbps": "[INF1] 50 GiB/s device DRAM bandwidth per chip"},
)

CHIPS: dict[str, ChipSpec] = {"inf2": INFERENTIA2, "trn1": TRAINIUM, "inf1": INFERENTIA}


def _preset(value, kind: type, table: dict, what: str):
    """A record passed through, or the preset of that name; an unknown name raises."""
    if isinstance(value, kind):
        return value
    if value in table:
        return table[value]
    raise ValueError(f"unknown {what} {value!r}; known: {', '.join(table)}")


def chip_spec(value: str | ChipSpec) -> ChipSpec:
    """Resolve a chip preset by name or pass a ChipSpec through."""
    return _preset(value, ChipSpec, CHIPS, "chip")


def core_spec(value: str | CoreSpec) -> CoreSpec:
    """Resolve a core preset by name (`"inf2"`) or pass a CoreSpec through."""
    return _preset(value, CoreSpec, CORES, "machine")


TOPOLOGIES = ("single", "ring", "chain", "torus2d")


@dataclass(frozen=True)
class InstanceSpec:
    """An instance size: its chips, how NeuronLink joins them, and what it costs per hour."""

    name: str
    chip: ChipSpec
    chips: int
    vcpus: int
    host_memory_gib: int
    price_per_hour: float  # USD, on-demand
    topology: str  # single | ring | chain | torus2d
    link_gbps: float  # bytes per ns of one NeuronLink, each direction
    link_latency_ns: float  # per hop of a transfer over a link
    torus: tuple[int, ...] = ()  # torus2d only: (rows, cols)
    sources: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "torus", tuple(self.torus))
        for name in ("chips", "vcpus", "host_memory_gib", "link_gbps", "price_per_hour"):
            if getattr(self, name) <= 0:
                raise ValueError(f"instance {self.name}: {name}={getattr(self, name)} must be > 0")
        if self.link_latency_ns < 0:
            raise ValueError(f"instance {self.name}: link_latency_ns={self.link_latency_ns} "
                             f"must be >= 0")
        if self.topology not in TOPOLOGIES:
            raise ValueError(f"instance {self.name}: topology {self.topology!r} must be one of "
                             f"{', '.join(TOPOLOGIES)}")
        if (self.topology == "single") != (self.chips == 1):
            raise ValueError(f"instance {self.name}: topology {self.topology!r} does not fit "
                             f"{self.chips} chip(s) (single is for exactly one chip)")
        if self.topology == "torus2d" and (len(self.torus) != 2 or self.torus[0] * self.torus[1]
                                            != self.chips):
            raise ValueError(f"instance {self.name}: torus {self.torus} must be two sizes whose "
                             f"product is chips={self.chips}")

    @property
    def cores(self) -> int:
        return self.chips * self.chip.cores


_NL1 = 16 * 2**30 / 1e9  # NeuronLink-v1: 16 GiB/s per link [IMG-inf1]
_NL2 = 96 * 2**30 / 1e9  # NeuronLink-v2: 96 GiB/s per link [IMG-inf2]; trn1 384/4 [T1-2024]
_LINK_LATENCY = 1300.0
_LINK_SOURCES = {
    "link_latency_ns": "chosen: not public (hardware.md 8); each hop is a DMA to a peer and "
                       "pays the published ~1300 ns DMA fixed cost [DMABW]",
}
_SEED_PRICE = "on-demand price from the project's seed documents"
_LIST_PRICE = ("assumed: AWS us-east-1 on-demand list price, not from the seed documents; "
               "set price_per_hour in a machine file to change it")


def _instance(name, chip, chips, vcpus, host, price, price_source, topology="single",
              link=_NL2, torus=(), link_source="") -> InstanceSpec:
    sources = {"chips": f"[{'I1' if chip is INFERENTIA else 'I2' if chip is INFERENTIA2 else 'T1'}]"
                        f" {chips} chip(s)", "price_per_hour": price_source, **_LINK_SOURCES}
    if link_source:
        sources["link_gbps"] = link_source
    return InstanceSpec(name, chip, chips, vcpus, host, price, topology, link, _LINK_LATENCY,
                        torus, sources)


INSTANCES: dict[str, InstanceSpec] = {i.name: i for i in (
    _instance("inf1.xlarge", INFERENTIA, 1, 4, 8, 0.23, _SEED_PRICE, link=_NL1),
    _instance("inf1.2xlarge", INFERENTIA, 1, 8, 16, 0.362, _LIST_PRICE, link=_NL1),
    _instance("inf1.6xlarge", INFERENTIA, 4, 24, 48, 1.18, _LIST_PRICE, "chain", _NL1,
              link_source="[IMG-inf1] NeuronLink-v1 16 GiB/s per link; chain [I1]"),
    _instance("inf1.24xlarge", INFERENTIA, 16, 96, 192, 4.72, _SEED_PRICE, "chain", _NL1,
              link_source="[IMG-inf1] NeuronLink-v1 16 GiB/s per link; 16 chips in a chain"),
    _instance("inf2.xlarge", INFERENTIA2, 1, 4, 16, 0.76, _SEED_PRICE),
    _instance("inf2.8xlarge", INFERENTIA2, 1, 32, 128, 1.97, _SEED_PRICE),
    _instance("inf2.24xlarge", INFERENTIA2, 6, 96, 384, 6.49, _SEED_PRICE, "ring",
              link_source="[IMG-inf2] NeuronLink-v2 96 GiB/s per link; ring [I2]"),
    _instance("inf2.48xlarge", INFERENTIA2, 12, 192, 768, 12.98, _SEED_PRICE, "ring",
              link_source="[IMG-inf2] NeuronLink-v2 96 GiB/s per link; 12 chips in a ring"),
    _instance("trn1.2xlarge", TRAINIUM, 1, 8, 32, 1.3438, _LIST_PRICE),
    _instance("trn1.32xlarge", TRAINIUM, 16, 128, 512, 21.50, _LIST_PRICE, "torus2d",
              torus=(4, 4), link_source="[T1-2024] 384 GiB/s per chip over 4 links = 96 GiB/s "
                                        "per link [INFERRED]; 4x4 2D torus [T1]"),
)}

# Short names: a family's smallest instance.
ALIASES = {"inf1": "inf1.xlarge", "inf2": "inf2.xlarge", "trn1": "trn1.2xlarge"}


def instance_spec(value: str | InstanceSpec) -> InstanceSpec:
    """Resolve an instance preset by name (`"inf2.48xlarge"`, or `"inf2"` for its smallest)."""
    if isinstance(value, InstanceSpec):
        return value
    name = ALIASES.get(value, value)
    if name in INSTANCES:
        return INSTANCES[name]
    raise ValueError(f"unknown instance {value!r}; known: {', '.join(INSTANCES)} "
                     f"(or {', '.join(ALIASES)})")
