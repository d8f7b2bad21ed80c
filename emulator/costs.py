"""Per-instruction cost formulas, in cycles of the engine that runs the instruction.

The formulas are the published ones (reference/hardware.md section 5): matmul issue interval
max(N_moving, MM_INIT_LATENCY), 4x for fp32; fast LoadStationary at a quarter of the moving rate;
TensorE transpose max(P, min(64, F)); Vector/Scalar max(MIN_II, N) for one input and 2N for two
(N for bf16), with the reciprocal (8N), bn_aggr (13N/3) and bf16 tensor_reduce (N/2) exceptions;
GpSimd start-up + N; a stride penalty when the innermost stride exceeds 16 bytes; a fixed access
overhead before a result is visible.  Every number comes from the `CoreSpec`.  The opcode table
names each opcode's formula (`OpSpec.cost`); `COST_FORMULAS` maps those names to functions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from emulator.machine import CoreSpec
from emulator.systolic import SystolicArray, isolated_matmul_cycles
from isa.access import AccessPattern
from isa.instructions import Instruction
from isa.target import Engine


@dataclass(frozen=True)
class Cost:
    """Time of one instruction on its engine, in that engine's cycles.

    `busy`: cycles the engine is occupied (its issue interval); the next instruction of the
    stream may start after it.  `latency`: cycles from start until the result is written and
    visible to other engines; it can be shorter than `busy` (a tiny matmul's result leaves a
    small array before MM_INIT_LATENCY has passed).  `load`: TensorE LoadStationary cycles
    needed before the matmul streams, which the scheduler hides behind the previous matmul
    when it can.
    """

    busy: float
    latency: float
    flops: int = 0
    load: float = 0.0

    def __post_init__(self) -> None:
        if self.busy < 0 or self.latency < 0 or self.load < 0:
            raise ValueError(f"inconsistent cost {self}: busy, latency and load must be >= 0")


def _stride_factor(spec: CoreSpec, *operands: AccessPattern | None) -> int:
    """Interfaces run at half bandwidth when an innermost stride exceeds 16 bytes [A2]."""
    limit = spec.target.stride_penalty_bytes
    strided = any(ap is not None and ap.free_size > 1 and ap.innermost_stride_bytes > limit
                  for ap in operands)
    return spec.stride_penalty if strided else 1


def _tiles(instr: Instruction) -> list[AccessPattern]:
    return list(instr.operand_fields().values())


def _streaming(instr: Instruction, engine: Engine, spec: CoreSpec, elements_cycles: float,
               flops_per_element: int) -> Cost:
    """Vector/Scalar/GpSimd: the stream over the free axis, floored at MIN_II, plus overheads."""
    cycles = elements_cycles * _stride_factor(spec, *_tiles(instr))
    if engine is Engine.GPSIMD:
        # 8 processors x 16 fp32 lanes stream 128 elements per cycle after a start-up [ISA25].
        busy = spec.gpsimd_startup + cycles * spec.target.partitions / spec.gpsimd_lanes
    else:
        busy = max(float(spec.min_ii), cycles)
    data = next(iter(instr.reads().values()), None) or next(iter(instr.writes().values()))
    return Cost(busy, busy + spec.access_overhead, flops_per_element * data.elements)


def _free(instr: Instruction, name: str = "src") -> int:
    return getattr(instr, name).free_size


def _two_byte_float(*tiles: AccessPattern) -> bool:
    return all(t.dtype.is_float and t.dtype.itemsize == 2 for t in tiles)


def sync_cost(instr, engine, spec) -> Cost:
    # Semaphores are fields of real instructions; as separate records they take no engine time.
    return Cost(0.0, 0.0)


def dma_cost(instr, engine, spec) -> Cost:
    # DMA time depends on queues, engines and HBM contention: the scheduler computes it.
    return Cost(0.0, 0.0)


def matmul_cost(instr, engine, spec) -> Cost:
    k, m, n = instr.kmn
    fp32 = not (instr.stationary.dtype.itemsize <= 2 and instr.moving.dtype.itemsize <= 2)
    factor = spec.fp32_matmul_factor if fp32 else 1
    issue = max(n, spec.mm_init_latency) * factor
    phases = isolated_matmul_cycles(SystolicArray(spec.pe_rows, spec.pe_cols, "ws"), k, m, n)
    # Result latency: fill + stream + drain of the PE array (fp32 streams `factor` passes).
    latency = phases["fill"] + phases["stream"] * factor + phases["drain"]
    load = math.ceil(m / spec.load_stationary_speedup) * factor
    return Cost(float(issue), float(latency), 2 * k * m * n, float(load))


def transpose_cost(instr, engine, spec) -> Cost:
    p, f = instr.src.partitions, instr.src.free_size
    issue = max(p, min(spec.mm_init_latency, f))  # [ISA25] max(P, min(64, F))
    # As a matmul of src [K=P, M=F] against identity [P, P].
    phases = isolated_matmul_cycles(SystolicArray(spec.pe_rows, spec.pe_cols, "ws"), p, f, p)
    latency = phases["fill"] + phases["stream"] + phases["drain"]
    return Cost(float(issue), float(latency), 0,
                float(math.ceil(f / spec.load_stationary_speedup)))


def activation_cost(instr, engine, spec) -> Cost:
    # Scale, bias and the function cost the same as a bare activation [PG]; the optional
    # reduction readout costs about MIN_II more [A2].
    cost = _streaming(instr, engine, spec, _free(instr), 1)
    if instr.reduce is not None:
        return Cost(cost.busy + spec.min_ii, cost.latency + spec.min_ii, cost.flops)
    return cost


def one_input_cost(instr, engine, spec) -> Cost:
    ops = 2 if getattr(instr, "op1", None) is not None else 1
    name = "src" if hasattr(instr, "src") else "dst"
    return _streaming(instr, engine, spec, _free(instr, name), ops)


def tensor_tensor_cost(instr, engine, spec) -> Cost:
    n = _free(instr, "in0")
    fast = _two_byte_float(instr.in0, instr.in1)  # bf16/fp16 tensor_tensor runs at N [ISA25]
    return _streaming(instr, engine, spec, n if fast else 2 * n, 1)


def two_input_cost(instr, engine, spec) -> Cost:
    return _streaming(instr, engine, spec, 2 * _free(instr, "in0"), 2)


def tensor_reduce_cost(instr, engine, spec) -> Cost:
    n = _free(instr)
    fast = instr.op in ("add", "max") and _two_byte_float(instr.src)  # N/2 for bf16 [ISA25]
    return _streaming(instr, engine, spec, n / 2 if fast else n, 1)


def reciprocal_cost(instr, engine, spec) -> Cost:
    return _streaming(instr, engine, spec, spec.reciprocal_factor * _free(instr), 1)


def bn_aggr_cost(instr, engine, spec) -> Cost:
    return _streaming(instr, engine, spec, spec.bn_aggr_factor * _free(instr) / 3, 1)


def gpsimd_cost(instr, engine, spec) -> Cost:
    return _streaming(instr, engine, spec, _free(instr, "dst"), 1)


COST_FORMULAS: dict[str, Callable[[Instruction, Engine, CoreSpec], Cost]] = {
    "sync": sync_cost,
    "dma": dma_cost,
    "matmul": matmul_cost,
    "transpose": transpose_cost,
    "activation": activation_cost,
    "one_input": one_input_cost,
    "tensor_tensor": tensor_tensor_cost,
    "two_input": two_input_cost,
    "tensor_reduce": tensor_reduce_cost,
    "reciprocal": reciprocal_cost,
    "bn_aggr": bn_aggr_cost,
    "gpsimd": gpsimd_cost,
}


def instruction_cost(instr: Instruction, engine: Engine, spec: CoreSpec) -> Cost:
    """The cost of `instr` on `engine`; an opcode whose formula is unknown raises."""
    name = instr.spec().cost
    if name not in COST_FORMULAS:
        raise KeyError(f"opcode {instr.opcode} names cost formula {name!r}, which does not exist")
    return COST_FORMULAS[name](instr, engine, spec)
